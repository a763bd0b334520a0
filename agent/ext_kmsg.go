package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/vigil-agent/vigil/agent/telemetry"
	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/collectors/kmsg"
)

func init() {
	registerExtension(&Extension{Name: "kmsg", Setup: setupKmsg})
}

// kernelKills carries the kernel log's OOM kills from the reader's goroutine
// to the snapshots: the kills since the previous snapshot, and the running
// count per cgroup.
type kernelKills struct {
	mu      sync.Mutex
	pending []collectors.KernelOOMKill
	counts  map[string]uint64
}

func (k *kernelKills) add(evs []kmsg.OOMEvent) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, e := range evs {
		kill := kernelKill(e)
		k.pending = append(k.pending, kill)
		k.counts[kill.CgroupPath]++
	}
}

// enrich moves the pending kills into snap and sets every cgroup's count.
// Partial snapshots get the kills too: the executor sees them either way.
func (k *kernelKills) enrich(snap *collectors.Snapshot) {
	k.mu.Lock()
	defer k.mu.Unlock()
	snap.KernelOOMKills = append(snap.KernelOOMKills[:0], k.pending...)
	k.pending = k.pending[:0]
	for i := range snap.Cgroups {
		snap.Cgroups[i].KernelOOMKills = k.counts[snap.Cgroups[i].Path]
	}
}

func kernelKill(e kmsg.OOMEvent) collectors.KernelOOMKill {
	path := e.CgroupPath
	if path == "" {
		path = "/"
	}
	return collectors.KernelOOMKill{Time: e.Time, Seq: e.Seq, CgroupPath: path, OOMMemcg: e.OOMMemcg, Constraint: e.Constraint,
		Global: e.Global, PID: e.PID, Comm: e.Comm, AnonRSSBytes: e.AnonRSSKiB << 10, FileRSSBytes: e.FileRSSKiB << 10,
		ShmemRSSBytes: e.ShmemRSSKiB << 10, TotalVMBytes: e.TotalVMKiB << 10, OOMScoreAdj: e.OOMScoreAdj,
		MemcgUsageBytes: e.MemcgUsageKiB << 10, MemcgLimitBytes: e.MemcgLimitKiB << 10, Report: append([]string(nil), e.Report...)}
}

// setupKmsg follows <host_root>/dev/kmsg: kernel OOM kills become snapshot
// data (KernelOOMKills, the kernel_oom_kills signal), evidence on the
// journal's OOM miss records, and forwarded records. An unreadable kernel
// log leaves vigil running, degraded.
func setupKmsg(a *Agent) error {
	cfg := a.Config()
	if !cfg.Kmsg.Enabled {
		return nil
	}
	path := filepath.Join(cfg.HostRoot, "dev", "kmsg")
	f, err := os.Open(path)
	if err != nil {
		a.log.Warn("kernel log unreadable: kernel OOM reports are not attributed", "path", path, "err", err)
		a.SetDegraded("kmsg", fmt.Sprintf("%s: %v", path, err))
		return nil
	}
	f.Close()
	cursor := cfg.Kmsg.CursorFile
	if cursor == "" {
		cursor = besideJournal(cfg, "kmsg.cursor")
	}
	fwd, err := a.forwarder()
	if err != nil {
		return err
	}
	kk := &kernelKills{counts: map[string]uint64{}}
	log := a.log.With("component", "kmsg")
	r, err := kmsg.NewReader(path, kmsg.Options{Follow: true, CursorFile: cursor, StartAtEnd: true, Logger: log,
		Handler: func(evs []kmsg.OOMEvent) {
			kk.add(evs)
			for _, e := range evs {
				log.Warn("kernel OOM kill", "cgroup", e.CgroupPath, "pid", e.PID, "comm", e.Comm, "constraint", e.Constraint,
					"anon_rss_kib", e.AnonRSSKiB)
				if fwd != nil {
					if m, err := telemetry.Record(e); err == nil {
						fwd.Post(telemetry.KindOOM, e.Time, m)
					}
				}
			}
		}})
	if err != nil {
		a.SetDegraded("kmsg", err.Error())
		return nil
	}
	a.reg.MustRegister(r)
	a.AddEnricher(kk.enrich)
	if x := a.pipeline.executor; x != nil {
		x.SetKernelLog(true)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := r.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("kernel log reader stopped", "err", err)
			a.SetDegraded("kmsg", err.Error())
			if x := a.pipeline.executor; x != nil {
				x.SetKernelLog(false)
			}
		}
	}()
	a.OnStop(func() {
		cancel()
		<-done
	})
	return nil
}

package agent

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/collectors/otlp"
)

// setupOTLP runs the OTLP/HTTP receiver when otlp.enabled and joins each
// service's RED signals to the cgroup it runs in (CgroupSample.Service),
// where rules read them as service.error_ratio and friends.
func setupOTLP(a *Agent) error {
	cfg := a.Config()
	oc := cfg.OTLP
	if !oc.Enabled {
		return nil
	}
	r, err := otlp.NewReceiver(otlp.Options{Listen: oc.Listen, Window: oc.Window, ForwardURL: oc.ForwardURL,
		MaxServices: oc.MaxServices, Logger: a.log})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", oc.Listen)
	if err != nil {
		return fmt.Errorf("otlp: listen %s: %w", oc.Listen, err)
	}
	a.reg.MustRegister(r)
	j := &serviceJoin{red: r.RED, procRoot: filepath.Join(cfg.HostRoot, "proc"), pids: map[int64]pidCgroup{}}
	a.AddEnricher(j.enrich)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := r.Serve(ctx, ln); err != nil {
			a.log.Error("otlp receiver stopped", "listen", oc.Listen, "err", err)
		}
	}()
	a.OnStop(func() { cancel(); <-done })
	a.log.Info("OTLP receiver on", "listen", ln.Addr().String(), "forward", oc.ForwardURL)
	return nil
}

func init() {
	// Named so that it runs after the Kubernetes enricher, whose container
	// names the join uses.
	registerExtension(&Extension{Name: "otlp", Setup: setupOTLP})
}

// serviceJoin matches services to cgroups. It runs on the loop goroutine
// only (enrichers do), so its PID cache needs no lock.
type serviceJoin struct {
	red      func() []otlp.ServiceRED
	procRoot string
	pids     map[int64]pidCgroup
}

type pidCgroup struct {
	path    string // "" when unreadable (the process is gone)
	version int
	checked time.Time
}

// pidCacheTTL bounds how stale a PID's cgroup may be (a process moved
// between cgroups, or a PID reused).
const pidCacheTTL = 10 * time.Second

// enrich clears every cgroup's Service and adds each service's figures to
// the cgroup it runs in, found by container.id, then process.pid, then
// k8s.pod.uid with k8s.container.name, then k8s.pod.uid alone (the pod's
// cgroup).
func (j *serviceJoin) enrich(snap *collectors.Snapshot) {
	for i := range snap.Cgroups {
		snap.Cgroups[i].Service = collectors.ServiceSample{}
	}
	reds := j.red()
	if len(reds) == 0 {
		return
	}
	byPath := make(map[string]int, len(snap.Cgroups))
	for i := range snap.Cgroups {
		byPath[snap.Cgroups[i].Path] = i
	}
	for _, s := range reds {
		i := j.find(snap, byPath, &s)
		if i < 0 {
			continue
		}
		add(&snap.Cgroups[i].Service, &s)
	}
}

// add sums a service into a cgroup's sample.
func add(dst *collectors.ServiceSample, s *otlp.ServiceRED) {
	if !dst.Present || s.Service < dst.Name {
		dst.Name = s.Service
	}
	dst.Present = true
	dst.Requests += s.Requests
	dst.Errors += s.Errors
	dst.RequestsPerSecond += s.RequestsPerSecond
	if dst.Requests > 0 {
		dst.ErrorRatio = float64(dst.Errors) / float64(dst.Requests)
	}
	dst.P99LatencySeconds = max(dst.P99LatencySeconds, s.P99LatencySeconds)
}

func (j *serviceJoin) find(snap *collectors.Snapshot, byPath map[string]int, s *otlp.ServiceRED) int {
	cgs := snap.Cgroups
	if s.ContainerID != "" {
		for i := range cgs {
			if id := cgs[i].Identity.ContainerID; id != "" && (id == s.ContainerID || (len(s.ContainerID) >= 12 && strings.HasPrefix(id, s.ContainerID))) {
				return i
			}
		}
	}
	if s.PID > 0 {
		if p := j.cgroupOf(s.PID, snap.Hierarchy.Version, snap.Time); p != "" {
			if i, ok := byPath[p]; ok {
				return i
			}
		}
	}
	if s.PodUID != "" {
		pod := -1
		for i := range cgs {
			id := &cgs[i].Identity
			if id.PodUID != s.PodUID {
				continue
			}
			if s.Container != "" && id.Container == s.Container && id.ContainerID != "" {
				return i
			}
			if id.Kind == "pod" {
				pod = i
			}
		}
		return pod
	}
	return -1
}

// cgroupOf returns the memory cgroup path of pid (relative to the
// hierarchy root), cached for pidCacheTTL.
func (j *serviceJoin) cgroupOf(pid int64, version int, now time.Time) string {
	if c, ok := j.pids[pid]; ok && c.version == version && now.Sub(c.checked) < pidCacheTTL && !now.Before(c.checked) {
		return c.path
	}
	if len(j.pids) > 4096 {
		clear(j.pids)
	}
	p, _ := memoryCgroupOfFile(filepath.Join(j.procRoot, strconv.FormatInt(pid, 10), "cgroup"), version)
	j.pids[pid] = pidCgroup{path: p, version: version, checked: now}
	return p
}

// memoryCgroupOfFile reads /proc/<pid>/cgroup and returns the memory cgroup path:
// the "memory" controller's line on v1, the "0::" line on v2.
func memoryCgroupOfFile(file string, version int) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", fmt.Errorf("otlp: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		hier, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		ctrls, path, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		if version == 2 {
			if hier == "0" && ctrls == "" {
				return path, nil
			}
			continue
		}
		for _, c := range strings.Split(ctrls, ",") {
			if c == "memory" {
				return path, nil
			}
		}
	}
	return "", fmt.Errorf("otlp: %s: no memory cgroup", file)
}

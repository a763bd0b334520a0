package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
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
	// Per-tick indexes of the snapshot's cgroups, cleared and reused.
	byPath, byContainerID map[string]int
	byPod                 map[string][]int
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
	j.index(snap)
	for _, s := range reds {
		i := j.find(snap, &s)
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

func (j *serviceJoin) index(snap *collectors.Snapshot) {
	if j.byPath == nil {
		j.byPath, j.byContainerID, j.byPod = map[string]int{}, map[string]int{}, map[string][]int{}
	}
	clear(j.byPath)
	clear(j.byContainerID)
	for k, v := range j.byPod {
		j.byPod[k] = v[:0]
	}
	for i := range snap.Cgroups {
		c := &snap.Cgroups[i]
		j.byPath[c.Path] = i
		if c.Identity.ContainerID != "" {
			j.byContainerID[c.Identity.ContainerID] = i
		}
		if c.Identity.PodUID != "" {
			j.byPod[c.Identity.PodUID] = append(j.byPod[c.Identity.PodUID], i)
		}
	}
	if len(j.byPod) > 2*len(snap.Cgroups)+64 {
		clear(j.byPod) // pods come and go: do not grow forever
	}
}

func (j *serviceJoin) find(snap *collectors.Snapshot, s *otlp.ServiceRED) int {
	cgs := snap.Cgroups
	if s.ContainerID != "" {
		if i, ok := j.byContainerID[s.ContainerID]; ok {
			return i
		}
		if len(s.ContainerID) >= 12 { // a short ID
			for i := range cgs {
				if strings.HasPrefix(cgs[i].Identity.ContainerID, s.ContainerID) {
					return i
				}
			}
		}
	}
	if s.PID > 0 {
		if p := j.cgroupOf(s.PID, snap.Hierarchy.Version, snap.Time); p != "" {
			if i, ok := j.byPath[p]; ok {
				return i
			}
		}
	}
	if s.PodUID != "" {
		pod := -1
		for _, i := range j.byPod[s.PodUID] {
			id := &cgs[i].Identity
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

// memoryCgroupOfFile reads /proc/<pid>/cgroup and returns the memory
// cgroup path.
func memoryCgroupOfFile(file string, version int) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", fmt.Errorf("otlp: %w", err)
	}
	defer f.Close()
	p, err := parseMemoryCgroup(f, version)
	if err != nil {
		return "", fmt.Errorf("otlp: %s: %w", file, err)
	}
	return p, nil
}

// parseMemoryCgroup finds the memory cgroup in /proc/<pid>/cgroup content:
// the line of the "memory" controller on v1, the "0::" line on v2.
func parseMemoryCgroup(r io.Reader, version int) (string, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		hier, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		ctrls, path, ok := strings.Cut(rest, ":")
		if !ok || !strings.HasPrefix(path, "/") {
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
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", errNoMemoryCgroup
}

var errNoMemoryCgroup = errors.New("no memory cgroup line")

package agent

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-agent/vigil/agent/config"
	"github.com/vigil-agent/vigil/agent/telemetry"
	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/collectors/podlogs"
)

// setupPodLogs follows the pods' CRI log files when podlogs.enabled and
// joins the per-container pattern counters to the cgroups of every
// snapshot (CgroupSample.LogMatches), where rules read them as
// log_matches("<name>") and log.matches_total.
func setupPodLogs(a *Agent) error {
	cfg := a.Config()
	if !cfg.PodLogs.Enabled {
		return nil
	}
	var fwd logPoster
	if cfg.PodLogs.ForwardMatches {
		f, err := a.forwarder()
		if err != nil {
			return err
		}
		if f == nil {
			a.log.Warn("podlogs.forward_matches is set but forward.address is empty: matched lines are only counted")
		} else {
			fwd = f
		}
	}
	src, err := newPodLogSource(cfg, a.log, fwd)
	if err != nil {
		return err
	}
	a.reg.MustRegister(src)
	a.AddEnricher(src.enrich)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); src.run(ctx) }()
	a.OnStop(func() { cancel(); <-done })
	a.log.Info("following container logs", "root", src.root, "patterns", len(cfg.PodLogs.Patterns))
	return nil
}

func init() {
	// Named so that it runs after the Kubernetes enricher, whose container
	// names the join prefers.
	registerExtension(&Extension{Name: "podlogs", Setup: setupPodLogs})
}

// logPoster is where matched lines are forwarded (the agent's
// telemetry.Forwarder).
type logPoster interface {
	Post(kind telemetry.Kind, t time.Time, record map[string]any) bool
}

// podLogSource runs the tailer and keeps an index of its counters that the
// enricher reads without locks.
type podLogSource struct {
	tailer        *podlogs.Tailer
	root          string
	containersDir string // <host_root>/var/log/containers: container ID -> pod/container
	interval      time.Duration
	maxSeries     int
	log           *slog.Logger
	index         atomic.Pointer[logIndex]
	unforwarded   atomic.Uint64
}

// logIndex is one poll's counters, keyed for the join.
type logIndex struct {
	// byContainer is keyed podUID + "/" + container name.
	byContainer map[string][]collectors.LogMatch
	// byPod sums a pod's containers.
	byPod map[string][]collectors.LogMatch
	// byID maps a container ID to its podUID/container key.
	byID   map[string]string
	counts []podlogs.ContainerCounts
}

// newPodLogSource builds the tailer; fwd, when not nil, receives the
// matched lines (podlogs.forward_matches).
func newPodLogSource(cfg *config.Config, log *slog.Logger, fwd logPoster) (*podLogSource, error) {
	pc := cfg.PodLogs
	root := pc.Root
	if root == "" {
		root = filepath.Join(cfg.HostRoot, "var", "log", "pods")
	}
	state := pc.StateFile
	if state == "" {
		state = filepath.Join(filepath.Dir(cfg.Remediation.Journal.Path), "podlogs.json")
	}
	if err := os.MkdirAll(filepath.Dir(state), 0o750); err != nil {
		log.Warn("podlogs: offsets will not be kept across restarts", "state_file", state, "err", err)
		state = ""
	}
	s := &podLogSource{root: root, containersDir: filepath.Join(filepath.Dir(root), "containers"),
		interval: pc.PollInterval, maxSeries: pc.MaxSeries, log: log}
	patterns := make([]podlogs.Pattern, len(pc.Patterns))
	for i, p := range pc.Patterns {
		patterns[i] = podlogs.Pattern{Name: p.Name, Regexp: p.Regexp}
	}
	opts := podlogs.Options{Root: root, StateFile: state, Patterns: patterns, StartAtEnd: pc.StartAtEnd,
		PollInterval: pc.PollInterval, Logger: log}
	if fwd != nil {
		opts.OnMatch = func(m podlogs.Match) {
			// Post never blocks: a dead pipeline drops and counts.
			rec, err := telemetry.Record(m)
			if err != nil || !fwd.Post(telemetry.KindLog, m.Time, rec) {
				s.unforwarded.Add(1)
			}
		}
	}
	t, err := podlogs.NewTailer(opts)
	if err != nil {
		return nil, err
	}
	s.tailer = t
	s.index.Store(&logIndex{})
	return s, nil
}

// run polls until ctx is done, rebuilding the index after each poll.
func (s *podLogSource) run(ctx context.Context) {
	defer s.tailer.Close()
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		s.poll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *podLogSource) poll(ctx context.Context) {
	if err := s.tailer.Poll(ctx); err != nil {
		s.log.Warn("podlogs: poll", "err", err)
	}
	s.index.Store(buildLogIndex(s.tailer.Counts(), s.containersDir))
}

func buildLogIndex(counts []podlogs.ContainerCounts, containersDir string) *logIndex {
	idx := &logIndex{byContainer: map[string][]collectors.LogMatch{}, byPod: map[string][]collectors.LogMatch{},
		byID: map[string]string{}, counts: counts}
	for _, c := range counts {
		ms := make([]collectors.LogMatch, 0, len(c.Matches))
		for p, n := range c.Matches {
			ms = append(ms, collectors.LogMatch{Pattern: p, Count: n})
		}
		sort.Slice(ms, func(i, j int) bool { return ms[i].Pattern < ms[j].Pattern })
		idx.byContainer[c.PodUID+"/"+c.Name] = ms
		pod := idx.byPod[c.PodUID]
		if pod == nil {
			pod = append([]collectors.LogMatch(nil), ms...)
		} else {
			for i := range pod {
				pod[i].Count += c.Matches[pod[i].Pattern]
			}
		}
		idx.byPod[c.PodUID] = pod
	}
	// /var/log/containers/<pod>_<ns>_<container>-<id>.log links to the
	// pod log file: it maps container IDs (what cgroup paths carry) to
	// pod UID and container name when the Kubernetes API is not used.
	ents, _ := os.ReadDir(containersDir)
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".log")
		dash := strings.LastIndexByte(name, '-')
		if !ok || dash < 0 {
			continue
		}
		id := name[dash+1:]
		target, err := os.Readlink(filepath.Join(containersDir, e.Name()))
		if err != nil {
			continue
		}
		cdir := filepath.Dir(target)
		parts := strings.Split(filepath.Base(filepath.Dir(cdir)), "_")
		if len(parts) != 3 || id == "" {
			continue
		}
		idx.byID[id] = parts[2] + "/" + filepath.Base(cdir)
	}
	return idx
}

// enrich sets LogMatches on the cgroups of pods whose logs are followed:
// a container's own counters (by pod UID and container name, the name from
// the Kubernetes enricher or from the container ID's log link), a pod's
// the sum of its containers'. It reuses the samples' slices.
func (s *podLogSource) enrich(snap *collectors.Snapshot) {
	idx := s.index.Load()
	for i := range snap.Cgroups {
		c := &snap.Cgroups[i]
		ms := idx.lookup(&c.Identity)
		if ms == nil {
			c.LogMatches = nil
			continue
		}
		c.LogMatches = append(c.LogMatches[:0], ms...)
	}
}

func (idx *logIndex) lookup(id *collectors.Identity) []collectors.LogMatch {
	if id.PodUID == "" || idx.byContainer == nil {
		return nil
	}
	if id.ContainerID == "" {
		if id.Kind == "pod" {
			return idx.byPod[id.PodUID]
		}
		return nil
	}
	if id.Container != "" {
		if ms, ok := idx.byContainer[id.PodUID+"/"+id.Container]; ok {
			return ms
		}
	}
	if key, ok := idx.byID[id.ContainerID]; ok {
		return idx.byContainer[key]
	}
	return nil
}

var (
	descPodLogMatches = prometheus.NewDesc("vigil_podlog_matches_total",
		"Container log messages that matched the pattern (podlogs.patterns), per container; past podlogs.max_series the rest are summed under container=\"_other\".",
		[]string{"pattern", "namespace", "pod", "container"}, nil)
	descPodLogFiles = prometheus.NewDesc("vigil_podlog_files",
		"Container log files followed.", nil, nil)
	descPodLogUnforwarded = prometheus.NewDesc("vigil_podlog_unforwarded_total",
		"Matched log messages podlogs.forward_matches could not hand to the forwarder (its buffer full or closed).", nil, nil)
)

// Describe implements prometheus.Collector.
func (s *podLogSource) Describe(ch chan<- *prometheus.Desc) {
	ch <- descPodLogMatches
	ch <- descPodLogFiles
	ch <- descPodLogUnforwarded
}

// Collect implements prometheus.Collector: the counters of the last poll,
// at most maxSeries series plus the overflow ones.
func (s *podLogSource) Collect(ch chan<- prometheus.Metric) {
	idx := s.index.Load()
	n := 0
	other := map[string]uint64{}
	for _, c := range idx.counts {
		for p, v := range c.Matches {
			if n >= s.maxSeries {
				other[p] += v
				continue
			}
			n++
			ch <- prometheus.MustNewConstMetric(descPodLogMatches, prometheus.CounterValue, float64(v), p, c.Namespace, c.Pod, c.Name)
		}
	}
	for p, v := range other {
		ch <- prometheus.MustNewConstMetric(descPodLogMatches, prometheus.CounterValue, float64(v), p, "_other", "_other", "_other")
	}
	ch <- prometheus.MustNewConstMetric(descPodLogFiles, prometheus.GaugeValue, float64(s.tailer.Stats().Files))
	ch <- prometheus.MustNewConstMetric(descPodLogUnforwarded, prometheus.CounterValue, float64(s.unforwarded.Load()))
}

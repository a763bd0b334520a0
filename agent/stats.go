package agent

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-agent/vigil/collectors/cgroupfs"
	"github.com/vigil-agent/vigil/collectors/events"
)

// collectorStats exports the cgroup collector's and the event watcher's
// own counters at scrape time. Both are set once they exist.
type collectorStats struct {
	cgroups atomic.Pointer[cgroupfs.Collector]
	watcher atomic.Pointer[events.Watcher]

	errors     *prometheus.Desc
	vanished   *prometheus.Desc
	discovered *prometheus.Desc
	statReads  *prometheus.Desc
	heldFiles  *prometheus.Desc
	onDemand   *prometheus.Desc
	evCoalesce *prometheus.Desc
	evDropped  *prometheus.Desc
	evErrors   *prometheus.Desc
	evRemoved  *prometheus.Desc
}

// statDef describes one metric of collectorStats (also used to generate
// the README's metric table).
type statDef struct {
	Name, Help string
	Labels     []string
	Gauge      bool // else a counter
}

var (
	statErrors     = statDef{Name: "vigil_cgroup_collector_errors_total", Help: "Cgroup collection problems by reason (open, read, parse, walk, max_cgroups, fd_limit).", Labels: []string{"reason"}}
	statVanished   = statDef{Name: "vigil_cgroup_collector_vanished_total", Help: "Cgroups that disappeared while being read (normal churn, not errors).", Labels: nil}
	statDiscovered = statDef{Name: "vigil_cgroup_collector_discovered_total", Help: "Cgroups picked up (change=added) and let go (change=removed) by discovery.", Labels: []string{"change"}}
	statStatReads  = statDef{Name: "vigil_cgroup_collector_stat_reads_total", Help: "Per cgroup read, whether memory.stat was read (result=read) or its last values reused (result=reused, see stat_max_age).", Labels: []string{"result"}}
	statHeldFiles  = statDef{Name: "vigil_cgroup_collector_held_files", Help: "Cgroup files held open (every cgroup's hot files, and memory.stat and the other gated files of as many as RLIMIT_NOFILE allows).", Gauge: true}
	statOnDemand   = statDef{Name: "vigil_cgroup_collector_on_demand_cgroups", Help: "Tracked cgroups that open memory.stat and the other gated files when they are due instead of holding them (the file descriptor budget is spent).", Gauge: true}
	statCoalesced  = statDef{Name: "vigil_events_coalesced_total", Help: "Kernel notifications merged into one already queued for the same cgroup and kind.", Labels: nil}
	statDropped    = statDef{Name: "vigil_events_dropped_total", Help: "Kernel notifications lost because the queue was full.", Labels: nil}
	statEvErrors   = statDef{Name: "vigil_event_watch_errors_total", Help: "Failed reads and kernel error conditions on notification watches.", Labels: nil}
	statEvRemoved  = statDef{Name: "vigil_event_watches_removed_total", Help: "Notification watches dropped because their cgroup disappeared.", Labels: nil}

	collectorStatDefs = []statDef{statErrors, statVanished, statDiscovered, statStatReads, statHeldFiles, statOnDemand, statCoalesced, statDropped, statEvErrors, statEvRemoved}
)

func (d statDef) desc() *prometheus.Desc { return prometheus.NewDesc(d.Name, d.Help, d.Labels, nil) }

func newCollectorStats() *collectorStats {
	return &collectorStats{
		errors:     statErrors.desc(),
		vanished:   statVanished.desc(),
		discovered: statDiscovered.desc(),
		statReads:  statStatReads.desc(),
		heldFiles:  statHeldFiles.desc(),
		onDemand:   statOnDemand.desc(),
		evCoalesce: statCoalesced.desc(),
		evDropped:  statDropped.desc(),
		evErrors:   statEvErrors.desc(),
		evRemoved:  statEvRemoved.desc(),
	}
}

// Describe implements prometheus.Collector.
func (s *collectorStats) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{s.errors, s.vanished, s.discovered, s.statReads, s.heldFiles, s.onDemand, s.evCoalesce, s.evDropped, s.evErrors, s.evRemoved} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (s *collectorStats) Collect(ch chan<- prometheus.Metric) {
	if c := s.cgroups.Load(); c != nil {
		st := c.Stats()
		for reason, n := range st.Errors {
			ch <- prometheus.MustNewConstMetric(s.errors, prometheus.CounterValue, float64(n), reason)
		}
		ch <- prometheus.MustNewConstMetric(s.vanished, prometheus.CounterValue, float64(st.Vanished))
		ch <- prometheus.MustNewConstMetric(s.discovered, prometheus.CounterValue, float64(st.Added), "added")
		ch <- prometheus.MustNewConstMetric(s.discovered, prometheus.CounterValue, float64(st.Removed), "removed")
		ch <- prometheus.MustNewConstMetric(s.statReads, prometheus.CounterValue, float64(st.StatReads), "read")
		ch <- prometheus.MustNewConstMetric(s.statReads, prometheus.CounterValue, float64(st.StatSkips), "reused")
		ch <- prometheus.MustNewConstMetric(s.heldFiles, prometheus.GaugeValue, float64(st.HeldFiles))
		ch <- prometheus.MustNewConstMetric(s.onDemand, prometheus.GaugeValue, float64(st.OnDemand))
	}
	if w := s.watcher.Load(); w != nil {
		st := w.Stats()
		ch <- prometheus.MustNewConstMetric(s.evCoalesce, prometheus.CounterValue, float64(st.Coalesced))
		ch <- prometheus.MustNewConstMetric(s.evDropped, prometheus.CounterValue, float64(st.Dropped))
		ch <- prometheus.MustNewConstMetric(s.evErrors, prometheus.CounterValue, float64(st.Errors))
		ch <- prometheus.MustNewConstMetric(s.evRemoved, prometheus.CounterValue, float64(st.Removed))
	}
}

// trackLimits reports the agent degraded while discovery leaves cgroups
// untracked (max_cgroups or the file descriptor limit reached).
func (a *Agent) trackLimits() {
	c := a.stats.cgroups.Load()
	if c == nil {
		return
	}
	st := c.Stats()
	for _, reason := range []string{cgroupfs.ReasonMaxCgroups, cgroupfs.ReasonFDLimit} {
		n := st.Errors[reason]
		if n > a.untracked[reason] {
			a.SetDegraded(reason, "cgroups left untracked at the last discovery")
		} else {
			a.SetDegraded(reason, "")
		}
		a.untracked[reason] = n
	}
}

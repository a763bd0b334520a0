package agent

import (
	"io"
	"math"
	"runtime"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	vc "github.com/vigil-agent/vigil/collectors"
)

// cgroupLabel is one label of every cgroup series. namespace, pod and
// container come from the Kubernetes API (collectors/k8s) and are empty when
// it is off or does not know the cgroup: they add no series beyond one per
// cgroup, so cardinality stays bounded by max_cgroups.
type cgroupLabel struct {
	Name  string
	Value func(*vc.CgroupSample) string
}

var cgroupLabels = []cgroupLabel{
	{"cgroup", func(c *vc.CgroupSample) string { return c.Path }},
	{"pod_uid", func(c *vc.CgroupSample) string { return c.Identity.PodUID }},
	{"container_id", func(c *vc.CgroupSample) string { return c.Identity.ContainerID }},
	{"unit", func(c *vc.CgroupSample) string { return c.Identity.Unit }},
	{"namespace", func(c *vc.CgroupSample) string { return c.Identity.Namespace }},
	{"pod", func(c *vc.CgroupSample) string { return c.Identity.Pod }},
	{"container", func(c *vc.CgroupSample) string { return c.Identity.Container }},
}

func cgroupLabelNames() []string {
	names := make([]string, len(cgroupLabels))
	for i, l := range cgroupLabels {
		names[i] = l.Name
	}
	return names
}

// snapshotSource gives read access to the latest published snapshot; the
// snapshot stays intact until release is called.
type snapshotSource interface {
	Acquire() (snap *vc.Snapshot, release func())
}

// snapshotCollector exports the latest snapshot straight from
// collectors.CgroupSignals and collectors.NodeSignals: one family per
// signal with a Metric name, counters as counters.
//
// With cgroups false it exports only the node families: the /metrics
// handler then writes the cgroup families itself (writeCgroupFamilies),
// which is an order of magnitude cheaper at 1000 cgroups than building a
// const metric per series (see BenchmarkScrape).
type snapshotCollector struct {
	src        snapshotSource
	cgroups    bool
	nodeDescs  []*prometheus.Desc
	nodeIdx    []int
	groupDescs []*prometheus.Desc
	groupIdx   []int
	// invalid counts series dropped because a label was not valid UTF-8.
	invalid prometheus.Counter
}

func newSnapshotCollector(src snapshotSource, cgroups bool) *snapshotCollector {
	c := &snapshotCollector{src: src, cgroups: cgroups}
	for i, s := range vc.NodeSignals {
		if s.Metric == "" {
			continue
		}
		c.nodeDescs = append(c.nodeDescs, prometheus.NewDesc(s.Metric, s.Help, nil, nil))
		c.nodeIdx = append(c.nodeIdx, i)
	}
	labels := cgroupLabelNames()
	for i, s := range vc.CgroupSignals {
		if s.Metric == "" {
			continue
		}
		c.groupDescs = append(c.groupDescs, prometheus.NewDesc(s.Metric, s.Help, labels, nil))
		c.groupIdx = append(c.groupIdx, i)
	}
	return c
}

// exportedOn tells whether the family of s is exported for a snapshot of a
// host whose memory controller is on cgroup version (0: unknown, export all):
// a signal the kernel provides only on the other version is a constant there.
func exportedOn(s *vc.CgroupSignal, version int) bool {
	return s.Version == 0 || version == 0 || s.Version == version
}

func valueType(counter bool) prometheus.ValueType {
	if counter {
		return prometheus.CounterValue
	}
	return prometheus.GaugeValue
}

// Describe implements prometheus.Collector.
func (c *snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.nodeDescs {
		ch <- d
	}
	if c.cgroups {
		for _, d := range c.groupDescs {
			ch <- d
		}
	}
}

// Collect implements prometheus.Collector. Before the first snapshot it
// exports nothing.
func (c *snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	snap, release := c.src.Acquire()
	if snap == nil {
		return
	}
	defer release()
	for k, d := range c.nodeDescs {
		s := &vc.NodeSignals[c.nodeIdx[k]]
		ch <- prometheus.MustNewConstMetric(d, valueType(s.Counter), s.Value(&snap.Node))
	}
	if !c.cgroups {
		return
	}
	values := make([]string, len(cgroupLabels))
	for i := range snap.Cgroups {
		cg := &snap.Cgroups[i]
		for j, l := range cgroupLabels {
			values[j] = l.Value(cg)
		}
		for k, d := range c.groupDescs {
			s := &vc.CgroupSignals[c.groupIdx[k]]
			if !exportedOn(s, snap.Hierarchy.Version) {
				continue
			}
			m, err := prometheus.NewConstMetric(d, valueType(s.Counter), s.Value(cg), values...)
			if err != nil {
				// Only a label that is not UTF-8 gets here; the fast path
				// repairs it instead.
				continue
			}
			ch <- m
		}
	}
}

// textChunk is how much text writeCgroupFamilies holds before handing it on.
const textChunk = 64 << 10

// cgroupTextWriter writes the cgroup families in the Prometheus text format
// (0.0.4) directly from a snapshot. It reuses its buffers between scrapes;
// one scrape at a time uses it (the handler holds a mutex).
type cgroupTextWriter struct {
	buf    []byte
	labels []byte // the label set of every cgroup, back to back
	ends   []int  // ends[i] is the end of cgroup i's label set in labels
}

// appendCgroupFamilies appends every cgroup family of snap to w.buf.
func (w *cgroupTextWriter) appendCgroupFamilies(snap *vc.Snapshot) {
	_ = w.writeCgroupFamilies(snap, nil)
}

// writeCgroupFamilies appends every cgroup family of snap to w.buf and, when
// out is not nil, hands w.buf to out (and empties it) whenever it holds
// textChunk bytes, and at the end: the whole body (13 MB of text at 1000
// cgroups) is never held at once.
func (w *cgroupTextWriter) writeCgroupFamilies(snap *vc.Snapshot, out io.Writer) error {
	w.labels, w.ends = w.labels[:0], w.ends[:0]
	for i := range snap.Cgroups {
		cg := &snap.Cgroups[i]
		w.labels = append(w.labels, '{')
		first := true
		for _, l := range cgroupLabels {
			// An empty label is no label to Prometheus: leaving it out
			// changes no series and saves a third of the body.
			v := l.Value(cg)
			if v == "" {
				continue
			}
			if !first {
				w.labels = append(w.labels, ',')
			}
			first = false
			w.labels = append(w.labels, l.Name...)
			w.labels = append(w.labels, '=', '"')
			w.labels = appendLabelValue(w.labels, v)
			w.labels = append(w.labels, '"')
		}
		w.labels = append(w.labels, '}', ' ')
		w.ends = append(w.ends, len(w.labels))
	}
	for k := range vc.CgroupSignals {
		s := &vc.CgroupSignals[k]
		if s.Metric == "" || !exportedOn(s, snap.Hierarchy.Version) {
			continue
		}
		w.buf = appendFamilyHeader(w.buf, s.Metric, s.Help, s.Counter)
		start := 0
		for i := range snap.Cgroups {
			w.buf = append(w.buf, s.Metric...)
			w.buf = append(w.buf, w.labels[start:w.ends[i]]...)
			w.buf = appendFloat(w.buf, s.Value(&snap.Cgroups[i]))
			w.buf = append(w.buf, '\n')
			start = w.ends[i]
			if out != nil && len(w.buf) >= textChunk {
				if _, err := out.Write(w.buf); err != nil {
					return err
				}
				w.buf = w.buf[:0]
			}
		}
	}
	if out != nil && len(w.buf) > 0 {
		if _, err := out.Write(w.buf); err != nil {
			return err
		}
		w.buf = w.buf[:0]
	}
	return nil
}

func appendFamilyHeader(b []byte, name, help string, counter bool) []byte {
	b = append(b, "# HELP "...)
	b = append(b, name...)
	b = append(b, ' ')
	for i := 0; i < len(help); i++ {
		switch c := help[i]; c {
		case '\\':
			b = append(b, `\\`...)
		case '\n':
			b = append(b, `\n`...)
		default:
			b = append(b, c)
		}
	}
	b = append(b, "\n# TYPE "...)
	b = append(b, name...)
	if counter {
		b = append(b, " counter\n"...)
	} else {
		b = append(b, " gauge\n"...)
	}
	return b
}

// appendLabelValue escapes a label value as the text format requires and
// replaces bytes that are not UTF-8 (a cgroup name can hold any byte).
func appendLabelValue(b []byte, v string) []byte {
	if !utf8.ValidString(v) {
		v = strings.ToValidUTF8(v, "\uFFFD")
	}
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '\\':
			b = append(b, `\\`...)
		case '"':
			b = append(b, `\"`...)
		case '\n':
			b = append(b, `\n`...)
		default:
			b = append(b, c)
		}
	}
	return b
}

// appendFloat formats v as client_golang's text encoder does.
func appendFloat(b []byte, v float64) []byte {
	switch {
	case v == 0:
		return append(b, '0')
	case v == 1:
		return append(b, '1')
	case math.IsNaN(v):
		return append(b, "NaN"...)
	case math.IsInf(v, 1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	}
	// Integral values below 2^53 print exactly and faster as integers.
	if v > 0 && v < 1<<53 && v == math.Trunc(v) {
		return strconv.AppendUint(b, uint64(v), 10)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// selfMetrics are vigil's metrics about itself.
type selfMetrics struct {
	tickDuration     prometheus.Histogram
	collectionErrors *prometheus.CounterVec
	cgroupsTracked   prometheus.Gauge
	eventsReceived   *prometheus.CounterVec
	offCycle         prometheus.Counter
	tickOverruns     prometheus.Counter
	lastTick         prometheus.Gauge
	eventWatches     prometheus.Gauge
	ready            prometheus.Gauge
	degraded         *prometheus.GaugeVec
	buildInfo        *prometheus.GaugeVec
}

// Collector names used in vigil_collection_errors_total.
const (
	collectorCgroups = "cgroups"
	collectorNode    = "node"
	collectorEvents  = "events"
)

func newSelfMetrics(reg prometheus.Registerer, info BuildInfo) *selfMetrics {
	m := &selfMetrics{
		tickDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "vigil_tick_duration_seconds",
			Help:    "Time to collect one snapshot and run it through rules and remediation.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 13), // 0.5ms .. 2s
		}),
		collectionErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_collection_errors_total",
			Help: "Collection errors by collector (a cgroup vanishing mid-read is not an error).",
		}, []string{"collector"}),
		cgroupsTracked: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigil_cgroups_tracked",
			Help: "Cgroups in the latest snapshot.",
		}),
		eventsReceived: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_events_received_total",
			Help: "Kernel notifications received, by kind (threshold, oom, memory_events, psi).",
		}, []string{"kind"}),
		offCycle: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_offcycle_snapshots_total",
			Help: "Snapshots taken between ticks because of kernel notifications.",
		}),
		tickOverruns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_tick_overruns_total",
			Help: "Ticks skipped because the previous tick took longer than the interval.",
		}),
		lastTick: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigil_last_tick_timestamp_seconds",
			Help: "Unix time of the latest complete snapshot.",
		}),
		eventWatches: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigil_event_watched_cgroups",
			Help: "Cgroups with kernel notifications registered.",
		}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigil_ready",
			Help: "1 when /readyz reports ready.",
		}),
		degraded: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vigil_degraded",
			Help: "1 while the agent runs without something it wants, by reason.",
		}, []string{"reason"}),
		buildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vigil_build_info",
			Help: "Always 1; labels say which build runs.",
		}, []string{"version", "revision", "goversion"}),
	}
	reg.MustRegister(m.tickDuration, m.collectionErrors, m.cgroupsTracked, m.eventsReceived, m.offCycle,
		m.tickOverruns, m.lastTick, m.eventWatches, m.ready, m.degraded, m.buildInfo)
	m.buildInfo.WithLabelValues(info.Version, info.Revision, runtime.Version()).Set(1)
	for _, c := range []string{collectorCgroups, collectorNode, collectorEvents} {
		m.collectionErrors.WithLabelValues(c)
	}
	for _, k := range []string{vc.EventThreshold, vc.EventOOM, vc.EventMemoryEvents, vc.EventPSI} {
		m.eventsReceived.WithLabelValues(k)
	}
	return m
}

// newRegistry returns vigil's own registry with the Go and process
// collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

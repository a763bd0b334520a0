package kmsg

import "github.com/prometheus/client_golang/prometheus"

var (
	descRecords     = prometheus.NewDesc("vigil_kmsg_records_total", "Kernel log records read.", nil, nil)
	descEvents      = prometheus.NewDesc("vigil_kmsg_oom_events_total", "Kernel OOM kills parsed from the kernel log.", nil, nil)
	descGaps        = prometheus.NewDesc("vigil_kmsg_gaps_total", "Jumps in the kernel log sequence numbers (records lost before vigil read them).", nil, nil)
	descMissed      = prometheus.NewDesc("vigil_kmsg_missed_records_total", "Kernel log records skipped by sequence gaps.", nil, nil)
	descOverwritten = prometheus.NewDesc("vigil_kmsg_overwritten_total", "Reads that found vigil's position overwritten in the kernel ring buffer (EPIPE).", nil, nil)
	descIncomplete  = prometheus.NewDesc("vigil_kmsg_incomplete_reports_total", "OOM reports abandoned without a kill line.", nil, nil)
)

// Describe implements prometheus.Collector.
func (r *Reader) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRecords, descEvents, descGaps, descMissed, descOverwritten, descIncomplete} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (r *Reader) Collect(ch chan<- prometheus.Metric) {
	s := r.Stats()
	for _, m := range []struct {
		d *prometheus.Desc
		v uint64
	}{{descRecords, s.Records}, {descEvents, s.Events}, {descGaps, s.Gaps}, {descMissed, s.MissedRecords}, {descOverwritten, s.Overwritten}, {descIncomplete, s.IncompleteReports}} {
		ch <- prometheus.MustNewConstMetric(m.d, prometheus.CounterValue, float64(m.v))
	}
}

var _ prometheus.Collector = (*Reader)(nil)

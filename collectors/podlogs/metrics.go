package podlogs

import "github.com/prometheus/client_golang/prometheus"

var (
	descLines = prometheus.NewDesc("vigil_container_log_lines_total",
		"Complete log messages read from the container's CRI log files.",
		[]string{"namespace", "pod", "container"}, nil)
	descMatches = prometheus.NewDesc("vigil_container_log_pattern_matches_total",
		"Log messages of the container that matched the pattern.",
		[]string{"namespace", "pod", "container", "pattern"}, nil)
	descRotations = prometheus.NewDesc("vigil_podlogs_rotations_total",
		"Log file rotations followed (rename or removal).", nil, nil)
	descMalformed = prometheus.NewDesc("vigil_podlogs_malformed_lines_total",
		"Lines that were not in the CRI log format.", nil, nil)
)

// Describe implements prometheus.Collector.
func (t *Tailer) Describe(ch chan<- *prometheus.Desc) {
	ch <- descLines
	ch <- descMatches
	ch <- descRotations
	ch <- descMalformed
}

// Collect implements prometheus.Collector from the current counters.
func (t *Tailer) Collect(ch chan<- prometheus.Metric) {
	for _, c := range t.Counts() {
		ch <- prometheus.MustNewConstMetric(descLines, prometheus.CounterValue, float64(c.Lines), c.Namespace, c.Pod, c.Name)
		for p, n := range c.Matches {
			ch <- prometheus.MustNewConstMetric(descMatches, prometheus.CounterValue, float64(n), c.Namespace, c.Pod, c.Name, p)
		}
	}
	s := t.Stats()
	ch <- prometheus.MustNewConstMetric(descRotations, prometheus.CounterValue, float64(s.Rotations))
	ch <- prometheus.MustNewConstMetric(descMalformed, prometheus.CounterValue, float64(s.Malformed))
}

var _ prometheus.Collector = (*Tailer)(nil)

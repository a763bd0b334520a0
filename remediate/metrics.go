package remediate

import "github.com/prometheus/client_golang/prometheus"

// metrics is the Executor's prometheus.Collector.
type metrics struct {
	remediations *prometheus.CounterVec
	outcomes     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	refused      *prometheus.CounterVec
	// extra are further collectors of the Executor (event subscribers).
	extra  []prometheus.Collector
	active prometheus.GaugeFunc
	paused prometheus.GaugeFunc
}

func newMetrics(active func() float64, paused func() float64) *metrics {
	return &metrics{
		remediations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vigil_remediations_total",
			Help: "Remediation actions run, by action and result (applied, dry_run, error, refused)."}, []string{"action", "result"}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vigil_remediation_outcome_total",
			Help: "Final outcomes of journaled records (oom_avoided, recovered, no_effect, oom_killed, ...)."}, []string{"outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "vigil_action_duration_seconds",
			Help:    "Time an action's Do took.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}, []string{"action"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vigil_remediation_refused_total",
			Help: "Remediations or steps refused by safety, by reason."}, []string{"reason"}),
		active: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "vigil_remediations_active",
			Help: "Remediations running or holding a limit."}, active),
		paused: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "vigil_remediation_paused",
			Help: "1 while an operator paused remediation."}, paused),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return append([]prometheus.Collector{m.remediations, m.outcomes, m.duration, m.refused, m.active, m.paused}, m.extra...)
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
}

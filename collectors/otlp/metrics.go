package otlp

import "github.com/prometheus/client_golang/prometheus"

var (
	redLabels   = []string{"service", "namespace", "pod", "container"}
	descRate    = prometheus.NewDesc("vigil_service_requests_per_second", "Requests per second of the service over the RED window (from received OTLP spans).", redLabels, nil)
	descErrors  = prometheus.NewDesc("vigil_service_error_ratio", "Share of the service's requests that failed over the RED window.", redLabels, nil)
	descP99     = prometheus.NewDesc("vigil_service_latency_p99_seconds", "99th percentile request latency of the service over the RED window.", redLabels, nil)
	descSpans   = prometheus.NewDesc("vigil_otlp_spans_received_total", "Spans received by the OTLP receiver.", nil, nil)
	descFwd     = prometheus.NewDesc("vigil_otlp_forwarded_requests_total", "OTLP requests forwarded to the configured collector.", nil, nil)
	descFwdDrop = prometheus.NewDesc("vigil_otlp_forward_dropped_total", "OTLP requests not forwarded, by reason (queue_full: dropped at once or at shutdown; send_failed: retries exhausted).", []string{"reason"}, nil)
)

// Describe implements prometheus.Collector.
func (r *Receiver) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRate, descErrors, descP99, descSpans, descFwd, descFwdDrop} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (r *Receiver) Collect(ch chan<- prometheus.Metric) {
	// Instances told apart only by container.id or process.pid share
	// their labels: one series each, summed (p99: the largest).
	type agg struct {
		labels          [4]string
		rate, errs, p99 float64
		requests        uint64
	}
	var out []agg
	idx := map[[4]string]int{}
	for _, s := range r.RED() {
		l := [4]string{s.Service, s.Namespace, s.Pod, s.Container}
		i, ok := idx[l]
		if !ok {
			i = len(out)
			idx[l] = i
			out = append(out, agg{labels: l})
		}
		a := &out[i]
		a.rate += s.RequestsPerSecond
		a.errs += float64(s.Errors)
		a.requests += s.Requests
		a.p99 = max(a.p99, s.P99LatencySeconds)
	}
	for _, a := range out {
		l := a.labels[:]
		ratio := 0.0
		if a.requests > 0 {
			ratio = a.errs / float64(a.requests)
		}
		ch <- prometheus.MustNewConstMetric(descRate, prometheus.GaugeValue, a.rate, l...)
		ch <- prometheus.MustNewConstMetric(descErrors, prometheus.GaugeValue, ratio, l...)
		ch <- prometheus.MustNewConstMetric(descP99, prometheus.GaugeValue, a.p99, l...)
	}
	st := r.Stats()
	ch <- prometheus.MustNewConstMetric(descSpans, prometheus.CounterValue, float64(st.Spans))
	ch <- prometheus.MustNewConstMetric(descFwd, prometheus.CounterValue, float64(st.Forwarded))
	ch <- prometheus.MustNewConstMetric(descFwdDrop, prometheus.CounterValue, float64(st.ForwardDropped), "queue_full")
	ch <- prometheus.MustNewConstMetric(descFwdDrop, prometheus.CounterValue, float64(st.ForwardFailed), "send_failed")
}

var _ prometheus.Collector = (*Receiver)(nil)

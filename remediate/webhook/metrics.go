package webhook

import (
	"github.com/prometheus/client_golang/prometheus"
)

var (
	descDeliveries = prometheus.NewDesc("vigil_webhook_deliveries_total",
		"Outbound webhook delivery attempts by endpoint and result: delivered, retry (failed, will retry), dead (refused for good, set aside).",
		[]string{"endpoint", "result"}, nil)
	descPending = prometheus.NewDesc("vigil_webhook_outbox_pending",
		"Events in the outbox not yet delivered to the endpoint.", []string{"endpoint"}, nil)
	descInbound = prometheus.NewDesc("vigil_inbound_alerts_total",
		"Alerts received on POST /api/v1/alerts by result: accepted, duplicate.", []string{"result"}, nil)
	descInboundRefused = prometheus.NewDesc("vigil_inbound_requests_refused_total",
		"Requests to POST /api/v1/alerts refused, by HTTP status code.", []string{"code"}, nil)
)

var (
	_ prometheus.Collector = (*Sender)(nil)
	_ prometheus.Collector = (*Inbound)(nil)
)

// Describe implements prometheus.Collector.
func (s *Sender) Describe(ch chan<- *prometheus.Desc) {
	ch <- descDeliveries
	ch <- descPending
}

// Collect implements prometheus.Collector. Every configured endpoint has its
// series from the start, at zero, so rate() and alerts see them.
func (s *Sender) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	for _, e := range s.cfg.Endpoints {
		for _, r := range []string{"delivered", "retry", "dead"} {
			ch <- prometheus.MustNewConstMetric(descDeliveries, prometheus.CounterValue, float64(s.results[[2]string{e.Name, r}]), e.Name, r)
		}
	}
	s.mu.Unlock()
	pending, err := s.Pending()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descPending, err)
		return
	}
	for name, n := range pending {
		ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(n), name)
	}
}

// Describe implements prometheus.Collector.
func (h *Inbound) Describe(ch chan<- *prometheus.Desc) {
	ch <- descInbound
	ch <- descInboundRefused
}

// Collect implements prometheus.Collector.
func (h *Inbound) Collect(ch chan<- prometheus.Metric) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descInbound, prometheus.CounterValue, float64(h.accepted), "accepted")
	ch <- prometheus.MustNewConstMetric(descInbound, prometheus.CounterValue, float64(h.duplicates), "duplicate")
	for code, n := range h.refused {
		ch <- prometheus.MustNewConstMetric(descInboundRefused, prometheus.CounterValue, float64(n), code)
	}
}

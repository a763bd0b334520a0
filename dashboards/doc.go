// Package dashboards owns what vigil ships for Grafana and Prometheus: the
// four Grafana dashboards (generated from Go code into grafana/*.json), the
// Prometheus alert rules (alerts.yaml, unit-tested by alerts_test.yaml), and
// the list of every PromQL query a panel runs, so that tests can prove each
// one against a real Prometheus scraping a real vigil.
//
// Regenerate the committed JSON after changing a dashboard:
//
//	go generate ./dashboards
package dashboards

//go:generate go run ./internal/gen -out grafana

package dashboards

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/test/cgtest"
)

func TestMain(m *testing.M) { cgtest.Main(m) }

// TestGeneratedDashboardsAreCurrent fails when grafana/*.json differs from
// what the Go code generates: run `go generate ./dashboards`.
func TestGeneratedDashboardsAreCurrent(t *testing.T) {
	files, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range files {
		want = append(want, f.Name)
		got, err := os.ReadFile(filepath.Join("grafana", f.Name))
		if err != nil {
			t.Errorf("%s: %v (run go generate ./dashboards)", f.Name, err)
			continue
		}
		if !bytes.Equal(got, f.JSON) {
			t.Errorf("grafana/%s is stale: run go generate ./dashboards", f.Name)
		}
	}
	entries, err := os.ReadDir("grafana")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("grafana/ holds %v, generator writes %v", got, want)
	}
}

// TestDashboardsDecodeStrictly loads every shipped dashboard with the SDK's
// strict decoder (unknown fields are errors) and checks what Grafana needs:
// unique panel ids and an explicit refId on every query.
func TestDashboardsDecodeStrictly(t *testing.T) {
	entries, err := filepath.Glob("grafana/*.json")
	if err != nil || len(entries) != 4 {
		t.Fatalf("want 4 dashboards in grafana/, got %v (%v)", entries, err)
	}
	for _, path := range entries {
		t.Run(filepath.Base(path), func(t *testing.T) {
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var strict dashboard.Dashboard
			// The SDK returns a typed nil (non-nil error that says nothing)
			// on success, and its strict decoder leaves panels empty: use it
			// for the schema check only, then decode normally to walk.
			if err := strict.UnmarshalJSONStrict(raw); err != nil && err.Error() != "" {
				t.Fatalf("strict decode: %v", err)
			}
			var d dashboard.Dashboard
			if err := json.Unmarshal(raw, &d); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if err := d.Validate(); err != nil && err.Error() != "" {
				t.Fatalf("validate: %v", err)
			}
			if d.Uid == nil || !strings.HasPrefix(*d.Uid, "vigil-") {
				t.Errorf("uid = %v, want vigil-*", d.Uid)
			}
			ids := map[uint32]string{}
			panels := 0
			for _, p := range d.Panels {
				switch {
				case p.RowPanel != nil:
					if prev, dup := ids[p.RowPanel.Id]; dup {
						t.Errorf("row %q reuses id %d of %q", derefString(p.RowPanel.Title), p.RowPanel.Id, prev)
					}
					ids[p.RowPanel.Id] = "row"
				case p.Panel != nil:
					panels++
					title := derefString(p.Panel.Title)
					if p.Panel.Id == nil {
						t.Errorf("panel %q has no id", title)
						continue
					}
					if prev, dup := ids[*p.Panel.Id]; dup {
						t.Errorf("panel %q reuses id %d of %q", title, *p.Panel.Id, prev)
					}
					ids[*p.Panel.Id] = title
					if len(p.Panel.Targets) == 0 {
						t.Errorf("panel %q has no query", title)
					}
				}
			}
			if panels < 6 {
				t.Errorf("only %d panels", panels)
			}
		})
	}
}

func derefString(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// TestQueriesMatchJSON walks the generated JSON and checks that Queries()
// lists exactly the expressions the dashboards run, each with its refId, so
// that the Prometheus test below covers every panel.
func TestQueriesMatchJSON(t *testing.T) {
	files, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	type key struct{ dashboard, panel, refID, expr string }
	var inJSON []key
	for _, f := range files {
		var doc struct {
			Panels []struct {
				Type    string `json:"type"`
				Title   string `json:"title"`
				Targets []struct {
					RefID string `json:"refId"`
					Expr  string `json:"expr"`
				} `json:"targets"`
			} `json:"panels"`
			Annotations struct {
				List []struct {
					Name string `json:"name"`
					Expr string `json:"expr"`
				} `json:"list"`
			} `json:"annotations"`
		}
		if err := json.Unmarshal(f.JSON, &doc); err != nil {
			t.Fatalf("%s: %v", f.Name, err)
		}
		stem := strings.TrimSuffix(f.Name, ".json")
		for _, a := range doc.Annotations.List {
			if a.Expr != "" {
				inJSON = append(inJSON, key{stem, "annotation: " + a.Name, "", a.Expr})
			}
		}
		for _, p := range doc.Panels {
			for _, tg := range p.Targets {
				if tg.RefID == "" {
					t.Errorf("%s: panel %q has a query without refId", f.Name, p.Title)
				}
				inJSON = append(inJSON, key{stem, p.Title, tg.RefID, tg.Expr})
			}
		}
	}
	var listed []key
	for _, q := range Queries() {
		if strings.HasPrefix(q.Panel, "variable: ") {
			continue
		}
		listed = append(listed, key{q.Dashboard, q.Panel, q.RefID, q.Expr})
	}
	less := func(a, b key) int {
		return strings.Compare(a.dashboard+a.panel+a.refID+a.expr, b.dashboard+b.panel+b.refID+b.expr)
	}
	slices.SortFunc(inJSON, less)
	slices.SortFunc(listed, less)
	if !slices.Equal(inJSON, listed) {
		t.Errorf("Queries() and the dashboards disagree:\nJSON:   %v\nlisted: %v", inJSON, listed)
	}
	if len(listed) < 40 {
		t.Errorf("only %d panel queries", len(listed))
	}
}

// selfMetrics are the agent's own metrics (agent, rules and remediate
// packages) and the Go/process collectors'. Histograms are listed by base name.
var selfMetrics = []string{
	"vigil_tick_duration_seconds", "vigil_collection_errors_total", "vigil_cgroups_tracked",
	"vigil_events_received_total", "vigil_tick_overruns_total", "vigil_last_tick_timestamp_seconds", "vigil_build_info", "vigil_ready",
	"vigil_degraded", "vigil_rule_evaluations_total", "vigil_rule_firing",
	"vigil_rule_evaluation_duration_seconds", "vigil_rules_loaded", "vigil_rules_reload_success",
	"vigil_remediations_total", "vigil_remediation_outcome_total", "vigil_action_duration_seconds",
	"vigil_remediation_refused_total", "vigil_remediations_active", "vigil_remediation_paused",
	"vigil_webhook_deliveries_total", "vigil_webhook_outbox_pending", "vigil_inbound_alerts_total",
	"vigil_inbound_requests_refused_total",
	"process_cpu_seconds_total", "process_resident_memory_bytes", "up",
}

var metricName = regexp.MustCompile(`\b(vigil_[a-z0-9_]+|process_[a-z0-9_]+|up)\b`)

// knownMetrics is every metric name vigil exports, from the signal tables.
func knownMetrics() map[string]bool {
	known := map[string]bool{}
	for _, s := range collectors.CgroupSignals {
		if s.Metric != "" {
			known[s.Metric] = true
		}
	}
	for _, s := range collectors.NodeSignals {
		if s.Metric != "" {
			known[s.Metric] = true
		}
	}
	for _, m := range selfMetrics {
		known[m] = true
		if strings.HasSuffix(m, "_seconds") {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				known[m+suffix] = true
			}
		}
	}
	return known
}

// TestQueriesUseKnownMetrics catches a typo or a renamed signal before any
// Prometheus runs: every metric a query names must be exported by vigil.
func TestQueriesUseKnownMetrics(t *testing.T) {
	known := knownMetrics()
	for _, q := range Queries() {
		names := metricName.FindAllString(q.Expr, -1)
		if len(names) == 0 {
			t.Errorf("%s / %s: no metric in %q", q.Dashboard, q.Panel, q.Expr)
		}
		for _, n := range names {
			if !known[n] {
				t.Errorf("%s / %s: unknown metric %s in %q", q.Dashboard, q.Panel, n, q.Expr)
			}
		}
	}
}

package dashboards

import (
	"os"
	"os/exec"
	"regexp"
	"testing"

	"github.com/vigil-agent/vigil/test/testenv"
)

// TestAlertRules checks alerts.yaml with promtool and runs its unit tests
// (alerts_test.yaml).
func TestAlertRules(t *testing.T) {
	promtool := testenv.RequireTool(t, "promtool", "prometheus")
	for _, args := range [][]string{
		{"check", "rules", "alerts.yaml"},
		{"test", "rules", "alerts_test.yaml"},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}
}

// TestAlertRulesCoverage: every alert has at least one unit test and names
// only metrics vigil exports.
func TestAlertRulesCoverage(t *testing.T) {
	rules, err := os.ReadFile("alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile("alerts_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tested := map[string]bool{}
	for _, m := range regexp.MustCompile(`alertname: (\w+)`).FindAllSubmatch(tests, -1) {
		tested[string(m[1])] = true
	}
	alerts := regexp.MustCompile(`- alert: (\w+)`).FindAllSubmatch(rules, -1)
	if len(alerts) < 10 {
		t.Fatalf("only %d alerts in alerts.yaml", len(alerts))
	}
	for _, m := range alerts {
		if !tested[string(m[1])] {
			t.Errorf("alert %s has no test in alerts_test.yaml", m[1])
		}
	}
	known := knownMetrics()
	exprs := regexp.MustCompile(`(?m)^\s+expr: (\|\n(?:\s{10}.*\n)+|.*)`).FindAllSubmatch(rules, -1)
	for _, e := range exprs {
		for _, name := range metricName.FindAll(e[1], -1) {
			if !known[string(name)] {
				t.Errorf("unknown metric %s in %q", name, e[1])
			}
		}
	}
	if len(exprs) != len(alerts) {
		t.Errorf("found %d exprs for %d alerts", len(exprs), len(alerts))
	}
}

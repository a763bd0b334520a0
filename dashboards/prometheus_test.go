package dashboards

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/test/cgtest"
	"github.com/vigil-agent/vigil/test/testenv"
)

// grafanaVars resolves what Grafana substitutes before it sends a query, as
// for "All" selected in every template variable and a 1 s scrape interval
// ($__rate_interval is 4 scrape intervals).
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "4s",
	"$__interval", "1s",
	"$__range", "1m",
	"$job", ".*",
	"$node", ".*",
	"$namespace", ".*",
	"$pod", ".*",
	"$cgroup", ".*",
)

func resolve(expr string) string { return grafanaVars.Replace(expr) }

// TestPanelQueriesParse runs every dashboard query through a real
// Prometheus with nothing to scrape: each must parse and evaluate.
func TestPanelQueriesParse(t *testing.T) {
	prom := startPrometheus(t)
	ctx := context.Background()
	for _, q := range Queries() {
		expr := resolve(q.Expr)
		if strings.Contains(expr, "$") {
			t.Errorf("%s / %s: unresolved variable in %q", q.Dashboard, q.Panel, expr)
			continue
		}
		if _, err := prom.queryRange(ctx, expr, time.Now(), time.Minute, 5*time.Second); err != nil {
			t.Errorf("%s / %s %s: %q: %v", q.Dashboard, q.Panel, q.RefID, expr, err)
		}
	}
}

// provenByRemediation are the queries marked MayBeEmpty that the data test
// makes non-empty on purpose: it has vigil run a dry-run remediation.
var provenByRemediation = map[string]bool{
	"workload-memory / annotation: Remediations ": true,
	"remediations / annotation: Remediations ":    true,
	"remediations / Actions by result A":          true,
	"remediations / Action latency A":             true,
	"remediations / Action latency B":             true,
	"remediations / Rules firing A":               true,
	"agent-health / Rule evaluations A":           true,
}

func queryKey(q Query) string { return q.Dashboard + " / " + q.Panel + " " + q.RefID }

// TestPanelQueriesReturnData is the proof that every panel shows something:
// a real vigil runs on this machine's cgroups, a real Prometheus scrapes it
// every second, and every query of every panel must return series, except
// those listed as possibly empty because the event they show did not happen.
// The test makes things happen: a cgroup with a limit and a growing
// allocator, and a rule that fires on it with a dry-run action.
func TestPanelQueriesReturnData(t *testing.T) {
	if testing.Short() {
		t.Skip("starts vigil and Prometheus for ~30 s")
	}
	testenv.RequireTool(t, "prometheus", "prometheus")
	vigil := buildVigil(t)

	// The subject: a cgroup with a limit and memory in it, so that limit,
	// headroom and growth panels have something to show on any host.
	g := cgtest.New(t, "memory")
	if g.Version == 2 {
		g.Write(t, "", "memory.max", "268435456")
	} else {
		g.Write(t, "memory", "memory.limit_in_bytes", "268435456")
	}
	cgtest.Start(t, g.Allocator(cgtest.AllocSpec{TotalMiB: 96, StepMiB: 4, Interval: 500 * time.Millisecond}))

	// vigil runs in a sibling cgroup: safety refuses to act on the agent's
	// own cgroup and its descendants.
	agentGroup := cgtest.New(t, "memory")
	addr := testenv.FreeAddr(t)
	testenv.StartProcess(t, "vigil", agentGroup.Command(vigil, "run", "--listen", addr, "--config", testConfig(t, g.Path())))
	testenv.WaitHTTP(t, "http://"+addr+"/metrics", 30*time.Second)

	begin := time.Now()
	prom := startPrometheus(t, addr)
	ctx := context.Background()
	// 12 scrapes give every rate() over 4 s several windows.
	deadline := time.Now().Add(60 * time.Second)
	for {
		res, err := prom.query(ctx, `count_over_time(up{job="vigil"}[1m]) >= 12 and up{job="vigil"} == 1`)
		if err == nil && len(res.Data.Result) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus did not get 12 good scrapes of vigil within 60 s (last error %v)", err)
		}
		time.Sleep(500 * time.Millisecond)
	}

	// The range covers the whole run: on a busy machine the 12 scrapes can
	// take long enough that events of the first seconds (the remediation,
	// whose series appears once) would fall out of a fixed window.
	end := time.Now()
	window := max(30*time.Second, end.Sub(begin).Round(time.Second))
	var withData, allowedEmpty int
	for _, q := range Queries() {
		expr := resolve(q.Expr)
		res, err := prom.queryRange(ctx, expr, end, window, time.Second)
		if err != nil {
			t.Errorf("%s: %q: %v", queryKey(q), expr, err)
			continue
		}
		if len(res.Data.Result) > 0 {
			withData++
			continue
		}
		switch {
		case provenByRemediation[queryKey(q)]:
			t.Errorf("%s returned no data although the test's dry-run remediation ran: %q", queryKey(q), expr)
		case q.MayBeEmpty != "":
			allowedEmpty++
			t.Logf("empty (allowed: %s): %s", q.MayBeEmpty, queryKey(q))
		default:
			t.Errorf("%s returned no data: %q", queryKey(q), expr)
		}
	}
	t.Logf("%d queries returned data, %d empty as allowed", withData, allowedEmpty)
}

// testConfig writes the agent's config for the data test, on top of the
// built-in defaults: a private journal (the default path is locked by any
// other vigil on the machine), explicit dry-run, and a rule that fires on
// target with a dry-run action.
func testConfig(t *testing.T, target string) string {
	t.Helper()
	dir := t.TempDir()
	rulesDir := filepath.Join(dir, "rules")
	if err := os.Mkdir(rulesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	rule := fmt.Sprintf(`rules:
  - name: dashboards-test
    description: the dashboards test cgroup holds memory
    severity: warning
    selector:
      paths: [%q]
    condition: usage_bytes > 1048576
    for: 0s
    actions:
      - action: throttle-cpu
        params: {cpus: 0.5}
        timeout: 2s
`, target)
	if err := os.WriteFile(filepath.Join(rulesDir, "dashboards-test.yaml"), []byte(rule), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`rules:
  dirs: [%q]
remediation:
  dry_run: true
  opt_in: [%q]
  journal:
    path: %q
`, rulesDir, target, filepath.Join(dir, "journal.db"))
	path := filepath.Join(dir, "vigil.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// buildVigil builds the vigil binary from the module root, or skips when the
// agent has no `vigil run --listen` yet.
func buildVigil(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	name, err := exec.Command("go", "list", "-f", "{{.Name}}", root).CombinedOutput()
	if err != nil || strings.TrimSpace(string(name)) != "main" {
		t.Skipf("vigil is not buildable yet: %s has no main package (go list: %s)", root, bytes.TrimSpace(name))
	}
	bin := filepath.Join(t.TempDir(), "vigil")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build vigil: %v\n%s", err, out)
	}
	help, _ := exec.Command(bin, "run", "--help").CombinedOutput()
	if !bytes.Contains(help, []byte("-listen")) {
		t.Skipf("vigil run has no --listen flag yet; `vigil run --help` says:\n%s", help)
	}
	return bin
}

// TestProvenByRemediationNamesRealQueries keeps the list above honest: each
// entry names a query that exists and is marked MayBeEmpty.
func TestProvenByRemediationNamesRealQueries(t *testing.T) {
	found := map[string]bool{}
	for _, q := range Queries() {
		if provenByRemediation[queryKey(q)] {
			found[queryKey(q)] = true
			if q.MayBeEmpty == "" {
				t.Errorf("%s is listed as proven by the remediation but must return data anyway", queryKey(q))
			}
		}
	}
	for k := range provenByRemediation {
		if !found[k] {
			t.Errorf("provenByRemediation names %q, which is no query", k)
		}
	}
}

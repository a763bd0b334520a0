package dashboards

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/test/cgtest"
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

// TestPanelQueriesReturnData is the proof that every panel shows something:
// a real vigil runs on this machine's cgroups (with a test cgroup that has a
// limit and a growing allocator in it), a real Prometheus scrapes it every
// second, and every query of every panel must return series, except those
// listed as possibly empty because the event they show did not happen.
func TestPanelQueriesReturnData(t *testing.T) {
	if testing.Short() {
		t.Skip("starts vigil and Prometheus for ~20 s")
	}
	requireTool(t, "prometheus", "prometheus")
	vigil := buildVigil(t)

	// A cgroup with a limit and memory in it, so that limit, headroom and
	// growth panels have a subject on any host.
	g := cgtest.New(t, "memory")
	if g.Version == 2 {
		g.Write(t, "", "memory.max", "268435456")
	} else {
		g.Write(t, "memory", "memory.limit_in_bytes", "268435456")
	}
	cgtest.Start(t, g.Allocator(cgtest.AllocSpec{TotalMiB: 96, StepMiB: 4, Interval: 500 * time.Millisecond}))

	addr := freeAddr(t)
	startProcess(t, "vigil", exec.Command(vigil, append([]string{"run", "--listen", addr}, privateJournal(t)...)...))
	waitHTTP(t, "http://"+addr+"/metrics", 30*time.Second)

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

	end := time.Now()
	var withData, allowedEmpty int
	for _, q := range Queries() {
		expr := resolve(q.Expr)
		res, err := prom.queryRange(ctx, expr, end, 20*time.Second, time.Second)
		if err != nil {
			t.Errorf("%s / %s %s: %q: %v", q.Dashboard, q.Panel, q.RefID, expr, err)
			continue
		}
		if len(res.Data.Result) > 0 {
			withData++
			continue
		}
		if q.MayBeEmpty != "" {
			allowedEmpty++
			t.Logf("empty (allowed: %s): %s / %s %s", q.MayBeEmpty, q.Dashboard, q.Panel, q.RefID)
			continue
		}
		t.Errorf("%s / %s %s returned no data: %q", q.Dashboard, q.Panel, q.RefID, expr)
	}
	t.Logf("%d queries returned data, %d empty as allowed", withData, allowedEmpty)
}

// privateJournal returns flags that give the agent a journal file of its
// own (the default, /var/lib/vigil/journal.db, is locked by any other vigil
// on the machine): the embedded default config with only the journal path
// changed.
func privateJournal(t *testing.T) []string {
	t.Helper()
	const defaultPath = "path: /var/lib/vigil/journal.db"
	def, err := os.ReadFile(filepath.Join("..", "agent", "config", "default.yaml"))
	if err != nil || !bytes.Contains(def, []byte(defaultPath)) {
		t.Logf("running vigil with its built-in config (no %q in agent/config/default.yaml: %v)", defaultPath, err)
		return nil
	}
	dir := t.TempDir()
	cfg := bytes.Replace(def, []byte(defaultPath), []byte("path: "+filepath.Join(dir, "journal.db")), 1)
	path := filepath.Join(dir, "vigil.yaml")
	if err := os.WriteFile(path, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{"--config", path}
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

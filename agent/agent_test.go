package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/agent/config"
	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/collectors/node"
	"github.com/vigil-agent/vigil/remediate"
	"github.com/vigil-agent/vigil/remediate/journal"
	"github.com/vigil-agent/vigil/rules"
	"github.com/vigil-agent/vigil/test/cgtest"
	"github.com/vigil-agent/vigil/test/testenv"
	vmtest "github.com/vigil-agent/vigil/test/vm"
)

func TestMain(m *testing.M) { cgtest.Main(m) }

// TestCgroupV2VM runs this package's TestV2* tests in the cgroup v2 microVM.
func TestCgroupV2VM(t *testing.T) { vmtest.Run(t, "^TestV2") }

// testLogger writes the agent's log into the test log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// testConfig is the default config made fast for tests, on a free port,
// with its journal in a temporary directory.
func testConfig(t testing.TB) *config.Config {
	c := config.Default()
	c.Remediation.Journal.Path = filepath.Join(t.TempDir(), "journal.db")
	c.Listen = "127.0.0.1:0"
	c.Tick = 100 * time.Millisecond
	c.DiscoveryInterval = 200 * time.Millisecond
	c.GrowthWindow = 2 * time.Second
	c.Self.OOMScoreAdj = 0 // leave the test process alone
	return c
}

// startAgent runs an agent until the test ends and returns it once its
// HTTP server listens.
func startAgent(t *testing.T, opts Options) *Agent {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	a, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stopped := false
	t.Cleanup(func() {
		cancel()
		if stopped {
			return
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("agent did not stop within 10s")
		}
	})
	select {
	case <-a.Started():
	case err := <-done:
		stopped = true
		t.Fatalf("agent stopped at start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not start within 10s")
	}
	return a
}

func get(t testing.TB, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, b
}

// metricValue returns the value of the series whose line starts with
// prefix (name plus labels) in a /metrics body.
func metricValue(body []byte, name string, labelSubstr string) (float64, bool) {
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) || len(line) <= len(name) || (line[len(name)] != '{' && line[len(name)] != ' ') {
			continue
		}
		if labelSubstr != "" && !strings.Contains(line, labelSubstr) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		return v, err == nil
	}
	return 0, false
}

// setLimit sets a memory limit on a test group on either cgroup version.
func setLimit(t *testing.T, g *cgtest.Group, value string) {
	if g.Version == 2 {
		g.Write(t, "", "memory.max", value)
	} else {
		g.Write(t, "memory", "memory.limit_in_bytes", value)
	}
}

// TestAgentOnRealHost runs the real agent on this machine's cgroups with a
// test cgroup holding 48 MiB under a 512 MiB limit.
func TestAgentOnRealHost(t *testing.T) { testAgentOnRealHost(t) }

// TestV2AgentOnRealHost is the same on a real cgroup v2 kernel (microVM).
func TestV2AgentOnRealHost(t *testing.T) {
	vmtest.RequireGuest(t)
	testAgentOnRealHost(t)
}

func testAgentOnRealHost(t *testing.T) {
	// The limit leaves room for the race detector's overhead in the
	// allocator (a re-executed test binary).
	const limit = 512 << 20
	g := cgtest.New(t)
	setLimit(t, g, strconv.Itoa(limit))

	cfg := testConfig(t)
	cfg.Events.ThresholdRatio = 0.0625 // v1: a notification at 32 MiB
	// A rule on the test cgroup, opted in, in dry-run: collect → evaluate →
	// remediate ends in a journaled dry-run remediation.
	rulesDir := t.TempDir()
	rule := "rules:\n- name: test-working-set\n  description: the test cgroup holds more than 32 MiB\n  severity: warning\n" +
		"  selector:\n    paths: [\"" + g.Path() + "\"]\n  condition: working_set_bytes > 33554432\n  actions:\n  - action: freeze\n"
	if err := os.WriteFile(filepath.Join(rulesDir, "test.yaml"), []byte(rule), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.Rules.Dirs = []string{rulesDir}
	cfg.Remediation.OptIn = []string{g.Path()}
	cfgFile := filepath.Join(t.TempDir(), "vigil.yaml")
	if err := os.WriteFile(cfgFile, []byte("tick: 100ms\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	reload := func() (*config.Config, error) {
		c, err := config.Load(cfgFile)
		if err != nil {
			return nil, err
		}
		c.Listen, c.DiscoveryInterval, c.GrowthWindow, c.Self.OOMScoreAdj = cfg.Listen, cfg.DiscoveryInterval, cfg.GrowthWindow, 0
		c.Remediation.Journal.Path = cfg.Remediation.Journal.Path
		c.Rules, c.Remediation.OptIn = cfg.Rules, cfg.Remediation.OptIn
		c.Events.ThresholdRatio = cfg.Events.ThresholdRatio
		return c, nil
	}
	a := startAgent(t, Options{Config: cfg, Reload: reload})
	base := "http://" + a.Addr()

	t.Run("ready", func(t *testing.T) {
		testenv.Eventually(t, 10*time.Second, "/readyz 200", func() bool {
			code, _ := get(t, base+"/readyz")
			return code == http.StatusOK
		})
		code, body := get(t, base+"/readyz?format=json")
		var st readyStatus
		if err := json.Unmarshal(body, &st); err != nil || code != http.StatusOK || !st.Ready {
			t.Errorf("/readyz?format=json = %d %s (%v), want 200 ready", code, body, err)
		}
		if code, body := get(t, base+"/healthz"); code != http.StatusOK || string(body) != "ok\n" {
			t.Errorf("/healthz = %d %q", code, body)
		}
	})

	// The group is watched before the allocator starts, so the kernel's
	// threshold notification (v1) comes while it allocates.
	label := `cgroup="` + g.Path() + `"`
	testenv.Eventually(t, 10*time.Second, "the test cgroup in /metrics with notifications registered", func() bool {
		_, body := get(t, base+"/metrics")
		_, seen := metricValue(body, "vigil_cgroup_memory_working_set_bytes", label)
		watched, _ := metricValue(body, "vigil_event_watched_cgroups", "")
		return seen && watched >= 1 && isWatched(a, g.Path())
	})
	cmd := g.Allocator(cgtest.AllocSpec{TotalMiB: 48, StepMiB: 8, Interval: 20 * time.Millisecond})
	cgtest.Start(t, cmd)

	t.Run("metrics", func(t *testing.T) {
		var body []byte
		testenv.Eventually(t, 15*time.Second, "working set >= 40 MiB in /metrics", func() bool {
			_, body = get(t, base+"/metrics")
			v, _ := metricValue(body, "vigil_cgroup_memory_working_set_bytes", label)
			return v >= 40<<20
		})
		if v, ok := metricValue(body, "vigil_cgroup_memory_limit_bytes", label); !ok || v != limit {
			t.Errorf("limit of %s = %v (found %v), want %d", g.Path(), v, ok, limit)
		}
		for _, name := range []string{"vigil_tick_duration_seconds_count", "vigil_cgroups_tracked", "vigil_build_info",
			"vigil_ready", "vigil_tick_overruns_total", "vigil_node_memory_total_bytes", "go_goroutines", "process_resident_memory_bytes",
			"vigil_cgroup_collector_discovered_total", "vigil_events_dropped_total", "vigil_rule_evaluations_total"} {
			if _, ok := metricValue(body, name, ""); !ok {
				t.Errorf("/metrics lacks %s", name)
			}
		}
		if v, _ := metricValue(body, "vigil_ready", ""); v != 1 {
			t.Errorf("vigil_ready = %v, want 1", v)
		}
		checkPromtool(t, body)
	})

	if g.Version == 1 {
		t.Run("threshold event wakes an off-cycle snapshot", func(t *testing.T) {
			testenv.Eventually(t, 15*time.Second, "a threshold event and an off-cycle snapshot", func() bool {
				_, body := get(t, base+"/metrics")
				ev, _ := metricValue(body, "vigil_events_received_total", `kind="threshold"`)
				off, _ := metricValue(body, "vigil_offcycle_snapshots_total", "")
				return ev >= 1 && off >= 1
			})
			// The partial snapshot the event woke held the test cgroup.
			testenv.Eventually(t, 5*time.Second, "a partial snapshot of the test cgroup after its threshold event", func() bool {
				_, ok := testExtension.offCycle.Load(collectors.EventThreshold + " " + g.Path())
				return ok
			})
		})
	}

	t.Run("notifications follow cgroups that come and go", func(t *testing.T) {
		g2 := cgtest.New(t)
		setLimit(t, g2, strconv.Itoa(64<<20))
		testenv.Eventually(t, 10*time.Second, "the new limited cgroup to be watched", func() bool { return isWatched(a, g2.Path()) })
		if err := os.Remove(g2.Dir("memory")); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 10*time.Second, "the removed cgroup's watches to be dropped", func() bool { return !isWatched(a, g2.Path()) })
	})

	t.Run("api snapshot", func(t *testing.T) {
		code, body := get(t, base+"/api/v1/snapshot")
		if code != http.StatusOK {
			t.Fatalf("/api/v1/snapshot = %d %s", code, body)
		}
		var snap collectors.Snapshot
		if err := json.Unmarshal(body, &snap); err != nil {
			t.Fatal(err)
		}
		if snap.Hierarchy.Version != g.Version {
			t.Errorf("hierarchy version = %d, want %d", snap.Hierarchy.Version, g.Version)
		}
		var found *collectors.CgroupSample
		for i := range snap.Cgroups {
			if snap.Cgroups[i].Path == g.Path() {
				found = &snap.Cgroups[i]
			}
		}
		if found == nil {
			t.Fatalf("snapshot lacks %s", g.Path())
		}
		if found.Memory.UsageBytes < 40<<20 || found.Memory.MaxBytes != limit {
			t.Errorf("%s usage %d max %d, want >= 40 MiB under %d", g.Path(), found.Memory.UsageBytes, found.Memory.MaxBytes, limit)
		}
		if snap.Node.MemTotalBytes == 0 {
			t.Errorf("node MemTotal = 0")
		}
		// ?cgroup= keeps the cgroup and its descendants only.
		code, body = get(t, base+"/api/v1/snapshot?cgroup="+g.Path())
		var only collectors.Snapshot
		if err := json.Unmarshal(body, &only); err != nil || code != http.StatusOK {
			t.Fatalf("/api/v1/snapshot?cgroup= = %d %v", code, err)
		}
		if len(only.Cgroups) != 1 || only.Cgroups[0].Path != g.Path() {
			t.Errorf("filtered snapshot has %d cgroups, want only %s", len(only.Cgroups), g.Path())
		}
		code, body = get(t, base+"/api/v1/node")
		var facts node.Facts
		if err := json.Unmarshal(body, &facts); err != nil || code != http.StatusOK || facts.KernelVersion == "" || facts.CPUs == 0 {
			t.Errorf("/api/v1/node = %d %s (%v)", code, body, err)
		}
	})

	// The test cgroup sits below this process's own cgroup, and the agent
	// runs in this process: the safety layer must refuse to act on vigil's
	// own subtree, and journal the refusal with the evidence.
	t.Run("rule fires and acting on vigil's own subtree is refused and journaled", func(t *testing.T) {
		var list struct {
			Remediations []journal.Record `json:"remediations"`
		}
		testenv.Eventually(t, 15*time.Second, "a journaled record of test-working-set", func() bool {
			code, body := get(t, base+"/api/v1/remediations?rule=test-working-set")
			if code != http.StatusOK {
				t.Fatalf("/api/v1/remediations = %d %s", code, body)
			}
			if err := json.Unmarshal(body, &list); err != nil {
				t.Fatal(err)
			}
			return len(list.Remediations) > 0
		})
		rec := list.Remediations[0]
		// In the microVM the test runs in the root cgroup, which owns only
		// itself: the test cgroup is then someone else's.
		controller := "memory"
		if g.Version == 2 {
			controller = ""
		}
		own, _ := cgtest.OwnPath(controller)
		switch {
		case own == "/" && (rec.Target.Path != g.Path() || rec.Reason == remediate.RefusedSelf):
			t.Errorf("record = kind %s target %s reason %q (%s), want %s not taken for vigil's own (vigil is in the root cgroup)",
				rec.Kind, rec.Target.Path, rec.Reason, rec.Decision, g.Path())
		case own != "/" && (rec.Target.Path != g.Path() || rec.Kind != journal.KindRefusal || rec.Reason != remediate.RefusedSelf):
			t.Errorf("record = kind %s target %s reason %q (%s), want a %s refusal for %s",
				rec.Kind, rec.Target.Path, rec.Reason, rec.Decision, remediate.RefusedSelf, g.Path())
		}
		if rec.Finding == nil || rec.Finding.Evidence["working_set_bytes"] <= 32<<20 {
			t.Errorf("finding = %+v, want evidence working_set_bytes > 32 MiB", rec.Finding)
		}
		if got := len(g.Procs(t)); got == 0 {
			t.Errorf("the allocator is gone")
		}
		_, body := get(t, base+"/metrics")
		if v, ok := metricValue(body, "vigil_rule_evaluations_total", ""); !ok || v == 0 {
			t.Errorf("vigil_rule_evaluations_total = %v (found %v), want > 0", v, ok)
		}
	})

	t.Run("a changed rules dir is reloaded", func(t *testing.T) {
		loaded := func() float64 {
			_, body := get(t, base+"/metrics")
			v, _ := metricValue(body, "vigil_rules_loaded", "")
			return v
		}
		before := loaded()
		extra := "rules:\n- name: test-extra\n  condition: usage_ratio > 2\n"
		if err := os.WriteFile(filepath.Join(rulesDir, "extra.yaml"), []byte(extra), 0o644); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 10*time.Second, "the new rule file to be loaded", func() bool { return loaded() == before+1 })
		// A broken file is rejected and the rules keep running.
		if err := os.WriteFile(filepath.Join(rulesDir, "extra.yaml"), []byte("rules:\n- name: test-extra\n  condition: nope > 1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 10*time.Second, "the broken rule file to be rejected", func() bool {
			_, body := get(t, base+"/metrics")
			v, _ := metricValue(body, "vigil_rules_reload_success", "")
			return v == 0
		})
		if got := loaded(); got != before+1 {
			t.Errorf("vigil_rules_loaded = %v after a rejected reload, want %v", got, before+1)
		}
		if err := os.Remove(filepath.Join(rulesDir, "extra.yaml")); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 10*time.Second, "the removed rule file to be unloaded", func() bool { return loaded() == before })
	})

	t.Run("reload", func(t *testing.T) {
		before, _ := get(t, base+"/metrics")
		_ = before
		if err := os.WriteFile(cfgFile, []byte("tick: 100ms\nbogus: 1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		a.Reload()
		testenv.Eventually(t, 5*time.Second, "the bad config to be rejected", func() bool {
			_, body := get(t, base+"/metrics")
			v, _ := metricValue(body, "vigil_config_last_reload_successful", "")
			return v == 0
		})
		if got := a.Config().Tick; got != 100*time.Millisecond {
			t.Errorf("tick after a rejected reload = %v, want 100ms", got)
		}
		if err := os.WriteFile(cfgFile, []byte("tick: 150ms\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		a.Reload()
		testenv.Eventually(t, 5*time.Second, "the good config to be applied", func() bool {
			return a.Config().Tick == 150*time.Millisecond
		})
		_, body := get(t, base+"/metrics")
		if v, _ := metricValue(body, "vigil_config_last_reload_successful", ""); v != 1 {
			t.Errorf("vigil_config_last_reload_successful = %v after a good reload", v)
		}
	})
}

// isWatched reports whether the agent's event watcher has a registration
// for the cgroup path.
func isWatched(a *Agent, path string) bool {
	w := a.stats.watcher.Load()
	if w == nil {
		return false
	}
	for _, r := range w.Registrations() {
		if r.Path == path {
			return true
		}
	}
	return false
}

// checkPromtool runs `promtool check metrics` on a /metrics body. Without
// promtool the check is skipped, except in CI (CI=true), where it fails.
func checkPromtool(t *testing.T, body []byte) {
	t.Helper()
	path := testenv.RequireTool(t, "promtool", "prometheus")
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = strings.NewReader(string(body))
	out, err := cmd.CombinedOutput()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("promtool check metrics failed:\n%s", out)
		}
		t.Fatal(err)
	}
}

// TestRuleStateSurvivesRestart fires a rule, stops the agent and starts a
// new one on the same journal: the firing state comes back with its
// original start time instead of starting over.
func TestRuleStateSurvivesRestart(t *testing.T) {
	g := cgtest.New(t)
	cfg := testConfig(t)
	rulesDir := t.TempDir()
	rule := "rules:\n- name: test-always\n  selector:\n    paths: [\"" + g.Path() + "\"]\n  condition: usage_bytes >= 0\n"
	if err := os.WriteFile(filepath.Join(rulesDir, "always.yaml"), []byte(rule), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.Rules.Dirs = []string{rulesDir}

	firing := func(a *Agent) (rules.TargetState, bool) {
		for _, st := range a.pipeline.engine.State() {
			if st.Rule == "test-always" && st.Target.Path == g.Path() && st.State == rules.Firing {
				return st, true
			}
		}
		return rules.TargetState{}, false
	}

	ctx, cancel := context.WithCancel(context.Background())
	a1, err := New(Options{Config: cfg, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a1.Run(ctx) }()
	<-a1.Started()
	var first rules.TargetState
	testenv.Eventually(t, 10*time.Second, "the rule to fire", func() bool {
		var ok bool
		first, ok = firing(a1)
		return ok
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	restart := time.Now()
	a2 := startAgent(t, Options{Config: cfg})
	st, ok := firing(a2)
	if !ok {
		t.Fatalf("rule state not restored: %+v", a2.pipeline.engine.State())
	}
	if !st.Since.Equal(first.Since) || !st.Since.Before(restart) {
		t.Errorf("restored firing since %v, want the first run's %v", st.Since, first.Since)
	}
}

package rules

import (
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/collectors"
)

// withLogs sets the container log counters of a sample.
func withLogs(c collectors.CgroupSample, counts map[string]uint64) collectors.CgroupSample {
	for p, n := range counts {
		c.LogMatches = append(c.LogMatches, collectors.LogMatch{Pattern: p, Count: n})
	}
	return c
}

func withService(c collectors.CgroupSample, rate, errRatio, p99 float64) collectors.CgroupSample {
	c.Service = collectors.ServiceSample{Present: true, Name: "cart", RequestsPerSecond: rate, ErrorRatio: errRatio, P99LatencySeconds: p99}
	return c
}

// TestLogMatchesAndServiceSignals runs rules on the container log
// counters and the OTLP RED signals through the engine, natively and on
// the CEL interpreter (a condition outside the native subset), with
// history, resets and absent sources.
func TestLogMatchesAndServiceSignals(t *testing.T) {
	set := mustLoad(t, `rules:
- name: java-oom-logged
  condition: increase(log_matches("OutOfMemoryError"), "1m") >= 2
- name: oom-logged-cel
  condition: '[log_matches("OutOfMemoryError")].exists(x, x >= 1)'
- name: errors-at-limit
  condition: service.error_ratio > 0.5 && usage_ratio > 0.9
- name: any-log-match
  condition: rate(log.matches_total, "1m") > 0
`)
	for _, name := range []string{"java-oom-logged", "errors-at-limit", "any-log-match"} {
		if set.Rules[ruleIndex(t, set, name)].Condition.native == nil {
			t.Errorf("%s: not on the native evaluator", name)
		}
	}
	if set.Rules[ruleIndex(t, set, "oom-logged-cel")].Condition.native != nil {
		t.Errorf("oom-logged-cel: expected the CEL interpreter")
	}
	e := NewEngine(set, EngineOptions{})
	logs := func(oom, other uint64) map[string]uint64 {
		return map[string]uint64{"OutOfMemoryError": oom, "Cannot allocate memory": other}
	}
	runTicks(t, e, []tick{
		// No log files, no spans: nothing fires (NaN compares false).
		{0, snapOf(cg("/pod/app", 950, 1000)), nil},
		{10 * time.Second, snapOf(withLogs(cg("/pod/app", 950, 1000), logs(0, 0))), nil},
		{20 * time.Second, snapOf(withLogs(cg("/pod/app", 950, 1000), logs(1, 0))), []string{
			"any-log-match /pod/app firing enforce", "oom-logged-cel /pod/app firing enforce"}},
		// Two more matches within a minute.
		{30 * time.Second, snapOf(withLogs(cg("/pod/app", 950, 1000), logs(2, 0))), []string{"java-oom-logged /pod/app firing enforce"}},
		// Errors over half while at the limit.
		{40 * time.Second, snapOf(withService(withLogs(cg("/pod/app", 950, 1000), logs(2, 0)), 20, 0.6, 0.2)), []string{"errors-at-limit /pod/app firing enforce"}},
		// Errors without memory pressure do not.
		{50 * time.Second, snapOf(withService(withLogs(cg("/pod/app", 500, 1000), logs(2, 0)), 20, 0.6, 0.2)), []string{"errors-at-limit /pod/app resolved enforce"}},
	})
}

func ruleIndex(t *testing.T, set *RuleSet, name string) int {
	t.Helper()
	for i, r := range set.Rules {
		if r.Name == name {
			return i
		}
	}
	t.Fatalf("no rule %s", name)
	return -1
}

// TestLogMatchesEvidence: the finding's evidence names the pattern counter
// and its history function as written.
func TestLogMatchesEvidence(t *testing.T) {
	set := mustLoad(t, "rules:\n- name: r\n  condition: 'increase(log_matches(\"Cannot allocate memory\"), \"5m\") > 0 && log_matches(\"Cannot allocate memory\") >= 3'\n")
	e := NewEngine(set, EngineOptions{})
	e.Evaluate(snapOf(withLogs(cg("/a", 10, 100), map[string]uint64{"Cannot allocate memory": 1})), t0)
	fs := e.Evaluate(snapOf(withLogs(cg("/a", 10, 100), map[string]uint64{"Cannot allocate memory": 4})), t0.Add(time.Minute))
	if len(fs) != 1 {
		t.Fatalf("got %d findings, want 1", len(fs))
	}
	want := map[string]float64{
		`log_matches("Cannot allocate memory")`:               4,
		`increase(log_matches("Cannot allocate memory"), 5m)`: 3,
	}
	if !reflect.DeepEqual(fs[0].Evidence, want) {
		t.Errorf("evidence %v, want %v", fs[0].Evidence, want)
	}
	// A counter that restarts (the container's logs were recreated) is
	// reset-aware like any counter.
	fs = e.Evaluate(snapOf(withLogs(cg("/a", 10, 100), map[string]uint64{"Cannot allocate memory": 0})), t0.Add(2*time.Minute))
	_, ev, err := e.Verify(set.Rules[0].Condition, snapOf(withLogs(cg("/a", 10, 100), map[string]uint64{"Cannot allocate memory": 2})), Target{Kind: TargetCgroup, Path: "/a"})
	_ = fs
	if err != nil {
		t.Fatal(err)
	}
	if got := ev[`log_matches("Cannot allocate memory")`]; got != 2 {
		t.Errorf("verify evidence %v", ev)
	}
}

func TestLogMatchesCompileErrors(t *testing.T) {
	tests := []struct {
		name, target, cond, want string
	}{
		{"not a literal", "cgroup", `log_matches(1) > 0`, "pattern name in quotes"},
		{"empty name", "cgroup", `log_matches("") > 0`, "pattern name in quotes"},
		{"node rule", "node", `log_matches("x") > 0`, "log_matches"},
		{"history on a node rule", "node", `increase(log_matches("x"), "1m") > 0`, "cgroup signal"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := compileCondition(tc.cond, tc.target, DefaultCostLimit, DefaultHistorySize)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

// A snapshot with neither source gives NaN, not 0, for the new signals.
func TestSourceSignalsAbsent(t *testing.T) {
	c := cg("/a", 1, 2)
	for _, name := range []string{"log.matches_total", "service.error_ratio", "service.request_rate", "service.p99_latency_seconds"} {
		for i, s := range collectors.CgroupSignals {
			if s.Name == name {
				if got := cgroupValue(i, &c); !math.IsNaN(got) {
					t.Errorf("%s = %v, want NaN", name, got)
				}
			}
		}
	}
}

// A reload that names a new log pattern grows the series of the targets
// already tracked, and the new pattern's history works at once.
func TestLogMatchesNewPatternOnSwap(t *testing.T) {
	e := NewEngine(mustLoad(t, "rules:\n- name: a\n  condition: 'log_matches(\"swap-test-a\") > 0'\n"), EngineOptions{})
	logs := map[string]uint64{"swap-test-a": 0, "swap-test-new": 0}
	e.Evaluate(snapOf(withLogs(cg("/a", 1, 10), logs)), t0)
	e.Swap(mustLoad(t, "rules:\n- name: b\n  condition: 'increase(log_matches(\"swap-test-new\"), \"1m\") >= 1'\n"))
	runTicks(t, e, []tick{
		{10 * time.Second, snapOf(withLogs(cg("/a", 1, 10), logs)), nil},
		{20 * time.Second, snapOf(withLogs(cg("/a", 1, 10), map[string]uint64{"swap-test-new": 1})), []string{"b /a firing enforce"}},
	})
}

package rules

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vigil-agent/vigil/collectors"
)

func TestMetrics(t *testing.T) {
	set := mustLoad(t, "rules:\n- name: full\n  condition: usage_ratio > 0.9\n- name: never\n  condition: usage_ratio > 2\n")
	clock := t0
	e := NewEngine(set, EngineOptions{MaxFiringSeries: 2, Clock: func() time.Time { clock = clock.Add(time.Millisecond); return clock }})
	var cgs []collectors.CgroupSample
	for i := 0; i < 5; i++ {
		cgs = append(cgs, cg(fmt.Sprintf("/c%d", i), 950, 1000))
	}
	e.Evaluate(snapOf(cgs...), t0)
	e.ReloadFailed(errors.New("bad file"))

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(e.Collector())
	want := `
# HELP vigil_rule_evaluations_total Condition evaluations, one per rule per selected target per tick.
# TYPE vigil_rule_evaluations_total counter
vigil_rule_evaluations_total{rule="full"} 5
vigil_rule_evaluations_total{rule="never"} 5
# HELP vigil_rule_firing 1 per target a rule is firing for; targets past the series cap are summed under target="_other".
# TYPE vigil_rule_firing gauge
vigil_rule_firing{rule="full",target="/c0"} 1
vigil_rule_firing{rule="full",target="/c1"} 1
vigil_rule_firing{rule="full",target="_other"} 3
# HELP vigil_rules_loaded Rules in the running rule set.
# TYPE vigil_rules_loaded gauge
vigil_rules_loaded 2
# HELP vigil_rules_reload_success Whether the last rule reload succeeded (1) or was rejected (0).
# TYPE vigil_rules_reload_success gauge
vigil_rules_reload_success 0
# HELP vigil_rules_reload_total Rule reloads by result.
# TYPE vigil_rules_reload_total counter
vigil_rules_reload_total{result="failure"} 1
vigil_rules_reload_total{result="success"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"vigil_rule_evaluations_total", "vigil_rule_firing", "vigil_rules_loaded", "vigil_rules_reload_success", "vigil_rules_reload_total"); err != nil {
		t.Error(err)
	}
	// A successful reload flips the gauge back, and counters survive it.
	e.Swap(mustLoad(t, "rules:\n- name: full\n  condition: usage_ratio > 0.9\n"))
	e.Evaluate(snapOf(cgs...), t0.Add(time.Second))
	if got := testutil.ToFloat64(prometheus.CollectorFunc(func(ch chan<- prometheus.Metric) {
		for m := range collectMetrics(e, "vigil_rules_reload_success") {
			ch <- m
		}
	})); got != 1 {
		t.Errorf("reload_success after Swap = %v, want 1", got)
	}
	if n, err := testutil.GatherAndCount(reg, "vigil_rule_evaluation_duration_seconds"); err != nil || n != 1 {
		t.Errorf("duration histogram: %d series, %v", n, err)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP vigil_rule_evaluations_total Condition evaluations, one per rule per selected target per tick.
# TYPE vigil_rule_evaluations_total counter
vigil_rule_evaluations_total{rule="full"} 10
vigil_rule_evaluations_total{rule="never"} 5
`), "vigil_rule_evaluations_total"); err != nil {
		t.Error(err)
	}
}

func collectMetrics(e *Engine, name string) chan prometheus.Metric {
	all := make(chan prometheus.Metric, 100)
	e.Collector().Collect(all)
	close(all)
	out := make(chan prometheus.Metric, 100)
	for m := range all {
		if strings.Contains(m.Desc().String(), `"`+name+`"`) {
			out <- m
		}
	}
	close(out)
	return out
}

func TestPartialSnapshot(t *testing.T) {
	set := mustLoad(t, "rules:\n- name: full\n  condition: usage_ratio > 0.9\n- name: nodefull\n  target: node\n  condition: used_ratio > 0.9\n")
	e := NewEngine(set, EngineOptions{TargetGrace: -1})
	full := snapOf(cg("/a", 950, 1000), cg("/b", 100, 1000))
	full.Node.UsedRatio = 0.95
	if got := brief(e.Evaluate(full, t0)); len(got) != 2 {
		t.Fatalf("full tick: %q", got)
	}
	// An event for /b alone: /a is not in it and must not be dropped or
	// resolved; the node is not re-evaluated.
	partial := snapOf(cg("/b", 990, 1000))
	partial.Partial = true
	partial.Trigger = &collectors.Event{Kind: collectors.EventThreshold, Path: "/b"}
	got := brief(e.Evaluate(partial, t0.Add(300*time.Millisecond)))
	if want := []string{"full /b firing enforce"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("partial tick: got %q, want %q", got, want)
	}
	if n := len(e.State()); n != 3 {
		t.Errorf("%d states after the partial tick, want 3: %+v", n, e.State())
	}
}

func TestVerifyUncompiledCondition(t *testing.T) {
	e := NewEngine(nil, EngineOptions{})
	if _, _, err := e.Verify(&Condition{Source: "x"}, snapOf(cg("/a", 1, 2)), Target{Kind: TargetCgroup, Path: "/a"}); err == nil {
		t.Error("no error for a hand-made Condition")
	}
	if got := e.Evaluate(snapOf(cg("/a", 1, 2)), t0); got != nil {
		t.Errorf("nil rule set: %v", got)
	}
}

package journal

import (
	"strings"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/rules"
)

func TestWriteTimeline(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	r := &Record{ID: "r1", Node: "n1", Kind: KindRemediation, Time: t0, Rule: "leak", Outcome: OutcomeOOMAvoided, Done: true,
		Target:   rules.Target{Kind: "cgroup", Path: "/kubepods/pod1/c1", Identity: collectors.Identity{Namespace: "shop", Pod: "cart-1", Container: "app"}},
		Finding:  &rules.Finding{Severity: "critical", Mode: rules.Enforce, Since: t0.Add(-5 * time.Second)},
		Evidence: Evidence{Signals: map[string]float64{"seconds_to_limit": 42}, Samples: []Sample{{Time: t0.Add(-time.Second), WorkingSetBytes: 900 << 20, LimitBytes: 1 << 30, HighBytes: collectors.Unlimited}}, TopProcesses: []Process{{PID: 7, Name: "java", RSSBytes: 800 << 20}}},
		Decision: "rule leak fired: ladder reclaim -> throttle-memory",
		Steps: []Step{
			{Index: 0, Action: "reclaim", Intent: t0.Add(time.Millisecond), Finished: t0.Add(3 * time.Millisecond), Result: "applied", Detail: "reclaimed 10MiB", VerifyExpr: "growth < 0", Timeout: 10 * time.Second, VerifyTimedOut: true},
			{Index: 1, Action: "throttle-memory", Intent: t0.Add(10 * time.Second), Finished: t0.Add(10*time.Second + 5*time.Millisecond), Result: "applied", Detail: "memory.high max -> 950MiB", VerifyExpr: "growth < 0", Verified: true, VerifiedAt: t0.Add(14 * time.Second)},
			{Index: 2, Action: "throttle-memory:release", Finished: t0.Add(50 * time.Second), Result: "released", Detail: "condition cleared: memory.high restored to max"},
		},
		Measurements: []Measurement{{Time: t0.Add(15 * time.Second), Present: true, Outcome: OutcomeOOMAvoided, Sample: Sample{WorkingSetBytes: 940 << 20}}},
	}
	var sb strings.Builder
	if err := r.WriteTimeline(&sb); err != nil {
		t.Fatal(err)
	}
	out := sb.String()
	for _, want := range []string{
		"target:  /kubepods/pod1/c1 (pod shop/cart-1, container app)",
		"rule:    leak (critical, enforce)",
		"condition held since -5s",
		"seconds_to_limit = 42",
		"-1s  working set 900.0MiB",
		"pid 7        java                 800.0MiB",
		"+1ms  step 0 reclaim: intent",
		"+3ms  step 0 reclaim: applied: reclaimed 10MiB",
		"step 0 verify did not hold within 10s: growth < 0 -> next step",
		"+14s  step 1 verify held: growth < 0",
		"+50s  release throttle-memory: condition cleared: memory.high restored to max",
		"+15s  oom_avoided  target present",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("timeline lacks %q:\n%s", want, out)
		}
	}
}

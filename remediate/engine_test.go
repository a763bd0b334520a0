package remediate

import (
	"fmt"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/remediate/journal"
	"github.com/vigil-agent/vigil/rules"
	"github.com/vigil-agent/vigil/test/cgtest"
)

// TestV1RulesEngineDrivesLadder runs the whole path on a real v1 cgroup with
// the real rules engine: a leaking allocator makes a rule fire, the engine's
// Finding goes to Handle, throttle-cpu is applied, the step's verify (a CEL
// condition evaluated by the engine on fresh snapshots) holds once growth
// stops, the rule resolves when usage drops, and the limit is restored.
func TestV1RulesEngineDrivesLadder(t *testing.T) {
	requireV1(t)
	g := cgtest.New(t, "memory", "cpu")
	quota0 := g.Read(t, "cpu", "cpu.cfs_quota_us")
	alloc := g.Allocator(cgtest.AllocSpec{TotalMiB: 64, StepMiB: 2, Interval: 30 * time.Millisecond})
	cgtest.Start(t, alloc)

	src := fmt.Sprintf(`rules:
  - name: e2e-leak
    severity: critical
    selector:
      paths: [%q]
    condition: usage_bytes > 24.0 * 1048576.0
    clear: usage_bytes < 8.0 * 1048576.0
    actions:
      - action: throttle-cpu
        params: {cpus: 0.2}
        verify: deriv(usage_bytes, "2s") <= 0.0 && usage_bytes > 60.0 * 1048576.0
        timeout: 30s
`, g.Path())
	set, err := rules.Load(map[string][]byte{"e2e.yaml": []byte(src)}, rules.LoadOptions{Actions: Validators()})
	if err != nil {
		t.Fatal(err)
	}
	engine := rules.NewEngine(set, rules.EngineOptions{})
	j := openJournal(t)
	x := newExecutor(t, Config{Safety: acting(g), Resolver: locate(g), Measure: []time.Duration{time.Minute}}, j, engine)
	smp := newSampler()
	tick := func() []rules.Finding {
		snap := smp.snap(t, g)
		findings := engine.Evaluate(snap, snap.Time)
		x.Observe(snap)
		x.Handle(findings)
		return findings
	}
	eventually(t, 20*time.Second, "rule fired and throttle-cpu applied", func() bool {
		tick()
		return g.Read(t, "cpu", "cpu.cfs_quota_us") == "20000"
	})
	eventually(t, 40*time.Second, "verify held", func() bool {
		tick()
		r, ok := lookup(j, "e2e-leak")
		return ok && len(r.Steps) == 1 && r.Steps[0].Verified
	})
	// The leak is fixed: the process exits, usage drops, the rule resolves.
	_ = alloc.Process.Kill()
	_ = alloc.Wait()
	eventually(t, 20*time.Second, "resolved and restored", func() bool {
		tick()
		return g.Read(t, "cpu", "cpu.cfs_quota_us") == quota0
	})
	eventually(t, 10*time.Second, "outcome", func() bool {
		x.Observe(later(smp.snap(t, g), 2*time.Minute))
		r, ok := lookup(j, "e2e-leak")
		return ok && r.Done
	})
	r := record(t, j, "e2e-leak")
	if r.Finding == nil || r.Finding.Evidence["usage_bytes"] <= 24<<20 {
		t.Errorf("finding evidence %+v, want usage_bytes above the threshold", r.Finding)
	}
	if r.Steps[0].VerifyExpr == "" || r.Outcome != journal.OutcomeRecovered {
		t.Errorf("verify %q outcome %s, want the CEL source and recovered", r.Steps[0].VerifyExpr, r.Outcome)
	}
	if len(r.Steps) != 2 || r.Steps[1].Action != "throttle-cpu:release" {
		t.Errorf("steps %+v, want throttle-cpu then its release", r.Steps)
	}
}

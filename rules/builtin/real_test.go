package builtin_test

import (
	"log/slog"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/collectors/cgroupfs"
	"github.com/vigil-agent/vigil/rules"
	"github.com/vigil-agent/vigil/rules/builtin"
	"github.com/vigil-agent/vigil/test/cgtest"
	vmtest "github.com/vigil-agent/vigil/test/vm"
)

func TestMain(m *testing.M) { cgtest.Main(m) }

// TestLeakRuleOnRealCgroup runs the shipped memory-leak rule on snapshots
// the real collector takes of a real cgroup whose process keeps allocating.
// The clock is compressed: each sweep is stamped 10 s after the previous
// one, so a leak of 2 MiB per sweep reads as 0.2 MiB/s and the rule's
// minutes-long windows pass in seconds. The rule must fire before the
// process reaches the limit, and only for the opted-in cgroup.
func TestLeakRuleOnRealCgroup(t *testing.T) {
	if cgtest.Version() != 1 {
		t.Skip("the v1 host test; TestV2LeakRuleOnRealCgroup covers v2")
	}
	leakRuleOnRealCgroup(t)
}

// TestCgroupV2VM runs the TestV2 tests inside the cgroup v2 microVM.
func TestCgroupV2VM(t *testing.T) { vmtest.Run(t, "^TestV2") }

func TestV2LeakRuleOnRealCgroup(t *testing.T) {
	vmtest.RequireGuest(t)
	leakRuleOnRealCgroup(t)
}

func leakRuleOnRealCgroup(t *testing.T) {
	parent := cgtest.New(t, "memory")
	leaky := parent.Child(t, "leaky")
	quiet := parent.Child(t, "quiet")
	for _, g := range []*cgtest.Group{leaky, quiet} {
		if g.Version == 2 {
			g.Write(t, "", "memory.max", "268435456") // 256 MiB
		} else {
			g.Write(t, "memory", "memory.limit_in_bytes", "268435456")
		}
	}
	set, err := builtin.Load(rules.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	engine := rules.NewEngine(set, rules.EngineOptions{OptIn: rules.OptIn{Paths: []string{leaky.Path()}}})
	col, err := cgroupfs.New(cgroupfs.Options{Subtree: parent.Path(), GrowthWindow: 2 * time.Minute, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { col.Close() })

	// Both allocate; only the opted-in one may be reported.
	spec := cgtest.AllocSpec{TotalMiB: 220, StepMiB: 2, Interval: 50 * time.Millisecond}
	cgtest.Start(t, leaky.Allocator(spec))
	cgtest.Start(t, quiet.Allocator(spec))

	var snap collectors.Snapshot
	virtual := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	deadline := time.Now().Add(90 * time.Second) // TCG in the VM is slow
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		if _, _, err := col.Discover(); err != nil {
			t.Fatal(err)
		}
		virtual = virtual.Add(10 * time.Second)
		snap.Time = virtual
		if err := col.Sweep(virtual, &snap); err != nil {
			t.Fatal(err)
		}
		var ws uint64
		for _, c := range snap.Cgroups {
			if c.Path == leaky.Path() {
				ws = c.Derived.WorkingSetBytes
			}
		}
		for _, f := range engine.Evaluate(&snap, virtual) {
			if f.Target.Path != leaky.Path() {
				t.Fatalf("%s fired for %s, which did not opt in", f.Rule, f.Target.Path)
			}
			if f.Rule != "memory-leak" || f.State != rules.Firing {
				t.Fatalf("unexpected finding %s %s", f.Rule, f.State)
			}
			limit := f.Evidence["limit_bytes"]
			if got := f.Evidence["working_set_bytes"]; got >= limit || got != float64(ws) {
				t.Errorf("evidence working_set_bytes %v (snapshot %v), limit %v", got, ws, limit)
			}
			if p := f.Evidence["predict_linear(working_set_bytes, 10m, 15m)"]; p < limit {
				t.Errorf("fired with a projection %v under the limit %v", p, limit)
			}
			t.Logf("memory-leak fired at working set %.0f MiB of %.0f MiB; evidence %v", float64(ws)/(1<<20), limit/(1<<20), f.Evidence)
			return
		}
		if ws >= 210<<20 {
			break
		}
	}
	t.Fatal("memory-leak did not fire before the allocator reached its total")
}

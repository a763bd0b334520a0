package remediate

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/remediate/journal"
	"github.com/vigil-agent/vigil/rules"
	"github.com/vigil-agent/vigil/test/cgtest"
)

func requireV1(t *testing.T) {
	t.Helper()
	if cgtest.Version() != 1 {
		t.Skip("cgroup v1 test (the host); v2 runs TestV2* in the microVM")
	}
}

// growthStopped is the verify used by the v1 tests: usage did not grow by
// more than 1 MiB since the previous snapshot of the target.
func growthStopped() (verifier, *rules.Condition) {
	last := map[string]uint64{}
	cond := &rules.Condition{Source: "growth stopped"}
	return VerifyFunc(func(c *rules.Condition, snap *collectors.Snapshot, tg rules.Target) (bool, map[string]float64, error) {
		for _, s := range snap.Cgroups {
			if s.Path == tg.Path {
				prev, ok := last[s.Path]
				last[s.Path] = s.Memory.UsageBytes
				return ok && s.Memory.UsageBytes <= prev+1<<20, map[string]float64{"usage_bytes": float64(s.Memory.UsageBytes)}, nil
			}
		}
		return false, nil, nil
	}), cond
}

// TestV1LeakThrottleCPUAppliedAndReleased: a leaking allocator in an opted-in
// v1 group; the rule's ladder is throttle-memory (not on v1: skipped, the
// ladder moves on) then throttle-cpu with a verify. cpu.cfs_quota_us and
// memory.soft_limit_in_bytes are set, verified, held while the finding fires,
// and restored when it resolves; the journal holds intent, steps, outcome.
func TestV1LeakThrottleCPUAppliedAndReleased(t *testing.T) {
	requireV1(t)
	g := cgtest.New(t, "memory", "cpu")
	g.Write(t, "memory", "memory.limit_in_bytes", "256M")
	quota0, soft0 := g.Read(t, "cpu", "cpu.cfs_quota_us"), g.Read(t, "memory", "memory.soft_limit_in_bytes")
	alloc := g.Allocator(cgtest.AllocSpec{TotalMiB: 96, StepMiB: 2, Interval: 20 * time.Millisecond})
	cgtest.Start(t, alloc)

	j := openJournal(t)
	v, cond := growthStopped()
	x := newExecutor(t, Config{Safety: acting(g), Resolver: locate(g), Measure: []time.Duration{time.Minute, 2 * time.Minute}, StepTimeout: 20 * time.Second}, j, v)
	smp := newSampler()
	eventually(t, 10*time.Second, "allocator charged", func() bool { return smp.sample(t, g).Memory.UsageBytes > 16<<20 })
	for range 3 {
		x.Observe(smp.snap(t, g))
	}
	steps := []rules.ActionStep{
		{Action: ActionThrottleMemory, Timeout: time.Second},
		{Action: ActionThrottleCPU, Params: map[string]any{"cpus": 0.1, "soft_limit": "64Mi"}, Verify: cond, VerifyExpr: cond.Source, Timeout: 20 * time.Second},
	}
	x.Handle([]rules.Finding{finding("leak", g, rules.Firing, steps...)})
	eventually(t, 5*time.Second, "cpu.cfs_quota_us = 10000", func() bool { return g.Read(t, "cpu", "cpu.cfs_quota_us") == "10000" })
	if got := g.Read(t, "memory", "memory.soft_limit_in_bytes"); got != "67108864" {
		t.Errorf("memory.soft_limit_in_bytes = %s, want 67108864", got)
	}
	// Keep observing until the verify holds (the allocator reached its total).
	eventually(t, 30*time.Second, "verify held", func() bool {
		x.Observe(smp.snap(t, g))
		x.Handle([]rules.Finding{finding("leak", g, rules.Firing, steps...)}) // still firing: no second ladder
		r, ok := lookup(j, "leak")
		return ok && len(r.Steps) == 2 && r.Steps[1].Verified
	})
	if got := g.Read(t, "cpu", "cpu.cfs_quota_us"); got != "10000" {
		t.Fatalf("throttle released while the finding fires: cfs_quota_us = %s", got)
	}
	x.Handle([]rules.Finding{finding("leak", g, rules.Resolved)})
	eventually(t, 5*time.Second, "cpu.cfs_quota_us and memory.soft_limit_in_bytes restored", func() bool {
		return g.Read(t, "cpu", "cpu.cfs_quota_us") == quota0 && g.Read(t, "memory", "memory.soft_limit_in_bytes") == soft0
	})
	eventually(t, 10*time.Second, "outcome measured twice", func() bool {
		x.Observe(later(smp.snap(t, g), 3*time.Minute))
		r, ok := lookup(j, "leak")
		return ok && r.Done
	})
	r := record(t, j, "leak")
	if applied, _ := j.Applied(); len(applied) != 0 {
		t.Errorf("applied limits left after release: %+v", applied)
	}
	var actions []string
	for _, s := range r.Steps {
		actions = append(actions, s.Action+"="+s.Result)
	}
	if got, want := strings.Join(actions, ","), "throttle-memory=skipped,throttle-cpu=applied,throttle-cpu:release=released"; got != want {
		t.Errorf("steps %s, want %s", got, want)
	}
	if !strings.Contains(r.Steps[0].Detail, ErrUnsupported.Error()) || r.Steps[0].Error != "" {
		t.Errorf("throttle-memory on v1: detail %q error %q, want skipped because %q", r.Steps[0].Detail, r.Steps[0].Error, ErrUnsupported)
	}
	if r.Steps[1].Intent.IsZero() || r.Steps[1].Finished.Before(r.Steps[1].Intent) || !strings.Contains(r.Steps[1].Detail, `"10000 100000"`) {
		t.Errorf("throttle-cpu step %+v", r.Steps[1])
	}
	if len(r.Evidence.Samples) < 3 || len(r.Evidence.TopProcesses) == 0 || r.Evidence.TopProcesses[0].PID != alloc.Process.Pid {
		t.Errorf("evidence: %d samples, top processes %+v (allocator pid %d)", len(r.Evidence.Samples), r.Evidence.TopProcesses, alloc.Process.Pid)
	}
	if r.Kind != journal.KindRemediation || r.DryRun || r.Outcome != journal.OutcomeRecovered || len(r.Measurements) != 2 {
		t.Errorf("record kind %s dry_run %v outcome %s measurements %d; want remediation, false, recovered, 2", r.Kind, r.DryRun, r.Outcome, len(r.Measurements))
	}
}

// TestV1SignalPath: SIGTERM the largest process; a process that ignores
// SIGTERM is SIGKILLed after the grace only if the condition still holds.
func TestV1SignalPath(t *testing.T) {
	requireV1(t)
	tests := []struct {
		name       string
		ignoreTerm bool
		resolve    bool // the finding resolves during the grace
		wantDead   bool
		wantDetail string
		wantOut    string
	}{
		{"exits on SIGTERM", false, false, true, "it exited", journal.OutcomeTerminated},
		{"SIGKILL after grace", true, false, true, "SIGKILL after", journal.OutcomeTerminated},
		{"condition cleared: no SIGKILL", true, true, false, "no SIGKILL", journal.OutcomeRecovered},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := cgtest.New(t, "memory")
			var victim *exec.Cmd
			if tt.ignoreTerm {
				victim = g.Command("/bin/sh", "-c", "trap '' TERM; exec sleep 600")
			} else {
				victim = g.Allocator(cgtest.AllocSpec{TotalMiB: 32, StepMiB: 8, Interval: 10 * time.Millisecond})
			}
			// Started by hand: this test owns the one Wait of the victim.
			if err := victim.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- victim.Wait() }()
			t.Cleanup(func() {
				_ = victim.Process.Kill()
				select {
				case <-exited:
				case <-time.After(5 * time.Second):
				}
			})
			smp := newSampler()
			eventually(t, 10*time.Second, "victim running", func() bool { return len(g.Procs(t)) == 1 && smp.sample(t, g).Memory.UsageBytes > 0 })
			time.Sleep(200 * time.Millisecond) // let sh exec sleep

			j := openJournal(t)
			x := newExecutor(t, Config{Safety: acting(g), Resolver: locate(g), Measure: []time.Duration{500 * time.Millisecond}}, j, nil)
			x.Observe(smp.snap(t, g))
			x.Handle([]rules.Finding{finding("sig", g, rules.Firing, rules.ActionStep{Action: ActionSignal, Params: map[string]any{"grace": "1s"}})})
			if tt.resolve {
				time.Sleep(300 * time.Millisecond)
				x.Handle([]rules.Finding{finding("sig", g, rules.Resolved)})
			}
			var werr error
			select {
			case werr = <-exited:
				if !tt.wantDead {
					t.Fatalf("victim died (%v), want it alive", werr)
				}
			case <-time.After(4 * time.Second):
				if tt.wantDead {
					t.Fatal("victim still alive 4s after the finding")
				}
			}
			if tt.wantDead {
				ws, _ := werr.(*exec.ExitError)
				sig := ws.Sys().(syscall.WaitStatus).Signal()
				if want := map[bool]syscall.Signal{false: syscall.SIGTERM, true: syscall.SIGKILL}[tt.ignoreTerm]; sig != want {
					t.Errorf("victim died of %v, want %v", sig, want)
				}
			}
			eventually(t, 5*time.Second, "step journaled", func() bool {
				r, ok := lookup(j, "sig")
				return ok && len(r.Steps) == 1 && r.Steps[0].Result != ""
			})
			r := record(t, j, "sig")
			if !strings.Contains(r.Steps[0].Detail, tt.wantDetail) || !strings.Contains(r.Steps[0].Detail, "pid ") {
				t.Errorf("detail %q, want it to mention the pid and %q", r.Steps[0].Detail, tt.wantDetail)
			}
			eventually(t, 5*time.Second, "outcome", func() bool {
				x.Observe(smp.snap(t, g))
				r, ok := lookup(j, "sig")
				return ok && r.Done
			})
			if r := record(t, j, "sig"); r.Outcome != tt.wantOut {
				t.Errorf("outcome %s, want %s", r.Outcome, tt.wantOut)
			}
		})
	}
}

// TestV1ProtectedNeverTouched: enforce findings with a ladder that would
// kill, on targets safety must refuse. Nothing is touched and each refusal
// is journaled once with its reason.
func TestV1ProtectedNeverTouched(t *testing.T) {
	requireV1(t)
	tests := []struct {
		name   string
		safety func(SafetyConfig, *cgtest.Group) SafetyConfig
		pause  bool
		want   string
	}{
		{"protected even when opted in", func(s SafetyConfig, g *cgtest.Group) SafetyConfig {
			s.Protected = append(s.Protected, g.Path())
			return s
		}, false, RefusedProtected},
		{"not opted in", func(s SafetyConfig, g *cgtest.Group) SafetyConfig { s.OptIn = []string{"/elsewhere/**"}; return s }, false, RefusedNotOptedIn},
		{"vigil's own cgroup tree", func(s SafetyConfig, g *cgtest.Group) SafetyConfig {
			s.SelfCgroup = strings.TrimSuffix(g.Path(), "/"+g.Name)
			return s
		}, false, RefusedSelf},
		{"omitted", func(s SafetyConfig, g *cgtest.Group) SafetyConfig { s.Omit = []string{g.Path()}; return s }, false, RefusedOmitted},
		{"paused", func(s SafetyConfig, g *cgtest.Group) SafetyConfig { return s }, true, RefusedPaused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := cgtest.New(t, "memory", "cpu")
			p := g.Command("sleep", "600")
			cgtest.Start(t, p)
			quota0 := g.Read(t, "cpu", "cpu.cfs_quota_us")
			j := openJournal(t)
			x := newExecutor(t, Config{Safety: tt.safety(acting(g), g), Resolver: locate(g), Measure: []time.Duration{200 * time.Millisecond}}, j, nil)
			if tt.pause {
				x.Pause()
			}
			smp := newSampler()
			steps := []rules.ActionStep{{Action: ActionThrottleCPU}, {Action: ActionKillCgroup}}
			for range 5 {
				x.Observe(smp.snap(t, g))
				x.Handle([]rules.Finding{finding("kill-it", g, rules.Firing, steps...)})
				time.Sleep(100 * time.Millisecond)
			}
			eventually(t, 5*time.Second, "refusal measured", func() bool {
				x.Observe(smp.snap(t, g))
				recs, _ := j.List(journal.Filter{Rule: "kill-it"})
				return len(recs) == 1 && recs[0].Done
			})
			r := record(t, j, "kill-it")
			if r.Kind != journal.KindRefusal || r.Reason != tt.want || r.Outcome != journal.OutcomeRefused || len(r.Steps) != 0 {
				t.Errorf("record kind %s reason %s outcome %s steps %d; want refusal %s refused 0", r.Kind, r.Reason, r.Outcome, len(r.Steps), tt.want)
			}
			if got := g.Read(t, "cpu", "cpu.cfs_quota_us"); got != quota0 {
				t.Errorf("cpu.cfs_quota_us = %s, want untouched %s", got, quota0)
			}
			if p.ProcessState != nil || syscall.Kill(p.Process.Pid, 0) != nil {
				t.Errorf("process in a refused target was killed")
			}
		})
	}
}

// TestV1DryRunByDefault: with the default safety (dry-run) an opted-in
// target's ladder is journaled with what each step would do, nothing more.
func TestV1DryRunByDefault(t *testing.T) {
	requireV1(t)
	g := cgtest.New(t, "memory", "cpu")
	cgtest.Start(t, g.Command("sleep", "600"))
	quota0 := g.Read(t, "cpu", "cpu.cfs_quota_us")
	s := acting(g)
	s.DryRun = true
	j := openJournal(t)
	x := newExecutor(t, Config{Safety: s, Resolver: locate(g), Measure: []time.Duration{200 * time.Millisecond}}, j, nil)
	smp := newSampler()
	x.Observe(smp.snap(t, g))
	x.Handle([]rules.Finding{finding("dry", g, rules.Firing, rules.ActionStep{Action: ActionThrottleCPU}, rules.ActionStep{Action: ActionKillCgroup})})
	eventually(t, 5*time.Second, "dry-run measured", func() bool {
		x.Observe(smp.snap(t, g))
		recs, _ := j.List(journal.Filter{Rule: "dry"})
		return len(recs) == 1 && recs[0].Done
	})
	r := record(t, j, "dry")
	if !r.DryRun || r.Outcome != journal.OutcomeDryRun || len(r.Steps) != 2 || r.Steps[0].Result != "dry_run" || !strings.HasPrefix(r.Steps[1].Detail, "would kill") {
		t.Errorf("record %+v", r)
	}
	if got := g.Read(t, "cpu", "cpu.cfs_quota_us"); got != quota0 || len(g.Procs(t)) != 1 {
		t.Errorf("dry-run changed something: quota %s procs %v", got, g.Procs(t))
	}
}

// TestV1OOMKillMissJournaled: a kernel OOM kill no remediation covered is
// journaled as a miss.
func TestV1OOMKillMissJournaled(t *testing.T) {
	requireV1(t)
	g := cgtest.New(t, "memory")
	g.Write(t, "memory", "memory.limit_in_bytes", "32M")
	j := openJournal(t)
	x := newExecutor(t, Config{Safety: acting(g), Resolver: locate(g)}, j, nil)
	smp := newSampler()
	x.Observe(smp.snap(t, g))
	cmd := g.Allocator(cgtest.AllocSpec{TotalMiB: 100, StepMiB: 4})
	cgtest.Start(t, cmd)
	_ = cmd.Wait()
	x.Observe(smp.snap(t, g))
	eventually(t, 5*time.Second, "miss journaled", func() bool {
		recs, _ := j.List(journal.Filter{Kind: journal.KindOOMMiss})
		return len(recs) == 1
	})
	recs, _ := j.List(journal.Filter{Kind: journal.KindOOMMiss})
	if r := recs[0]; r.Target.Path != g.Path() || r.Outcome != journal.OutcomeOOMKilled || len(r.Evidence.Samples) != 2 {
		t.Errorf("miss record %+v", r)
	}
}

// TestV1LadderSkipsUnavailableAction: a step whose action is not registered
// on this node (a Kubernetes action without Kubernetes) is journaled as an
// error and the ladder goes on; a ladder with no available action at all is
// refused.
func TestV1LadderSkipsUnavailableAction(t *testing.T) {
	requireV1(t)
	g := cgtest.New(t, "memory", "cpu")
	cgtest.Start(t, g.Command("sleep", "600"))
	j := openJournal(t)
	x := newExecutor(t, Config{Safety: acting(g), Resolver: locate(g), Measure: []time.Duration{time.Minute}}, j, nil)
	x.Observe(newSampler().snap(t, g))
	x.Handle([]rules.Finding{
		finding("skip", g, rules.Firing, rules.ActionStep{Action: "restart-container"}, rules.ActionStep{Action: ActionThrottleCPU}),
		finding("none", g, rules.Firing, rules.ActionStep{Action: "restart-container"}),
	})
	eventually(t, 5*time.Second, "throttle-cpu applied", func() bool { return g.Read(t, "cpu", "cpu.cfs_quota_us") == "10000" })
	eventually(t, 5*time.Second, "both journaled", func() bool {
		r, ok := lookup(j, "skip")
		_, ok2 := lookup(j, "none")
		return ok && ok2 && len(r.Steps) == 2 && r.Steps[1].Result != ""
	})
	r := record(t, j, "skip")
	if r.Steps[0].Result != "error" || r.Steps[0].Error != "action not available on this node" || r.Steps[1].Result != "applied" {
		t.Errorf("steps %+v", r.Steps)
	}
	if n := record(t, j, "none"); n.Kind != journal.KindRefusal || n.Reason != RefusedUnknownAction {
		t.Errorf("ladder of unavailable actions: kind %s reason %s", n.Kind, n.Reason)
	}
}

// TestV1ExecAndRestartUnit: exec runs the configured command with the
// target's identity in its environment; restart-unit without a reachable
// systemd fails with the reason journaled, and the ladder ends.
func TestV1ExecAndRestartUnit(t *testing.T) {
	requireV1(t)
	g := cgtest.New(t, "memory")
	cgtest.Start(t, g.Command("sleep", "600"))
	out := filepath.Join(t.TempDir(), "env")
	j := openJournal(t)
	x := newExecutor(t, Config{Safety: acting(g), Resolver: locate(g), Measure: []time.Duration{time.Minute}}, j, nil)
	x.Observe(newSampler().snap(t, g))
	x.Handle([]rules.Finding{finding("hook", g, rules.Firing,
		rules.ActionStep{Action: ActionRestartUnit, Params: map[string]any{"unit": "vigil-test-none.service", "timeout": "2s"}},
		rules.ActionStep{Action: ActionExec, Params: map[string]any{"command": []any{"/bin/sh", "-c", `echo "$VIGIL_RULE $VIGIL_TARGET $VIGIL_REMEDIATION_ID" > ` + out}}},
	)})
	eventually(t, 10*time.Second, "both steps journaled", func() bool {
		r, ok := lookup(j, "hook")
		return ok && len(r.Steps) == 2 && r.Steps[1].Result != ""
	})
	r := record(t, j, "hook")
	if r.Steps[0].Result != "error" || !strings.Contains(r.Steps[0].Error, "vigil-test-none.service") {
		t.Errorf("restart-unit step %+v, want an error naming the unit", r.Steps[0])
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if want := "hook " + g.Path() + " " + r.ID + "\n"; string(got) != want || r.Steps[1].Result != "applied" {
		t.Errorf("exec wrote %q (step %+v), want %q", got, r.Steps[1], want)
	}
}

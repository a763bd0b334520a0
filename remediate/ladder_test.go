package remediate

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/rules"
	"github.com/vigil-agent/vigil/test/cgtest"
	vmtest "github.com/vigil-agent/vigil/test/vm"
)

// never is a verifier whose condition never holds: each step runs to its
// timeout.
func never() (verifier, *rules.Condition) {
	return VerifyFunc(func(*rules.Condition, *collectors.Snapshot, rules.Target) (bool, map[string]float64, error) {
		return false, nil, nil
	}), &rules.Condition{Source: "never"}
}

// stuck is an action whose Do ignores its context until released, like a
// write to memory.reclaim the kernel keeps retrying.
type stuck struct{ release chan struct{} }

func (*stuck) Name() string { return "stuck" }
func (s *stuck) Do(context.Context, Request) (Result, error) {
	<-s.release
	return Result{Detail: "finally returned"}, nil
}

// TestStepOverrunDoesNotBlockLadder: a step whose action does not return
// within the step's timeout is journaled as an error and the next step runs.
func TestStepOverrunDoesNotBlockLadder(t *testing.T) {
	g := cgtest.New(t, "memory", "cpu")
	cgtest.Start(t, g.Command("sleep", "600"))
	j := openJournal(t)
	v, cond := never()
	x := newExecutor(t, Config{Safety: acting(g), Resolver: locate(g), Measure: []time.Duration{time.Minute}}, j, v)
	s := &stuck{release: make(chan struct{})}
	t.Cleanup(func() { close(s.release) })
	x.Register(s)
	x.Observe(newSampler().snap(t, g))
	t0 := time.Now()
	x.Handle([]rules.Finding{finding("overrun", g, rules.Firing,
		rules.ActionStep{Action: "stuck", Verify: cond, VerifyExpr: cond.Source, Timeout: 300 * time.Millisecond},
		rules.ActionStep{Action: ActionThrottleCPU, Params: map[string]any{"cpus": 0.5}})})
	eventually(t, 10*time.Second, "second step applied", func() bool {
		r, ok := lookup(j, "overrun")
		return ok && len(r.Steps) == 2 && r.Steps[1].Result != ""
	})
	r := record(t, j, "overrun")
	if got := time.Since(t0); got > 5*time.Second {
		t.Errorf("ladder reached step 2 after %s, want soon after the 300ms timeout", got)
	}
	if r.Steps[0].Result != "error" || !strings.Contains(r.Steps[0].Error, errStepOverran.Error()) {
		t.Errorf("step 0 result %q error %q, want error %q", r.Steps[0].Result, r.Steps[0].Error, errStepOverran)
	}
	if r.Steps[1].Result != "applied" {
		t.Errorf("step 1 result %q (%s), want applied", r.Steps[1].Result, r.Steps[1].Error)
	}
}

// TestReclaimSkipsWithoutPageCache: with little reclaimable page cache the
// reclaim step is skipped (nothing written) and the ladder moves on at once.
func TestReclaimSkipsWithoutPageCache(t *testing.T) {
	g := cgtest.New(t, "memory", "cpu")
	cgtest.Start(t, g.Command("sleep", "600"))
	smp := newSampler()
	sample := smp.sample(t, g)
	tests := []struct {
		name        string
		reclaimable uint64
		wantSkipped bool
	}{
		{"no page cache", 0, true},
		{"1 MiB page cache", 1 << 20, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := sample
			s.Derived.ReclaimableBytes = tt.reclaimable
			loc, err := locate(g)(target(g))
			if err != nil {
				t.Fatal(err)
			}
			cg, err := OpenCgroup(loc)
			if err != nil {
				t.Fatal(err)
			}
			res, err := (&Reclaim{}).Do(t.Context(), Request{Target: target(g), Cgroup: cg, Sample: &s, Params: map[string]any{"bytes": "128Mi"}})
			if err != nil {
				t.Fatal(err)
			}
			if res.Skipped != tt.wantSkipped || !strings.Contains(res.Detail, "skipped") {
				t.Errorf("skipped %v detail %q, want skipped %v", res.Skipped, res.Detail, tt.wantSkipped)
			}
		})
	}
	// In a ladder: journaled as skipped, and the next step follows at once
	// (no wait for the reclaim step's verify).
	j := openJournal(t)
	v, cond := never()
	x := newExecutor(t, Config{Safety: acting(g), Resolver: locate(g), Measure: []time.Duration{time.Minute}}, j, v)
	x.Observe(smp.snap(t, g))
	x.Handle([]rules.Finding{finding("skip", g, rules.Firing,
		rules.ActionStep{Action: ActionReclaim, Params: map[string]any{"bytes": "128Mi"}, Verify: cond, VerifyExpr: cond.Source, Timeout: time.Minute},
		rules.ActionStep{Action: ActionThrottleCPU, Params: map[string]any{"cpus": 0.5}})})
	eventually(t, 10*time.Second, "second step applied", func() bool {
		r, ok := lookup(j, "skip")
		return ok && len(r.Steps) == 2 && r.Steps[1].Result != ""
	})
	if r := record(t, j, "skip"); r.Steps[0].Result != "skipped" || r.Steps[0].VerifyTimedOut {
		t.Errorf("reclaim step %+v, want skipped without a verify wait", r.Steps[0])
	}
}

// signalFrozen runs freeze → signal on a frozen victim and checks that the
// victim dies of the expected signal and the cgroup is thawed.
func signalFrozen(t *testing.T) {
	tests := []struct {
		name       string
		ignoreTerm bool
		want       syscall.Signal
	}{
		{"allocator dies of SIGTERM", false, syscall.SIGTERM},
		{"TERM ignored: SIGKILL after grace", true, syscall.SIGKILL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := cgtest.New(t, "memory", "freezer")
			var victim *exec.Cmd
			if tt.ignoreTerm {
				victim = g.Command("/bin/sh", "-c", "trap '' TERM; exec sleep 600")
			} else {
				victim = g.Allocator(cgtest.AllocSpec{TotalMiB: 32, StepMiB: 1, Interval: 50 * time.Millisecond})
			}
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
			v, cond := never()
			x := newExecutor(t, Config{Safety: acting(g), Resolver: locate(g), Measure: []time.Duration{time.Minute}}, j, v)
			x.Observe(smp.snap(t, g))
			x.Handle([]rules.Finding{finding("frozen", g, rules.Firing,
				rules.ActionStep{Action: ActionFreeze, Verify: cond, VerifyExpr: cond.Source, Timeout: 500 * time.Millisecond},
				rules.ActionStep{Action: ActionSignal, Params: map[string]any{"signal": "SIGTERM", "grace": "1s"}})})
			var werr error
			select {
			case werr = <-exited:
			case <-time.After(8 * time.Second):
				t.Fatal("frozen victim still alive 8s after the finding")
			}
			var ee *exec.ExitError
			if !errors.As(werr, &ee) {
				t.Fatalf("victim exit %v, want death by signal", werr)
			}
			if sig := ee.Sys().(syscall.WaitStatus).Signal(); sig != tt.want {
				t.Errorf("victim died of %v, want %v", sig, tt.want)
			}
			eventually(t, 5*time.Second, "signal step journaled", func() bool {
				r, ok := lookup(j, "frozen")
				return ok && len(r.Steps) >= 2 && r.Steps[1].Result != ""
			})
			r := record(t, j, "frozen")
			if r.Steps[0].Result != "applied" || !r.Steps[0].VerifyTimedOut {
				t.Errorf("freeze step %+v, want applied and verify timed out", r.Steps[0])
			}
			if d := r.Steps[1].Detail; !strings.Contains(d, "thawed") || !strings.HasPrefix(d, "sent SIGTERM to pid ") {
				t.Errorf("signal detail %q, want \"sent SIGTERM to pid ...\" saying it thawed the cgroup", d)
			}
		})
	}
}

func TestV1SignalFrozen(t *testing.T) {
	requireV1(t)
	signalFrozen(t)
}

func TestV2SignalFrozen(t *testing.T) {
	vmtest.RequireGuest(t)
	signalFrozen(t)
}

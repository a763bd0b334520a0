package remediate

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/remediate/journal"
	"github.com/vigil-agent/vigil/rules"
	"github.com/vigil-agent/vigil/test/cgtest"
	vmtest "github.com/vigil-agent/vigil/test/vm"
)

// TestCgroupV2VM runs this package's TestV2* tests in the cgroup v2 microVM.
func TestCgroupV2VM(t *testing.T) { vmtest.Run(t, "^TestV2") }

func alive(cmd *exec.Cmd) bool {
	return cmd.ProcessState == nil && syscall.Kill(cmd.Process.Pid, 0) == nil && !gone(cmd.Process.Pid)
}

// TestV2ThrottleMemoryAvoidsOOM: two groups under memory.max=64M, each with
// the same slowly leaking allocator. Without vigil the kernel OOM-kills the
// first; in the second, vigil's memory.high controller (started when the
// working set passes half the limit) keeps the allocator alive for the
// whole window, and the journal's outcome is oom_avoided.
func TestV2ThrottleMemoryAvoidsOOM(t *testing.T) {
	vmtest.RequireGuest(t)
	const window = 25 * time.Second
	control, guarded := cgtest.New(t), cgtest.New(t)
	for _, g := range []*cgtest.Group{control, guarded} {
		g.Write(t, "", "memory.max", "64M")
	}
	spec := cgtest.AllocSpec{TotalMiB: 200, StepMiB: 1, Interval: 100 * time.Millisecond}
	controlCmd, guardedCmd := control.Allocator(spec), guarded.Allocator(spec)
	cgtest.Start(t, controlCmd)
	cgtest.Start(t, guardedCmd)
	controlDone := make(chan time.Duration, 1)
	start := time.Now()
	go func() { _ = controlCmd.Wait(); controlDone <- time.Since(start) }()

	j := openJournal(t)
	x := newExecutor(t, Config{Safety: acting(guarded), Resolver: locate(guarded), Measure: []time.Duration{8 * time.Second, 18 * time.Second}}, j, nil)
	smp := newSampler()
	// max_margin 0.35: with a 64M limit and no swap, throttling past
	// memory.high under TCG still lets ~0.75 MiB/s through; the default 10%
	// margin is sized for real limits of gigabytes.
	steps := []rules.ActionStep{{Action: ActionThrottleMemory, Params: map[string]any{"interval": "500ms", "livelock_for": "5m", "min_bytes": "8Mi", "max_margin": 0.35}}}
	var controlDied time.Duration
	for time.Since(start) < window {
		snap := smp.snap(t, guarded)
		x.Observe(snap)
		if s := snap.Cgroups[0]; s.Derived.UsageRatio >= 0.5 {
			x.Handle([]rules.Finding{finding("leak", guarded, rules.Firing, steps...)})
		}
		select {
		case controlDied = <-controlDone:
		default:
		}
		time.Sleep(250 * time.Millisecond)
	}
	if controlDied == 0 {
		select {
		case controlDied = <-controlDone:
		case <-time.After(5 * time.Second):
			t.Fatalf("control allocator (no vigil) still alive after %s: the leak is too slow to prove anything", window)
		}
	}
	if n := control.KeyedValue(t, "", "memory.events", "oom_kill"); n < 1 {
		t.Errorf("control: memory.events oom_kill = %d, want the kernel to have killed it", n)
	}
	high := guarded.Read(t, "", "memory.high")
	if !alive(guardedCmd) {
		t.Fatalf("guarded allocator died within %s (control died after %s)", window, controlDied.Round(time.Millisecond))
	}
	if n := guarded.KeyedValue(t, "", "memory.events", "oom_kill"); n != 0 {
		t.Errorf("guarded: memory.events oom_kill = %d, want 0", n)
	}
	t.Logf("control OOM-killed after %s; guarded alive after %s at memory.current %s, memory.high %s, high events %d",
		controlDied.Round(time.Millisecond), window, guarded.Read(t, "", "memory.current"), high, guarded.KeyedValue(t, "", "memory.events", "high"))
	if high == "max" {
		t.Errorf("memory.high is max while the finding fires")
	}
	eventually(t, 10*time.Second, "outcome measured", func() bool {
		x.Observe(smp.snap(t, guarded))
		r, ok := lookup(j, "leak")
		return ok && r.Done
	})
	x.Handle([]rules.Finding{finding("leak", guarded, rules.Resolved)})
	eventually(t, 5*time.Second, "memory.high restored", func() bool { return guarded.Read(t, "", "memory.high") == "max" })
	r := record(t, j, "leak")
	if r.Outcome != journal.OutcomeOOMAvoided {
		t.Errorf("outcome %s, want %s; measurements %+v", r.Outcome, journal.OutcomeOOMAvoided, r.Measurements)
	}
	if len(r.Steps) < 1 || r.Steps[0].Action != ActionThrottleMemory || r.Steps[0].Result != "applied" {
		t.Errorf("steps %+v", r.Steps)
	}
	t.Logf("journal: %s; %s", r.Steps[0].Detail, r.Decision)
}

// TestV2Actions runs reclaim, freeze (released on resolve) and kill-cgroup
// on real v2 groups through the executor.
func TestV2Actions(t *testing.T) {
	vmtest.RequireGuest(t)
	t.Run("reclaim", func(t *testing.T) {
		g := cgtest.New(t)
		// Fill the page cache from inside the group with files the guest has
		// not read yet (already cached pages stay charged to their reader).
		cat := g.Command("/bin/sh", "-c", `cat /usr/local/go/pkg/tool/linux_amd64/* /usr/lib/x86_64-linux-gnu/libicudata.so.* > /dev/null 2>&1; exec sleep 600`)
		cgtest.Start(t, cat)
		eventually(t, 60*time.Second, "files read", func() bool {
			comm, _ := os.ReadFile("/proc/" + strconv.Itoa(cat.Process.Pid) + "/comm")
			return strings.TrimSpace(string(comm)) == "sleep"
		})
		file, usage := g.KeyedValue(t, "", "memory.stat", "file"), g.ReadUint(t, "", "memory.current")
		if file < 4<<20 {
			t.Fatalf("only %d bytes of page cache charged to the group", file)
		}
		j := openJournal(t)
		x := newExecutor(t, Config{Safety: acting(g), Resolver: locate(g)}, j, nil)
		x.Observe(newSampler().snap(t, g))
		x.Handle([]rules.Finding{finding("cache", g, rules.Firing, rules.ActionStep{Action: ActionReclaim, Params: map[string]any{"bytes": strconv.FormatUint(file, 10)}})})
		eventually(t, 20*time.Second, "reclaim journaled", func() bool {
			r, ok := lookup(j, "cache")
			return ok && len(r.Steps) == 1 && r.Steps[0].Result != ""
		})
		after := g.ReadUint(t, "", "memory.current")
		r := record(t, j, "cache")
		if r.Steps[0].Result != "applied" || after > usage-file/2 {
			t.Errorf("reclaim of %d bytes of page cache: memory.current %d -> %d; step %+v", file, usage, after, r.Steps[0])
		}
		t.Logf("reclaim: page cache %d bytes, memory.current %d -> %d; %s", file, usage, after, r.Steps[0].Detail)
	})
	t.Run("freeze", func(t *testing.T) {
		g := cgtest.New(t)
		cgtest.Start(t, g.Command("sleep", "600"))
		j := openJournal(t)
		x := newExecutor(t, Config{Safety: acting(g), Resolver: locate(g)}, j, nil)
		x.Observe(newSampler().snap(t, g))
		x.Handle([]rules.Finding{finding("stop", g, rules.Firing, rules.ActionStep{Action: ActionFreeze})})
		eventually(t, 10*time.Second, "frozen", func() bool { return g.KeyedValue(t, "", "cgroup.events", "frozen") == 1 })
		if applied, _ := j.Applied(); len(applied) != 1 || applied[0].Knob != string(KnobFreeze) || applied[0].Original != "0" {
			t.Errorf("applied limits %+v, want freeze with original 0", applied)
		}
		x.Handle([]rules.Finding{finding("stop", g, rules.Resolved)})
		eventually(t, 10*time.Second, "thawed", func() bool { return g.KeyedValue(t, "", "cgroup.events", "frozen") == 0 })
		eventually(t, 5*time.Second, "release journaled", func() bool {
			r, ok := lookup(j, "stop")
			return ok && len(r.Steps) == 2 && r.Steps[1].Action == "freeze:release"
		})
	})
	t.Run("kill-cgroup", func(t *testing.T) {
		g := cgtest.New(t)
		for range 3 {
			cgtest.Start(t, g.Command("sleep", "600"))
		}
		eventually(t, 10*time.Second, "3 processes", func() bool { return len(g.Procs(t)) == 3 })
		j := openJournal(t)
		x := newExecutor(t, Config{Safety: acting(g), Resolver: locate(g), Measure: []time.Duration{time.Second}}, j, nil)
		smp := newSampler()
		x.Observe(smp.snap(t, g))
		x.Handle([]rules.Finding{finding("kill", g, rules.Firing, rules.ActionStep{Action: ActionKillCgroup})})
		eventually(t, 10*time.Second, "cgroup empty", func() bool { return g.KeyedValue(t, "", "cgroup.events", "populated") == 0 })
		eventually(t, 10*time.Second, "outcome", func() bool {
			x.Observe(smp.snap(t, g))
			r, ok := lookup(j, "kill")
			return ok && r.Done
		})
		if r := record(t, j, "kill"); r.Outcome != journal.OutcomeTerminated || !strings.Contains(r.Steps[0].Detail, "3 processes") {
			t.Errorf("outcome %s detail %q, want terminated, 3 processes", r.Outcome, r.Steps[0].Detail)
		}
	})
}

// TestV2ThrottleWatchdogReleasesOnLivelock: a leak throttled at memory.high
// with nothing reclaimable stalls its tasks fully (memory.pressure full);
// the watchdog releases memory.high at once when that lasts livelock_for,
// and the kernel's OOM killer, not a livelock, ends it. The journal shows
// the release and the outcome oom_killed.
func TestV2ThrottleWatchdogReleasesOnLivelock(t *testing.T) {
	vmtest.RequireGuest(t)
	g := cgtest.New(t)
	g.Write(t, "", "memory.max", "64M")
	cmd := g.Allocator(cgtest.AllocSpec{TotalMiB: 200, StepMiB: 1, Interval: 100 * time.Millisecond})
	cgtest.Start(t, cmd)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	j := openJournal(t)
	// One measurement, late enough to see the OOM kill the release lets
	// happen (the kill must be on this record, not a separate miss).
	x := newExecutor(t, Config{Safety: acting(g), Resolver: locate(g), Measure: []time.Duration{20 * time.Second}}, j, nil)
	smp := newSampler()
	steps := []rules.ActionStep{{Action: ActionThrottleMemory, Params: map[string]any{"interval": "500ms", "livelock_full": 20, "livelock_for": "2s", "min_bytes": "8Mi", "max_margin": 0.35}}}
	start := time.Now()
	var maxFull float64
	for alive := true; alive && time.Since(start) < 60*time.Second; {
		snap := smp.snap(t, g)
		x.Observe(snap)
		if len(snap.Cgroups) == 1 {
			maxFull = max(maxFull, snap.Cgroups[0].Pressure.Full.Avg10)
			if snap.Cgroups[0].Derived.UsageRatio >= 0.5 {
				x.Handle([]rules.Finding{finding("livelock", g, rules.Firing, steps...)})
			}
		}
		select {
		case <-done:
			alive = false
		case <-time.After(250 * time.Millisecond):
		}
	}
	eventually(t, 5*time.Second, fmt.Sprintf("watchdog release journaled (max full avg10 %.1f%%)", maxFull), func() bool {
		r, ok := lookup(j, "livelock")
		return ok && len(r.Steps) == 2
	})
	released := time.Since(start)
	r := record(t, j, "livelock")
	if s := r.Steps[1]; s.Action != "throttle-memory:release" || !strings.Contains(s.Detail, "watchdog") || !strings.Contains(s.Detail, "restored to max") {
		t.Errorf("release step %+v", s)
	}
	if high := g.Read(t, "", "memory.high"); high != "max" {
		t.Errorf("memory.high = %s after the watchdog, want max", high)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("allocator alive 30s after the watchdog released memory.high")
	}
	eventually(t, 30*time.Second, "outcome", func() bool {
		x.Observe(smp.snap(t, g))
		r, ok := lookup(j, "livelock")
		return ok && r.Done
	})
	if r := record(t, j, "livelock"); r.Outcome != journal.OutcomeOOMKilled || r.Measurements[0].OOMKillsSince == 0 {
		t.Errorf("outcome %s %+v, want %s", r.Outcome, r.Measurements, journal.OutcomeOOMKilled)
	}
	if misses, _ := j.List(journal.Filter{Kind: journal.KindOOMMiss}); len(misses) != 0 {
		t.Errorf("the OOM kill was also journaled as a separate miss: %+v", misses)
	}
	t.Logf("allocator gone %s after start (max full avg10 %.1f%%): %s", released.Round(time.Millisecond), maxFull, r.Steps[1].Detail)
}

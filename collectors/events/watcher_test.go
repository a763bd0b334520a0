package events_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/collectors/events"
	"github.com/vigil-agent/vigil/collectors/events/eventstest"
	"github.com/vigil-agent/vigil/test/cgtest"
	"github.com/vigil-agent/vigil/test/testenv"
	vmtest "github.com/vigil-agent/vigil/test/vm"
)

func TestMain(m *testing.M) { cgtest.Main(m) }

// startWatcher runs a watcher for the duration of the test.
func startWatcher(t *testing.T) *events.Watcher {
	t.Helper()
	w, err := events.NewWatcher(slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return w
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// waitEvent returns the first event of kind for path, failing after timeout.
func waitEvent(t *testing.T, w *events.Watcher, kind, path string, timeout time.Duration) collectors.Event {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case ev, ok := <-w.Events():
			if !ok {
				t.Fatal("events channel closed")
			}
			if ev.Kind == kind && ev.Path == path {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %s event for %s within %v (stats %+v)", kind, path, timeout, w.Stats())
		}
	}
}

func requireV1(t *testing.T) {
	t.Helper()
	if cgtest.Version() != 1 {
		t.Skip("cgroup v1 interface")
	}
}

// TestThresholdEvent: a threshold 8 MiB above the group's usage fires when an
// allocator grows through it. Latencies are logged, not asserted.
func TestThresholdEvent(t *testing.T) {
	requireV1(t)
	p := eventstest.NewProbe(t)
	var lat []time.Duration
	for range 5 {
		lat = append(lat, p.ThresholdTrial(t))
	}
	s := eventstest.Summarize(lat)
	t.Logf("usage crossing -> event: n=%d p50=%v p99=%v max=%v (all %v)", s.N, s.P50, s.P99, s.Max, lat)
	if got := p.W.Stats().Events[collectors.EventThreshold]; got < 5 {
		t.Errorf("Stats().Events[threshold] = %d, want >= 5", got)
	}
}

// TestOOMEvent: the test's own cgroup, limited to 64 MiB, OOM-kills an
// allocator of 200 MiB; the oom_control notification must arrive.
func TestOOMEvent(t *testing.T) {
	requireV1(t)
	w := startWatcher(t)
	g := cgtest.New(t)
	g.Write(t, "memory", "memory.limit_in_bytes", "64M")
	if err := w.WatchOOM(g.Path(), g.Dir("memory")); err != nil {
		t.Fatal(err)
	}
	cmd := g.Allocator(cgtest.AllocSpec{TotalMiB: 200, StepMiB: 4})
	cgtest.Start(t, cmd)
	started := time.Now()
	ev := waitEvent(t, w, collectors.EventOOM, g.Path(), 30*time.Second)
	err := cmd.Wait()
	exited := time.Now()
	if err == nil {
		t.Fatal("allocator exited cleanly under a 64 MiB limit")
	}
	if n := g.KeyedValue(t, "memory", "memory.oom_control", "oom_kill"); n < 1 {
		t.Errorf("oom_control oom_kill = %d, want >= 1", n)
	}
	t.Logf("oom event %v after allocator start; allocator reaped %v after the event", ev.Time.Sub(started), exited.Sub(ev.Time))
}

// TestNodePressureTrigger registers a node-wide PSI trigger with a 1 s
// window: without CAP_SYS_RESOURCE the kernel refuses it and the watcher
// must retry with 2 s and list what was accepted.
func TestNodePressureTrigger(t *testing.T) {
	if _, err := os.Stat(events.NodePressureFile); err != nil {
		t.Skipf("no PSI on this kernel: %v", err)
	}
	w := startWatcher(t)
	stall, window := 100*time.Millisecond, time.Second
	if err := w.WatchPressure("", "", stall, window); err != nil {
		t.Fatalf("kernel refused the node PSI trigger: %v", err)
	}
	regs := w.Registrations()
	if len(regs) != 1 {
		t.Fatalf("Registrations() = %+v, want one", regs)
	}
	got := regs[0]
	if got.Kind != collectors.EventPSI || got.File != events.NodePressureFile || got.Stall != stall || got.RequestedWindow != window {
		t.Errorf("registration %+v, want psi on %s stall %v requested window %v", got, events.NodePressureFile, stall, window)
	}
	if got.Window != window && got.Window != 2*time.Second {
		t.Errorf("accepted window %v, want %v or the 2 s rounding", got.Window, window)
	}
	t.Logf("node PSI trigger accepted: stall %v window %v (requested %v)", got.Stall, got.Window, got.RequestedWindow)

	// Bad parameters are refused before reaching the kernel.
	for _, tc := range []struct{ stall, window time.Duration }{
		{0, 2 * time.Second}, {3 * time.Second, 2 * time.Second}, {time.Millisecond, 11 * time.Second}, {time.Millisecond, time.Millisecond},
	} {
		if err := w.WatchPressure("", "", tc.stall, tc.window); err == nil {
			t.Errorf("WatchPressure(stall %v, window %v) accepted", tc.stall, tc.window)
		}
	}
	w.Unwatch("")
	if n := w.Stats().Registrations; n != 0 {
		t.Errorf("after Unwatch: %d registrations", n)
	}
}

// TestNoFDLeak: watches on a cgroup are released both by Unwatch and by the
// cgroup's removal while still registered (the kernel signals the eventfds on
// rmdir; the watcher must notice the directory is gone and drop them without
// reporting an event).
func TestNoFDLeak(t *testing.T) {
	requireV1(t)
	w := startWatcher(t)
	before := countFDs(t)

	t.Run("unwatch", func(t *testing.T) {
		g := cgtest.New(t)
		for i := range 3 {
			if err := w.WatchThreshold(g.Path(), g.Dir("memory"), uint64(64+i)<<20); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.WatchOOM(g.Path(), g.Dir("memory")); err != nil {
			t.Fatal(err)
		}
		if got := countFDs(t); got != before+4 {
			t.Errorf("fds with 4 watches = %d, want %d", got, before+4)
		}
		w.Unwatch(g.Path())
		if got := countFDs(t); got != before {
			t.Errorf("fds after Unwatch = %d, want %d", got, before)
		}
	})

	t.Run("rmdir while registered", func(t *testing.T) {
		g := cgtest.New(t)
		if err := w.WatchThreshold(g.Path(), g.Dir("memory"), 64<<20); err != nil {
			t.Fatal(err)
		}
		if err := w.WatchOOM(g.Path(), g.Dir("memory")); err != nil {
			t.Fatal(err)
		}
		removedBefore := w.Stats().Removed
		if err := os.Remove(g.Dir("memory")); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 10*time.Second, "watches of the removed cgroup dropped", func() bool { return w.Stats().Registrations == 0 })
		if got := w.Stats().Removed - removedBefore; got != 2 {
			t.Errorf("Removed grew by %d, want 2", got)
		}
		if got := countFDs(t); got != before {
			t.Errorf("fds after rmdir = %d, want %d", got, before)
		}
		select {
		case ev := <-w.Events():
			t.Errorf("removal reported as an event: %+v", ev)
		default:
		}
	})

	t.Run("watch on a missing cgroup", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "gone")
		if err := w.WatchOOM("/gone", dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("WatchOOM on a missing dir: %v, want ErrNotExist", err)
		}
		if got := countFDs(t); got != before {
			t.Errorf("fds after a failed watch = %d, want %d", got, before)
		}
	})
}

// TestRunStopsAndReleases: after Run returns, the channel is closed, every
// descriptor is released and watching fails with ErrClosed.
func TestRunStopsAndReleases(t *testing.T) {
	before := countFDs(t)
	w, err := events.NewWatcher(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(events.NodePressureFile); err == nil {
		if err := w.WatchPressure("", "", 100*time.Millisecond, 2*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if _, ok := <-w.Events(); ok {
		t.Error("Events channel still open after Run returned")
	}
	if got := countFDs(t); got != before {
		t.Errorf("fds after Run returned = %d, want %d", got, before)
	}
	if err := w.WatchPressure("", "", 100*time.Millisecond, 2*time.Second); !errors.Is(err, events.ErrClosed) {
		t.Errorf("WatchPressure after stop: %v, want ErrClosed", err)
	}
	if err := w.Run(context.Background()); !errors.Is(err, events.ErrClosed) {
		t.Errorf("second Run: %v, want ErrClosed", err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("Close after Run: %v", err)
	}
}

// TestSlowConsumerCoalesces: with nobody reading, the loop keeps running;
// events for the same cgroup coalesce once the channel is full.
func TestSlowConsumerCoalesces(t *testing.T) {
	requireV1(t)
	w := startWatcher(t)
	g := cgtest.New(t)
	// Thresholds every 256 KiB from 8 MiB to 40 MiB: 128 registrations for
	// one cgroup, crossed up by the allocator, down when it is killed.
	for b := uint64(8 << 20); b < 40<<20; b += 256 << 10 {
		if err := w.WatchThreshold(g.Path(), g.Dir("memory"), b); err != nil {
			t.Fatal(err)
		}
	}
	for round := 0; round < 3; round++ {
		cmd := g.Allocator(cgtest.AllocSpec{TotalMiB: 48, StepMiB: 1, Hold: time.Minute})
		cgtest.Start(t, cmd)
		testenv.Eventually(t, 10*time.Second, "allocator above 40 MiB", func() bool { return g.ReadUint(t, "memory", "memory.usage_in_bytes") > 44<<20 })
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	var s events.Stats
	testenv.Eventually(t, 10*time.Second, "events counted", func() bool {
		s = w.Stats()
		return s.Events[collectors.EventThreshold] > 256
	})
	t.Logf("stats after 3 rounds without a reader: %+v", s)
	if s.Coalesced == 0 {
		t.Errorf("no events coalesced with %d events and a channel of 256", s.Events[collectors.EventThreshold])
	}
	// The loop is still alive: draining the channel works and new events
	// keep arriving.
	n := 0
	for len(w.Events()) > 0 {
		<-w.Events()
		n++
	}
	if n != cap(w.Events()) {
		t.Errorf("drained %d buffered events, want a full channel of %d", n, cap(w.Events()))
	}
	// The coalesced backlog is flushed once there is room.
	waitEvent(t, w, collectors.EventThreshold, g.Path(), 5*time.Second)
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// BenchmarkThresholdLatency measures usage crossing -> event delivery on
// real v1 cgroups, one trial per iteration. Run with -benchtime=40x.
func BenchmarkThresholdLatency(b *testing.B) {
	p := eventstest.NewProbe(b)
	var lat []time.Duration
	for b.Loop() {
		lat = append(lat, p.ThresholdTrial(b))
	}
	s := eventstest.Summarize(lat)
	b.ReportMetric(float64(s.P50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(s.P99.Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(s.Max.Microseconds())/1000, "max-ms")
}

// TestCgroupV2VM runs the TestV2* tests of this package in the cgroup v2
// microVM.
func TestCgroupV2VM(t *testing.T) { vmtest.Run(t, "^TestV2") }

// TestV2MemoryEvents (guest): memory.events changes when the group's
// allocator is OOM-killed under memory.max, and the inotify watch reports
// it; removing the cgroup drops the watch (IN_IGNORED).
func TestV2MemoryEvents(t *testing.T) {
	vmtest.RequireGuest(t)
	w := startWatcher(t)
	g := cgtest.New(t)
	g.Write(t, "", "memory.max", "32M")
	if err := w.WatchMemoryEvents(g.Path(), g.Dir("")); err != nil {
		t.Fatal(err)
	}
	// Watching twice is a no-op.
	if err := w.WatchMemoryEvents(g.Path(), g.Dir("")); err != nil {
		t.Fatal(err)
	}
	if n := w.Stats().Registrations; n != 1 {
		t.Errorf("registrations after watching twice = %d, want 1", n)
	}
	cmd := g.Allocator(cgtest.AllocSpec{TotalMiB: 128, StepMiB: 4, Hold: time.Minute})
	cgtest.Start(t, cmd)
	started := time.Now()
	ev := waitEvent(t, w, collectors.EventMemoryEvents, g.Path(), 60*time.Second)
	t.Logf("memory.events change reported %v after allocator start", ev.Time.Sub(started))
	if err := cmd.Wait(); err == nil {
		t.Fatal("allocator of 128 MiB exited cleanly under memory.max 32M")
	}
	if n := g.KeyedValue(t, "", "memory.events", "oom_kill"); n < 1 {
		t.Errorf("memory.events oom_kill = %d, want >= 1", n)
	}

	removedBefore := w.Stats().Removed
	if err := os.Remove(g.Dir("")); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "memory.events watch dropped after rmdir", func() bool { return w.Stats().Registrations == 0 })
	if got := w.Stats().Removed - removedBefore; got != 1 {
		t.Errorf("Removed grew by %d, want 1", got)
	}
}

// TestV2PressureTrigger (guest): a per-cgroup memory.pressure trigger with a
// sub-second window (accepted as is: root in the VM has CAP_SYS_RESOURCE)
// fires when an allocator goes over memory.high and is throttled; removing
// the cgroup while registered drops the watch and releases its fd.
func TestV2PressureTrigger(t *testing.T) {
	vmtest.RequireGuest(t)
	w := startWatcher(t)
	before := countFDs(t)
	g := cgtest.New(t)
	g.Write(t, "", "memory.high", "32M")
	file := filepath.Join(g.Dir(""), "memory.pressure")
	stall, window := 50*time.Millisecond, 500*time.Millisecond
	if err := w.WatchPressure(g.Path(), file, stall, window); err != nil {
		t.Fatal(err)
	}
	if regs := w.Registrations(); len(regs) != 1 || regs[0].Window != window || regs[0].Stall != stall {
		t.Errorf("Registrations() = %+v, want one with stall %v window %v", regs, stall, window)
	}
	// Only slightly over memory.high: throttling without swap is slow under
	// TCG, and a stall is all the test needs.
	cmd := g.Allocator(cgtest.AllocSpec{TotalMiB: 36, StepMiB: 1, Hold: time.Minute})
	cgtest.Start(t, cmd)
	started := time.Now()
	ev := waitEvent(t, w, collectors.EventPSI, g.Path(), 60*time.Second)
	t.Logf("PSI trigger fired %v after allocator start; memory.pressure: %s", ev.Time.Sub(started), g.Read(t, "", "memory.pressure"))
	if n := g.KeyedValue(t, "", "memory.events", "high"); n < 1 {
		t.Errorf("memory.events high = %d, want >= 1", n)
	}

	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	testenv.Eventually(t, 10*time.Second, "group empty", func() bool { return len(g.Procs(t)) == 0 })
	if err := os.Remove(g.Dir("")); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "PSI watch dropped after rmdir", func() bool { return w.Stats().Registrations == 0 })
	if got := countFDs(t); got != before {
		t.Errorf("fds after rmdir = %d, want %d", got, before)
	}
	if s := w.Stats(); s.Errors != 0 {
		t.Errorf("stats %+v: removal counted as an error", s)
	}
}

// TestV2NodePressureAnyWindow (guest): with CAP_SYS_RESOURCE the node-wide
// trigger keeps its sub-2 s window.
func TestV2NodePressureAnyWindow(t *testing.T) {
	vmtest.RequireGuest(t)
	w := startWatcher(t)
	if err := w.WatchPressure("", "", 100*time.Millisecond, time.Second); err != nil {
		t.Fatal(err)
	}
	if regs := w.Registrations(); len(regs) != 1 || regs[0].Window != time.Second {
		t.Errorf("Registrations() = %+v, want the 1 s window kept", regs)
	}
}

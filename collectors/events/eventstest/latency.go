// Package eventstest measures how fast vigil's event watcher reports a cgroup
// v1 usage threshold crossing, on real cgroups made by test/cgtest. Tests and
// benchmarks of any package can use it; the package's TestMain must call
// cgtest.Main (the allocator re-executes the test binary).
package eventstest

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/collectors/events"
	"github.com/vigil-agent/vigil/test/cgtest"
)

// Probe owns a running Watcher whose events only it consumes.
type Probe struct {
	W *events.Watcher
}

// NewProbe starts a watcher for the duration of tb. It skips tb on cgroup v2
// (usage thresholds are a v1 interface) and without root.
func NewProbe(tb testing.TB) *Probe {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("eventstest: needs root for cgroups")
	}
	if cgtest.Version() != 1 {
		tb.Skip("eventstest: usage thresholds need cgroup v1")
	}
	w, err := events.NewWatcher(slog.New(slog.DiscardHandler))
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("watcher Run: %v", err)
		}
	})
	return &Probe{W: w}
}

// ThresholdTrial creates a cgroup, registers a usage threshold 8 MiB above
// its current usage, starts an allocator that grows through it, and returns
// the time from the crossing (seen by a tight pread loop on
// memory.usage_in_bytes) to the event's timestamp. It fails tb if no event
// arrives within 10 s.
func (p *Probe) ThresholdTrial(tb testing.TB) time.Duration {
	tb.Helper()
	g := cgtest.New(tb)
	dir := g.Dir("memory")
	usage, err := os.Open(filepath.Join(dir, "memory.usage_in_bytes"))
	if err != nil {
		tb.Fatal(err)
	}
	defer usage.Close()
	threshold := readUsage(tb, usage) + 8<<20
	if err := p.W.WatchThreshold(g.Path(), dir, threshold); err != nil {
		tb.Fatal(err)
	}

	crossed := make(chan time.Time, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		buf := make([]byte, 32)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, err := usage.ReadAt(buf, 0)
			if n == 0 && err != nil {
				return
			}
			if v, err := strconv.ParseUint(strings.TrimSpace(string(buf[:n])), 10, 64); err == nil && v >= threshold {
				crossed <- time.Now()
				return
			}
		}
	}()

	cmd := g.Allocator(cgtest.AllocSpec{TotalMiB: 16, StepMiB: 1, Interval: time.Millisecond, Hold: time.Minute})
	cgtest.Start(tb, cmd)
	// Unwatch before the kill, so the downward crossing is not reported.
	defer func() { p.W.Unwatch(g.Path()); _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	var eventAt time.Time
	timeout := time.After(10 * time.Second)
	for eventAt.IsZero() {
		select {
		case ev, ok := <-p.W.Events():
			if !ok {
				tb.Fatal("eventstest: events channel closed")
			}
			if ev.Path == g.Path() {
				eventAt = ev.Time
			}
		case <-timeout:
			tb.Fatalf("eventstest: no threshold event for %s at %d bytes within 10s", g.Path(), threshold)
		}
	}
	select {
	case at := <-crossed:
		return eventAt.Sub(at)
	case <-time.After(10 * time.Second):
		tb.Fatalf("eventstest: event arrived but usage never read >= %d", threshold)
		return 0
	}
}

func readUsage(tb testing.TB, f *os.File) uint64 {
	tb.Helper()
	buf := make([]byte, 32)
	n, _ := f.ReadAt(buf, 0)
	v, err := strconv.ParseUint(strings.TrimSpace(string(buf[:n])), 10, 64)
	if err != nil {
		tb.Fatalf("eventstest: %s: %v", f.Name(), err)
	}
	return v
}

// Summary is the distribution of a set of latencies.
type Summary struct {
	N             int
	P50, P99, Max time.Duration
}

// Summarize computes nearest-rank percentiles.
func Summarize(lat []time.Duration) Summary {
	if len(lat) == 0 {
		return Summary{}
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return Summary{N: len(s), P50: rank(0.50), P99: rank(0.99), Max: s[len(s)-1]}
}

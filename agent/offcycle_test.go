package agent

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/collectors"
)

func TestOffCycleQueue(t *testing.T) {
	const minInterval = 50 * time.Millisecond
	t0 := time.Date(2026, 11, 26, 2, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	ev := func(path string) collectors.Event {
		return collectors.Event{Kind: collectors.EventThreshold, Path: path}
	}
	type step struct {
		ms        int
		events    []string // paths; "" = node-wide
		wantFull  bool
		wantPaths []string
		wantNext  int // ms; -1 = nothing left
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"a cgroup's event never waits for another's", []step{
			{ms: 0, events: []string{"/a"}, wantPaths: []string{"/a"}, wantNext: -1},
			// /a going back under its threshold 10 ms later waits for its own
			// interval; /b crossing at the same moment goes at once.
			{ms: 10, events: []string{"/a", "/b"}, wantPaths: []string{"/b"}, wantNext: 50},
			{ms: 30, events: []string{"/c"}, wantPaths: []string{"/c"}, wantNext: 50},
			{ms: 50, wantPaths: []string{"/a"}, wantNext: -1},
		}},
		{"repeated events of one cgroup coalesce", []step{
			{ms: 0, events: []string{"/a"}, wantPaths: []string{"/a"}, wantNext: -1},
			{ms: 5, events: []string{"/a"}, wantNext: 50},
			{ms: 20, events: []string{"/a"}, wantNext: 50},
			{ms: 50, wantPaths: []string{"/a"}, wantNext: -1},
			{ms: 120, events: []string{"/a"}, wantPaths: []string{"/a"}, wantNext: -1},
		}},
		{"a node-wide event takes a full snapshot covering pending cgroups", []step{
			{ms: 0, events: []string{"/a"}, wantPaths: []string{"/a"}, wantNext: -1},
			{ms: 10, events: []string{"/a", ""}, wantFull: true, wantNext: -1},
			{ms: 20, events: []string{""}, wantNext: 60},
			{ms: 30, events: []string{"/b"}, wantPaths: []string{"/b"}, wantNext: 60},
			{ms: 60, wantFull: true, wantNext: -1},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := newOffCycleQueue()
			for _, s := range tt.steps {
				for _, p := range s.events {
					q.add(ev(p))
				}
				b, next := q.take(at(s.ms), minInterval, nil)
				if b.full != s.wantFull || !slices.Equal(b.paths, s.wantPaths) {
					t.Errorf("at %d ms: full %v paths %v, want full %v paths %v", s.ms, b.full, b.paths, s.wantFull, s.wantPaths)
				}
				if (b.full || len(b.paths) > 0) && b.trigger == nil {
					t.Errorf("at %d ms: a batch without its trigger", s.ms)
				}
				if b.trigger != nil && !b.full && b.trigger.Path != b.paths[0] {
					t.Errorf("at %d ms: trigger %q is not a swept cgroup %v", s.ms, b.trigger.Path, b.paths)
				}
				switch {
				case s.wantNext < 0 && !next.IsZero():
					t.Errorf("at %d ms: next due %v, want nothing left", s.ms, next.Sub(t0))
				case s.wantNext >= 0 && !next.Equal(at(s.wantNext)):
					t.Errorf("at %d ms: next due %v, want %d ms", s.ms, next.Sub(t0), s.wantNext)
				}
			}
		})
	}
}

// TestOffCycleBudget: a storm of distinct cgroups is swept in bursts, at
// most offCycleBudget cgroups per second, and nothing is dropped.
func TestOffCycleBudget(t *testing.T) {
	q := newOffCycleQueue()
	t0 := time.Date(2026, 11, 26, 2, 0, 0, 0, time.UTC)
	const n = 1000
	for i := range n {
		q.add(collectors.Event{Kind: collectors.EventThreshold, Path: fmt.Sprintf("/storm/c%04d", i)})
	}
	now, swept, batches := t0, map[string]bool{}, 0
	for {
		b, next := q.take(now, 50*time.Millisecond, nil)
		if len(b.paths) > int(offCycleBurst) {
			t.Fatalf("a batch of %d cgroups, burst is %v", len(b.paths), offCycleBurst)
		}
		for _, p := range b.paths {
			if swept[p] {
				t.Fatalf("%s swept twice", p)
			}
			swept[p] = true
		}
		if len(b.paths) > 0 {
			batches++
		}
		if next.IsZero() {
			break
		}
		if !next.After(now) {
			t.Fatalf("next due %v is not after now %v", next, now)
		}
		now = next
	}
	if len(swept) != n {
		t.Fatalf("swept %d of %d cgroups", len(swept), n)
	}
	// 200 at once, then 800 more at 1000/s.
	if took, want := now.Sub(t0), 800*time.Millisecond; took < want-time.Millisecond || took > want+50*time.Millisecond {
		t.Errorf("the storm took %v of budget, want about %v", took, want)
	}
	if batches > 10 {
		t.Errorf("%d batches: the rest should go in bursts, not one by one", batches)
	}
}

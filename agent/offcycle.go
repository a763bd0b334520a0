package agent

import (
	"sort"
	"time"

	"github.com/vigil-agent/vigil/collectors"
)

// Off-cycle snapshots answer kernel events between ticks. Their cost is
// bounded in two ways:
//   - per cgroup: at most one off-cycle sweep of a cgroup per
//     events.min_interval (a cgroup oscillating around its v1 threshold
//     fires at every crossing, both ways);
//   - per node: at most offCycleBudget cgroup sweeps per second, in bursts
//     of offCycleBurst (each is ~15–30 µs of reads plus its rules).
//
// An event for one cgroup never waits for another cgroup's: with one
// node-wide interval, the event of a cgroup going back under its
// threshold (v1 thresholds fire both ways) delayed the next cgroup's
// crossing by up to min_interval.
const (
	offCycleBudget = 1000.0
	offCycleBurst  = 200.0
)

// offCycleQueue holds the events waiting for an off-cycle snapshot and
// decides which are due. It does no I/O; the loop goroutine owns it.
type offCycleQueue struct {
	pending map[string]collectors.Event // cgroup path ("" = node-wide) -> first event
	last    map[string]time.Time        // cgroup path ("" = node-wide) -> last off-cycle sweep
	tokens  float64
	tokenAt time.Time
}

func newOffCycleQueue() *offCycleQueue {
	return &offCycleQueue{pending: map[string]collectors.Event{}, last: map[string]time.Time{}, tokens: offCycleBurst}
}

// add queues ev; a node-wide event (no path) asks for a full snapshot.
func (q *offCycleQueue) add(ev collectors.Event) {
	if _, ok := q.pending[ev.Path]; !ok {
		q.pending[ev.Path] = ev
	}
}

// offCycleBatch is what take says to sweep now.
type offCycleBatch struct {
	full    bool
	paths   []string
	trigger *collectors.Event
}

// take returns what is due at now (paths appended to dst, sorted) and when
// the rest is due (zero when nothing is left). A due node-wide event takes
// a full snapshot, which covers every pending cgroup.
func (q *offCycleQueue) take(now time.Time, minInterval time.Duration, dst []string) (offCycleBatch, time.Time) {
	b := offCycleBatch{paths: dst[:0]}
	if len(q.pending) == 0 {
		return b, time.Time{}
	}
	q.refill(now)
	for p, t := range q.last {
		if now.Sub(t) >= minInterval {
			delete(q.last, p)
		}
	}
	if ev, ok := q.pending[""]; ok {
		if _, recent := q.last[""]; !recent {
			b.full, b.trigger = true, &ev
			q.last[""] = now
			clear(q.pending)
			return b, time.Time{}
		}
	}
	var next time.Time
	for p := range q.pending { // a node-wide event here is a recent one

		if t, recent := q.last[p]; recent {
			next = earliest(next, t.Add(minInterval))
			continue
		}
		b.paths = append(b.paths, p)
	}
	sort.Strings(b.paths)
	if over := len(b.paths) - int(q.tokens+1e-9); over > 0 {
		b.paths = b.paths[:len(b.paths)-over]
		// Wait until the rest can go as one batch (never longer than a
		// full burst takes to refill).
		need := min(float64(over), offCycleBurst) - (q.tokens - float64(len(b.paths)))
		next = earliest(next, now.Add(time.Duration(need/offCycleBudget*float64(time.Second))))
	}
	for _, p := range b.paths {
		if b.trigger == nil {
			ev := q.pending[p]
			b.trigger = &ev
		}
		delete(q.pending, p)
		q.last[p] = now
	}
	q.tokens -= float64(len(b.paths))
	return b, next
}

func (q *offCycleQueue) refill(now time.Time) {
	if !q.tokenAt.IsZero() {
		q.tokens = min(offCycleBurst, q.tokens+now.Sub(q.tokenAt).Seconds()*offCycleBudget)
	}
	q.tokenAt = now
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

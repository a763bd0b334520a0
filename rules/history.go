package rules

import (
	"math"
	"strings"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"

	"github.com/vigil-agent/vigil/collectors"
)

// DefaultHistorySize is the number of samples kept per signal per target.
const DefaultHistorySize = 64

// statSlots marks the cgroup signals read from memory.stat ("stat.*").
// The collector may reuse a read of a few seconds for a quiet cgroup, so
// their history is stamped with the read's time, not the snapshot's:
// rate() and friends then see one point per read at its true time instead
// of a flat run and a step.
var statSlots = func() []bool {
	slots := make([]bool, len(collectors.CgroupSignals))
	for i, s := range collectors.CgroupSignals {
		slots[i] = strings.HasPrefix(s.Name, "stat.")
	}
	return slots
}()

func statSignal(id signalID) bool {
	return id >= 0 && int(id) < len(statSlots) && statSlots[id]
}

// statReadAt is when sample's memory.stat values were read, in unix ns
// (now when they were read for this snapshot).
func statReadAt(c *collectors.CgroupSample, now int64) int64 {
	if age := c.Derived.StatAgeSeconds; age > 0 {
		return now - int64(math.Round(age*1e9))
	}
	return now
}

// series is one target's signal values: the current tick's, boxed once for
// CEL, and the history rings of the signals the rules use in functions.
type series struct {
	vals  []float64
	boxed []ref.Val
	// rings is indexed like vals; nil entries are signals without history.
	rings []*ring
	// memo holds this tick's history function results: rules often share
	// rate(x, w) and the like.
	memo []memoEntry
}

type memoEntry struct {
	tick    uint64
	kind    fnKind
	spec    int64
	horizon float64
	val     float64
}

const maxMemo = 16

func (s *series) memoGet(tick uint64, kind fnKind, spec int64, horizon float64) (float64, bool) {
	for i := range s.memo {
		m := &s.memo[i]
		if m.tick == tick && m.kind == kind && m.spec == spec && m.horizon == horizon {
			return m.val, true
		}
	}
	return 0, false
}

func (s *series) memoPut(tick uint64, kind fnKind, spec int64, horizon float64, v float64) {
	e := memoEntry{tick: tick, kind: kind, spec: spec, horizon: horizon, val: v}
	for i := range s.memo {
		if s.memo[i].tick != tick {
			s.memo[i] = e
			return
		}
	}
	if len(s.memo) < maxMemo {
		s.memo = append(s.memo, e)
	}
}

func newSeries(n int) *series {
	s := &series{vals: make([]float64, n), boxed: make([]ref.Val, n)}
	for i := range s.vals {
		s.vals[i] = math.NaN()
	}
	return s
}

// grow extends the series to n signals (log patterns a reload added).
func (s *series) grow(n int) {
	for len(s.vals) < n {
		s.vals = append(s.vals, math.NaN())
		s.boxed = append(s.boxed, nil)
		if s.rings != nil {
			s.rings = append(s.rings, nil)
		}
	}
}

// set stores a current value. Boxing for the CEL interpreter is lazy
// (boxedAt): conditions on the native path never need it.
func (s *series) set(i int, v float64) { s.vals[i] = v }

// boxedAt returns the value as a CEL value, reboxing only when it changed.
func (s *series) boxedAt(i int) ref.Val {
	v := s.vals[i]
	if b, ok := s.boxed[i].(types.Double); ok && float64(b) == v {
		return b
	}
	b := types.Double(v)
	s.boxed[i] = b
	return b
}

// ring is a fixed-size history of one signal of one target. Committed
// points are at least step apart, so a small ring covers the longest window
// a rule asks for; the newest slot always holds the latest tick (it is
// overwritten until step has passed since the one before it).
//
// Counters are stored reset-adjusted (a value lower than the previous one
// is a reset, as in Prometheus), so increase and rate stay right when a
// cgroup is recreated under the same path.
type ring struct {
	ts      []int64 // unix nanoseconds
	vs      []float64
	head    int
	n       int
	step    int64
	counter bool
	offset  float64
	lastRaw float64
}

func newRing(size int, step int64, counter bool) *ring {
	if size < 3 {
		size = 3
	}
	return &ring{ts: make([]int64, size), vs: make([]float64, size), step: step, counter: counter, head: -1}
}

// adjusted is the reset-adjusted value a raw counter reading would be
// stored as.
func (r *ring) adjusted(raw float64) float64 {
	if !r.counter {
		return raw
	}
	if r.n > 0 && raw < r.lastRaw {
		return raw + r.offset + r.lastRaw
	}
	return raw + r.offset
}

func (r *ring) push(t int64, raw float64) {
	if r.n > 0 && t < r.ts[r.head] {
		return // out of order (an older partial snapshot): ignore
	}
	if r.counter && math.IsNaN(raw) {
		return // no reading (e.g. no log files yet): no sample, as in Prometheus
	}
	v := r.adjusted(raw)
	if r.counter {
		if r.n > 0 && raw < r.lastRaw {
			r.offset += r.lastRaw
		}
		r.lastRaw = raw
	}
	size := len(r.ts)
	if r.n > 0 && t == r.ts[r.head] {
		r.vs[r.head] = v
		return
	}
	if r.n >= 2 {
		prev := (r.head - 1 + size) % size
		if t-r.ts[prev] < r.step {
			r.ts[r.head], r.vs[r.head] = t, v
			return
		}
	}
	r.head = (r.head + 1) % size
	r.ts[r.head], r.vs[r.head] = t, v
	if r.n < size {
		r.n++
	}
}

// at returns the k-th newest point (k = 0 is the newest).
func (r *ring) at(k int) (int64, float64) {
	i := r.head - k
	if i < 0 {
		i += len(r.ts)
	}
	return r.ts[i], r.vs[i]
}

func (r *ring) tsAt(k int) int64 {
	i := r.head - k
	if i < 0 {
		i += len(r.ts)
	}
	return r.ts[i]
}

// span returns how many stored points lie in [from, now) and the index (k)
// of the newest of them; points at or after now are skipped (Verify on a
// snapshot the engine already evaluated). Points are in time order, so both
// ends are found by binary search.
func (r *ring) span(from, now int64) (count, newest int) {
	// newest: the first k (from the newest) with ts < now.
	lo, hi := 0, r.n
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if r.tsAt(m) >= now {
			lo = m + 1
		} else {
			hi = m
		}
	}
	newest = lo
	// end: the first k >= newest with ts < from.
	lo, hi = newest, r.n
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if r.tsAt(m) >= from {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo - newest, newest
}

// historyValue computes one history function over the ring's points in the
// window plus the current value at now. It returns NaN when there is not
// enough data (comparisons with NaN are false).
func historyValue(kind fnKind, r *ring, now, window int64, horizon, cur float64) float64 {
	if r == nil {
		return math.NaN()
	}
	curAdj := r.adjusted(cur)
	if kind == fnDeltaTick {
		_, newest := r.span(math.MinInt64, now)
		if newest >= r.n {
			return math.NaN()
		}
		_, prev := r.at(newest)
		return curAdj - prev
	}
	count, newest := r.span(now-window, now)
	// Points oldest first: k from newest+count-1 down to newest, then cur.
	total := count + 1
	switch kind {
	case fnAvg, fnMax, fnMin:
		// Counters are aggregated reset-adjusted, then shifted back so the
		// current point reads as its raw value.
		shift := curAdj - cur
		acc, sum := curAdj, curAdj
		for k := newest + count - 1; k >= newest; k-- {
			_, v := r.at(k)
			switch {
			case kind == fnAvg:
				sum += v
			case kind == fnMax && (v > acc || math.IsNaN(acc)):
				acc = v
			case kind == fnMin && (v < acc || math.IsNaN(acc)):
				acc = v
			}
		}
		if kind == fnAvg {
			return sum/float64(total) - shift
		}
		return acc - shift
	case fnChanges:
		changes := 0
		var prev float64
		first := true
		for k := newest + count - 1; k >= newest; k-- {
			_, v := r.at(k)
			if !first && v != prev {
				changes++
			}
			prev, first = v, false
		}
		if !first && curAdj != prev {
			changes++
		}
		return float64(changes)
	}
	if count == 0 {
		return math.NaN()
	}
	t0, v0 := r.at(newest + count - 1)
	switch kind {
	case fnDelta, fnIncrease:
		return curAdj - v0
	case fnRate:
		dt := float64(now-t0) / 1e9
		if dt <= 0 {
			return math.NaN()
		}
		return (curAdj - v0) / dt
	case fnDeriv, fnPredict:
		// Least squares over (t - now, v), so the intercept is the value at now.
		var n, sx, sy, sxx, sxy float64
		add := func(t int64, v float64) {
			x := float64(t-now) / 1e9
			n++
			sx += x
			sy += v
			sxx += x * x
			sxy += x * v
		}
		for k := newest + count - 1; k >= newest; k-- {
			add(r.at(k))
		}
		add(now, curAdj)
		den := n*sxx - sx*sx
		if den == 0 {
			return math.NaN()
		}
		slope := (n*sxy - sx*sy) / den
		if kind == fnDeriv {
			return slope
		}
		intercept := (sy - slope*sx) / n
		if r.counter {
			intercept -= r.adjusted(cur) - cur
		}
		return intercept + slope*horizon
	}
	return math.NaN()
}

package cgroupfs

import (
	"math"
	"time"

	"github.com/vigil-agent/vigil/collectors"
)

// ringSize is how many working set samples a cgroup keeps for the growth
// fit. Samples are stored at least GrowthWindow*2/ringSize apart (pairwise),
// so the ring always spans the window whatever the tick and however many
// off-cycle snapshots come in between.
const ringSize = 64

// ring is a fixed-size history of (time, working set): no allocation.
type ring struct {
	t    [ringSize]int64 // unix ns
	v    [ringSize]uint64
	head int // next slot to write
	n    int
}

func (r *ring) at(back int) int { return (r.head - 1 - back + 2*ringSize) % ringSize }

// add stores a sample. A sample closer than spacing to the one before the
// newest replaces the newest instead, so bursts of off-cycle snapshots do not
// push the window's older samples out.
func (r *ring) add(t int64, v uint64, spacing int64) {
	if r.n > 0 {
		last := r.at(0)
		if t <= r.t[last] {
			if t == r.t[last] {
				r.v[last] = v
			}
			return // clock went back: keep the history monotonic
		}
		if r.n >= 2 && t-r.t[r.at(1)] < spacing {
			r.t[last], r.v[last] = t, v
			return
		}
	}
	r.t[r.head], r.v[r.head] = t, v
	r.head = (r.head + 1) % ringSize
	if r.n < ringSize {
		r.n++
	}
}

// slope is the least-squares slope, in bytes per second, of the samples at or
// after since; 0 with fewer than two.
func (r *ring) slope(since int64) float64 {
	if r.n < 2 {
		return 0
	}
	newest := r.t[r.at(0)]
	var n int
	var sx, sy float64
	for k := 0; k < r.n; k++ {
		i := r.at(k)
		if r.t[i] < since {
			break
		}
		n++
		sx += float64(r.t[i]-newest) / 1e9
		sy += float64(r.v[i])
	}
	if n < 2 {
		return 0
	}
	mx, my := sx/float64(n), sy/float64(n)
	var sxy, sxx float64
	for k := 0; k < n; k++ {
		i := r.at(k)
		dx := float64(r.t[i]-newest)/1e9 - mx
		sxy += dx * (float64(r.v[i]) - my)
		sxx += dx * dx
	}
	if sxx == 0 {
		return 0
	}
	return sxy / sxx
}

// refaultRate turns the cumulative refault counters into a rate.
type refaultRate struct {
	prev uint64
	at   int64 // unix ns of prev; 0 before the first sample
	rate float64
}

// minRateInterval: samples closer than this to the previous one (an
// off-cycle snapshot right after a sweep) keep the previous rate rather than
// divide a tiny delta by a tiny interval.
const minRateInterval = int64(100 * time.Millisecond)

func (r *refaultRate) update(t int64, count uint64) float64 {
	switch {
	case r.at == 0:
	case t-r.at < minRateInterval:
		return r.rate
	case count < r.prev:
		r.rate = 0 // counter reset (a cgroup recreated under the same fd cannot happen; be safe)
	default:
		r.rate = float64(count-r.prev) / (float64(t-r.at) / 1e9)
	}
	r.prev, r.at = count, t
	return r.rate
}

// derive computes s.Memory.EffectiveLimitBytes and s.Derived from the
// fresh read in s and the cgroup's history. Parents are derived before their
// children, so cg.parent's limits are current in a full sweep.
//
// The effective limit is the size the cgroup can reach before a limit on
// its path stops it: its working set plus its room, the least of what its
// own (or inherited) limit leaves and what every limited ancestor leaves
// given what the rest of that ancestor uses. Cgroups sharing a limited
// parent (pods under kubepods, services under a slice with MemoryMax) thus
// see their limit come down as their siblings grow, as the kernel's OOM
// killer will.
func (c *Collector) derive(cg *cgroup, s *collectors.CgroupSample, now time.Time) {
	parentCap, parentRoom := uint64(collectors.Unlimited), uint64(collectors.Unlimited)
	if cg.parent != nil {
		parentCap, parentRoom = cg.parent.capLimit, cg.parent.room
	}
	capLimit := c.ver.effectiveLimit(s, parentCap)
	cg.capLimit = capLimit

	d := &s.Derived
	d.WorkingSetBytes = sub(s.Memory.UsageBytes, s.Stat.InactiveFile)
	limit := uint64(collectors.Unlimited)
	cg.room = collectors.Unlimited
	if capLimit != collectors.Unlimited {
		cg.room = sub(capLimit, d.WorkingSetBytes)
	}
	cg.room = min(cg.room, parentRoom)
	if cg.room != collectors.Unlimited {
		limit = min(capLimit, d.WorkingSetBytes+cg.room)
	}
	cg.effLimit = limit
	s.Memory.EffectiveLimitBytes = collectors.Bytes(limit)
	if limit == collectors.Unlimited {
		d.HeadroomBytes = collectors.Unlimited
		d.UsageRatio = 0
	} else {
		d.HeadroomBytes = collectors.Bytes(sub(limit, d.WorkingSetBytes))
		if limit > 0 {
			d.UsageRatio = float64(d.WorkingSetBytes) / float64(limit)
		}
	}
	d.ReclaimableBytes = sub(sub(sub(s.Stat.File, s.Stat.Shmem), s.Stat.FileDirty), s.Stat.FileWriteback)

	t := now.UnixNano()
	cg.growth.add(t, d.WorkingSetBytes, c.spacing)
	d.GrowthBytesPerSecond = cg.growth.slope(t - c.window)
	d.SecondsToLimit = collectors.Float(math.Inf(1))
	if d.GrowthBytesPerSecond > 0 && limit != collectors.Unlimited {
		d.SecondsToLimit = collectors.Float(float64(d.HeadroomBytes) / d.GrowthBytesPerSecond)
	}
	// The refault counters are as of the last memory.stat read: the rate is
	// taken between reads, at their times (a reused read keeps the rate).
	statAt := t
	if cg.stat.at != 0 {
		statAt = cg.stat.at
		d.StatAgeSeconds = float64(max(t-statAt, 0)) / 1e9
	}
	d.RefaultsPerSecond = cg.refaults.update(statAt, s.Stat.WorkingsetRefaultAnon+s.Stat.WorkingsetRefaultFile)
}

// sub is a-b clamped at 0.
func sub(a, b uint64) uint64 {
	if b > a {
		return 0
	}
	return a - b
}

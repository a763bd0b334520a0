package cgroupfs

import (
	"github.com/vigil-agent/vigil/collectors"
)

// statPolicy decides when a cgroup's memory.stat is read again (see
// Options.StatMaxAge). memory.stat costs several times the other files
// together (measured here: 4.5 µs of kernel time per read on v1 against
// 0.8 µs for memory.usage_in_bytes), and most cgroups of a node are quiet.
//
// The same decision covers the files whose values only matter when usage
// moves or that are monotonic (read later, they lose nothing but time):
// the peak (a high-water mark), v1's failcnt (a counter of charges that hit
// the limit: a cgroup near its limit is read every sweep anyway) and v1's
// memsw usage (usage + swap). The usage and OOM files (v2: memory.events,
// memory.pressure, memory.swap.current) are read at every sweep.
type statPolicy struct {
	maxAge    int64   // ns; 0: read at every sweep
	moveRatio float64 // of the usage at the last read
	nearLimit float64 // of the effective limit
	hotHold   int64   // ns
}

// minStatMove is the smallest change of usage that makes memory.stat due,
// whatever StatMoveRatio says: the usage of a small idle cgroup jitters by
// a few pages.
const minStatMove = 1 << 20

// gatedFiles are the files read only when statPolicy.due says so.
const gatedFiles = 1<<fStat | 1<<fPeak | 1<<fFailcnt | 1<<fMemswUsage

func isGated(f fileID) bool { return gatedFiles&(1<<f) != 0 }

// statCache is what a cgroup keeps of its last memory.stat read.
type statCache struct {
	stat  collectors.MemoryStat
	at    int64  // unix ns of the read; 0: never read
	next  int64  // unix ns at which it is StatMaxAge old (spread at first read)
	usage uint64 // usage read just before it
	// The other gated files as read with it.
	memswUsage, peak, failcnt uint64
	busy                      bool  // the trouble counters moved between the last two reads
	hot                       int64 // read at every sweep until then (RefreshLimits)
	force                     bool  // read at the next read whatever (RefreshLimits)
}

// due tells whether memory.stat must be read now, given the usage just read.
func (p *statPolicy) due(sc *statCache, usage, effLimit uint64, now int64, force bool) bool {
	if force || p.maxAge == 0 || sc.at == 0 || sc.force || sc.busy || now < sc.hot {
		return true
	}
	if now >= sc.next || now < sc.at {
		return true // old enough, or the clock went back
	}
	moved := usage - sc.usage
	if usage < sc.usage {
		moved = sc.usage - usage
	}
	if moved >= max(minStatMove, uint64(p.moveRatio*float64(sc.usage))) {
		return true
	}
	return effLimit != collectors.Unlimited && float64(usage) >= p.nearLimit*float64(effLimit)
}

// read records a fresh memory.stat in s, read at now after usage; seq
// spreads the first deadlines of cgroups tracked together over maxAge.
func (p *statPolicy) read(sc *statCache, s *collectors.CgroupSample, now int64, seq uint32) {
	st := &s.Stat
	if sc.at != 0 {
		old := &sc.stat
		sc.busy = st.Pgmajfault != old.Pgmajfault || st.Pgscan != old.Pgscan || st.Pgsteal != old.Pgsteal ||
			st.WorkingsetRefaultAnon != old.WorkingsetRefaultAnon || st.WorkingsetRefaultFile != old.WorkingsetRefaultFile
		sc.next = now + p.maxAge
	} else {
		sc.next = now + p.maxAge - p.maxAge/16*int64(seq%16)
	}
	sc.stat, sc.at, sc.usage, sc.force = *st, now, s.Memory.UsageBytes, false
	sc.memswUsage, sc.peak, sc.failcnt = s.Memory.MemswUsageBytes, s.Memory.PeakBytes, s.Events.Max
}

// load fills s with the values of gated file f as last read.
func (sc *statCache) load(f fileID, s *collectors.CgroupSample) {
	switch f {
	case fStat:
		s.Stat = sc.stat
	case fPeak:
		// The usage just read is a lower bound of the high-water mark.
		s.Memory.PeakBytes = max(sc.peak, s.Memory.UsageBytes)
	case fFailcnt:
		s.Events.Max = sc.failcnt
	case fMemswUsage:
		s.Memory.MemswUsageBytes = sc.memswUsage
	}
}

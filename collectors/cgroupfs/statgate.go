package cgroupfs

import (
	"github.com/vigil-agent/vigil/collectors"
)

// statPolicy decides when a cgroup's memory.stat is read again (see
// Options.StatMaxAge). memory.stat costs several times the other files
// together (measured here: 4.5 µs of kernel time per read on v1 against
// 0.8 µs for memory.usage_in_bytes), and most cgroups of a node are quiet.
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

// statCache is what a cgroup keeps of its last memory.stat read.
type statCache struct {
	stat  collectors.MemoryStat
	at    int64  // unix ns of the read; 0: never read
	next  int64  // unix ns at which it is StatMaxAge old (spread at first read)
	usage uint64 // usage read just before it
	// memswUsage is v1 memory.memsw.usage_in_bytes read with it: usage plus
	// swap, it moves with usage or with swap (memory.stat).
	memswUsage uint64
	busy       bool  // the trouble counters moved between the last two reads
	hot        int64 // read at every sweep until then (RefreshLimits)
	force      bool  // read at the next read whatever (RefreshLimits)
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
	sc.memswUsage = s.Memory.MemswUsageBytes
}

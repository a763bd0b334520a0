package cgroupfs

import (
	"errors"
	"log/slog"

	"golang.org/x/sys/unix"
)

// File descriptors. A tracked cgroup holds its hot files open (v1: usage,
// oom_control; v2: memory.current, memory.swap.current, memory.events,
// memory.pressure) and, while the budget allows, its gated files too
// (memory.stat, the peak, v1 failcnt and memsw usage). Past the budget
// (RLIMIT_NOFILE less a reserve, or Options.MaxHeldFiles), a cgroup reads its
// gated files by open, pread and close when they are due, which for a quiet
// cgroup is every StatMaxAge: a few µs more per due read instead of four
// (v1) or two (v2) descriptors for as long as it lives. So the number of
// tracked cgroups is bounded by the hot files alone, and the gated ones are
// held by as many cgroups as fit, the earliest tracked first; when cgroups
// go away their room goes to others.

// fdPlan is what fitFDLimit decides.
type fdPlan struct {
	maxCgroups int
	budget     int // most files held at once (hot and gated)
	gated      int // gated files per cgroup (perCgroup)
}

// perCgroup counts the version's hot (held) and gated files.
func perCgroup(ver version) (hot, gated int) {
	for i, name := range ver.files() {
		switch f := fileID(i); {
		case name == "" || isCold(f):
		case isGated(f):
			gated++
		default:
			hot++
		}
	}
	return hot, gated
}

// fitFDLimit lowers max so that the hot files of max cgroups fit in
// RLIMIT_NOFILE (or maxHeld, when set), leaving room for the rest of the
// agent, and returns the budget of held files.
func fitFDLimit(log *slog.Logger, max, maxHeld int, ver version) fdPlan {
	hot, gated := perCgroup(ver)
	budget := -1 // unbounded
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err == nil && rl.Cur != unix.RLIM_INFINITY {
		reserve := max64(1024, rl.Cur/10)
		budget = 0
		if rl.Cur > reserve {
			budget = int(min(rl.Cur-reserve, 1<<30))
		}
	}
	if maxHeld > 0 && (budget < 0 || maxHeld < budget) {
		budget = maxHeld
	}
	if budget < 0 {
		return fdPlan{maxCgroups: max, budget: max * (hot + gated), gated: gated}
	}
	plan := fdPlan{maxCgroups: max, budget: budget, gated: gated}
	if fit := budget / max1(hot); fit < max {
		plan.maxCgroups = max1(fit)
		log.Info("file descriptors cap the number of tracked cgroups", "held_files", budget,
			"files_per_cgroup", hot+gated, "min_files_per_cgroup", hot, "max_cgroups", plan.maxCgroups)
	}
	if full := budget / (hot + gated); full < plan.maxCgroups {
		log.Info("past this many cgroups, memory.stat is opened when due instead of held",
			"held_files", budget, "cgroups_holding_all", full, "max_cgroups", plan.maxCgroups)
	}
	return plan
}

// openGated opens cg's gated files (at its first open all of them, noting
// which exist in gatedHas; later those), counts them as held and makes cg a
// holder.
func (c *Collector) openGated(cg *cgroup, firstTime bool) error {
	for i, name := range c.ver.files() {
		f := fileID(i)
		if name == "" || !isGated(f) || cg.fds[f] >= 0 || (!firstTime && cg.gatedHas&(1<<f) == 0) {
			continue
		}
		fd, err := unix.Open(cg.dir+"/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		switch {
		case err == nil:
			cg.fds[f] = int32(fd)
			cg.gatedHas |= 1 << f
			c.heldFDs++
		case errors.Is(err, unix.ENOENT):
			// Not provided here, or the cgroup is gone: the hot files tell.
		case errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE):
			return errNoFDs
		default:
			c.errs[errOpen].Add(1)
			c.log.Warn("cannot open cgroup file", "target", cg.dir, "file", name, "err", err)
		}
	}
	if cg.gatedCold {
		cg.gatedCold = false
		c.onDemand--
	}
	c.holders = append(c.holders, cg)
	return nil
}

// closeGated closes cg's gated files: from now on they are read when due by
// open, pread and close.
func (c *Collector) closeGated(cg *cgroup) {
	for i := range cg.fds {
		if f := fileID(i); isGated(f) && cg.fds[f] >= 0 {
			_ = unix.Close(int(cg.fds[f]))
			cg.fds[f] = -1
			c.heldFDs--
		}
	}
	if !cg.gatedCold {
		cg.gatedCold = true
		c.onDemand++
	}
}

// release closes every file of cg and takes them off the count.
func (c *Collector) release(cg *cgroup) {
	c.heldFDs -= cg.close()
	cg.released = true
	if cg.gatedCold {
		c.onDemand--
	}
}

// publishFDs makes the file counts visible to Stats.
func (c *Collector) publishFDs() {
	c.heldFiles.Store(int64(c.heldFDs))
	c.onDemandN.Store(int64(c.onDemand))
}

// fitHeld brings the held files back within the budget by closing the
// gated files of the latest holders, never those of keep (nil: any).
func (c *Collector) fitHeld(keep *cgroup) {
	n := len(c.holders)
	tail := keep != nil && n > 0 && c.holders[n-1] == keep
	if tail {
		c.holders = c.holders[:n-1]
	}
	for c.heldFDs > c.fd.budget && len(c.holders) > 0 {
		last := len(c.holders) - 1
		cg := c.holders[last]
		c.holders[last] = nil
		c.holders = c.holders[:last]
		if !cg.released && !cg.gatedCold && cg != keep {
			c.closeGated(cg)
		}
	}
	if tail {
		c.holders = append(c.holders, keep)
	}
}

// pruneHolders drops the cgroups that went away or hold nothing any more.
func (c *Collector) pruneHolders() {
	w := 0
	for _, cg := range c.holders {
		if !cg.released && !cg.gatedCold {
			c.holders[w] = cg
			w++
		}
	}
	clear(c.holders[w:])
	c.holders = c.holders[:w]
}

// regainHeld gives room freed by cgroups that went away to cgroups reading
// their gated files on demand, in tracking order.
func (c *Collector) regainHeld() {
	gated := c.fd.gated
	if c.heldFDs+gated > c.fd.budget {
		return
	}
	for _, cg := range c.cgroups {
		if !cg.gatedCold || cg.released {
			continue
		}
		if c.heldFDs+gated > c.fd.budget {
			return
		}
		if err := c.openGated(cg, false); err != nil {
			c.closeGated(cg)
			return
		}
	}
}

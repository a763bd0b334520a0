package cgroupfs

import (
	"github.com/vigil-agent/vigil/collectors"
)

// fileID names a file held open per cgroup. Each version maps the IDs it has
// to a file name; the others stay closed (-1).
type fileID uint8

const (
	fUsage fileID = iota
	fPeak
	fMax
	fHigh
	fLow
	fMin
	fSoftLimit
	fSwapMax
	fSwapCurrent
	fMemswLimit
	fMemswUsage
	fStat
	fEvents
	fFailcnt
	fOOMControl
	fPressure
	numFiles
)

// version hides what differs between cgroup v1 and v2: which files exist and
// how they fill a CgroupSample. Two implementations, v1 and v2.
type version interface {
	number() int
	files() *[numFiles]string
	// read fills s from the cgroup's held files. It returns errVanished when
	// the cgroup disappeared; other problems are counted by the reader.
	read(r *reader, cg *cgroup, s *collectors.CgroupSample) error
	// effectiveLimit is the tightest limit on s given its parent's.
	effectiveLimit(s *collectors.CgroupSample, parent uint64) uint64
}

var (
	_ version = v1{}
	_ version = v2{}
)

type v1 struct{}

var v1Files = [numFiles]string{
	fUsage:      "memory.usage_in_bytes",
	fPeak:       "memory.max_usage_in_bytes",
	fMax:        "memory.limit_in_bytes",
	fSoftLimit:  "memory.soft_limit_in_bytes",
	fMemswLimit: "memory.memsw.limit_in_bytes",
	fMemswUsage: "memory.memsw.usage_in_bytes",
	fStat:       "memory.stat",
	fFailcnt:    "memory.failcnt",
	fOOMControl: "memory.oom_control",
}

func (v1) number() int              { return 1 }
func (v1) files() *[numFiles]string { return &v1Files }

func (v1) read(r *reader, cg *cgroup, s *collectors.CgroupSample) error {
	m := &s.Memory
	var err error
	if m.UsageBytes, err = r.value(cg, fUsage); err != nil {
		return err
	}
	if m.PeakBytes, err = r.value(cg, fPeak); err != nil {
		return err
	}
	if err = r.limit(cg, fMax, &m.MaxBytes); err != nil {
		return err
	}
	if err = r.limit(cg, fSoftLimit, &m.SoftLimitBytes); err != nil {
		return err
	}
	if err = r.limit(cg, fMemswLimit, &m.MemswLimitBytes); err != nil {
		return err
	}
	if m.MemswUsageBytes, err = r.value(cg, fMemswUsage); err != nil {
		return err
	}
	m.HighBytes = collectors.Unlimited
	m.SwapMaxBytes = collectors.Unlimited
	if b, err := r.file(cg, fStat); err != nil {
		return err
	} else if b != nil {
		r.parsed(cg, fStat, parseMemoryStat(b, &s.Stat, 1))
	}
	m.SwapUsageBytes = s.Stat.Swap
	if s.Events.Max, err = r.value(cg, fFailcnt); err != nil {
		return err
	}
	if b, err := r.file(cg, fOOMControl); err != nil {
		return err
	} else if b != nil {
		r.parsed(cg, fOOMControl, parseOOMControl(b, &s.Events))
	}
	// v1 has no per-cgroup PSI: Pressure stays Present=false.
	return nil
}

func (v1) effectiveLimit(s *collectors.CgroupSample, parent uint64) uint64 {
	eff := min(parent, uint64(s.Memory.MaxBytes))
	if h := uint64(s.Stat.HierarchicalMemoryLimit); h != 0 {
		eff = min(eff, h)
	}
	return eff
}

type v2 struct{}

var v2Files = [numFiles]string{
	fUsage:       "memory.current",
	fPeak:        "memory.peak",
	fMax:         "memory.max",
	fHigh:        "memory.high",
	fLow:         "memory.low",
	fMin:         "memory.min",
	fSwapMax:     "memory.swap.max",
	fSwapCurrent: "memory.swap.current",
	fStat:        "memory.stat",
	fEvents:      "memory.events",
	fPressure:    "memory.pressure",
}

func (v2) number() int              { return 2 }
func (v2) files() *[numFiles]string { return &v2Files }

func (v2) read(r *reader, cg *cgroup, s *collectors.CgroupSample) error {
	m := &s.Memory
	var err error
	if m.UsageBytes, err = r.value(cg, fUsage); err != nil {
		return err
	}
	if m.PeakBytes, err = r.value(cg, fPeak); err != nil {
		return err
	}
	if err = r.limit(cg, fMax, &m.MaxBytes); err != nil {
		return err
	}
	if err = r.limit(cg, fHigh, &m.HighBytes); err != nil {
		return err
	}
	var low, minimum collectors.Bytes
	if err = r.limitOr(cg, fLow, &low, 0); err != nil {
		return err
	}
	if err = r.limitOr(cg, fMin, &minimum, 0); err != nil {
		return err
	}
	m.LowBytes, m.MinBytes = uint64(low), uint64(minimum)
	if err = r.limit(cg, fSwapMax, &m.SwapMaxBytes); err != nil {
		return err
	}
	if m.SwapUsageBytes, err = r.value(cg, fSwapCurrent); err != nil {
		return err
	}
	m.SoftLimitBytes = collectors.Unlimited
	m.MemswLimitBytes = collectors.Unlimited
	if b, err := r.file(cg, fStat); err != nil {
		return err
	} else if b != nil {
		r.parsed(cg, fStat, parseMemoryStat(b, &s.Stat, 2))
	}
	// memory.stat has no swap line on v2; keep Stat.Swap meaning the same.
	s.Stat.Swap = m.SwapUsageBytes
	if b, err := r.file(cg, fEvents); err != nil {
		return err
	} else if b != nil {
		r.parsed(cg, fEvents, parseEvents(b, &s.Events))
	}
	if b, err := r.file(cg, fPressure); err != nil {
		return err
	} else if b != nil {
		p, perr := collectors.ParsePressure(b)
		r.parsed(cg, fPressure, perr)
		if perr == nil {
			s.Pressure = p
		}
	}
	return nil
}

func (v2) effectiveLimit(s *collectors.CgroupSample, parent uint64) uint64 {
	return min(parent, uint64(s.Memory.MaxBytes), uint64(s.Memory.HighBytes))
}

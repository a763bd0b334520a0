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

// coldFiles are the limit files: they change only when someone writes them,
// so they are not held open (that would cost a file descriptor each per
// cgroup) but opened, read and closed when due (see Options.LimitsInterval).
const coldFiles = 1<<fMax | 1<<fHigh | 1<<fLow | 1<<fMin | 1<<fSoftLimit | 1<<fSwapMax | 1<<fMemswLimit

// isCold tells a limit file, read on demand, from a held one.
func isCold(f fileID) bool { return coldFiles&(1<<f) != 0 }

// limits are a cgroup's cold values as last read.
type limits struct {
	max, high, soft, swapMax, memswLimit collectors.Bytes
	low, min                             uint64
}

func (l *limits) save(m *collectors.CgroupMemory) {
	*l = limits{max: m.MaxBytes, high: m.HighBytes, soft: m.SoftLimitBytes, swapMax: m.SwapMaxBytes,
		memswLimit: m.MemswLimitBytes, low: m.LowBytes, min: m.MinBytes}
}

func (l *limits) load(m *collectors.CgroupMemory) {
	m.MaxBytes, m.HighBytes, m.SoftLimitBytes, m.SwapMaxBytes = l.max, l.high, l.soft, l.swapMax
	m.MemswLimitBytes, m.LowBytes, m.MinBytes = l.memswLimit, l.low, l.min
}

// version hides what differs between cgroup v1 and v2: which files exist and
// how each fills a CgroupSample. Two implementations, v1 and v2.
type version interface {
	number() int
	files() *[numFiles]string
	// fill parses the content b of file f into s.
	fill(f fileID, b []byte, s *collectors.CgroupSample) error
	// finish derives the fields that need several files.
	finish(s *collectors.CgroupSample)
	// effectiveLimit is the tightest limit on s given its parent's.
	effectiveLimit(s *collectors.CgroupSample, parent uint64) uint64
}

var (
	_ version = v1{}
	_ version = v2{}
)

// resetSample zeroes s but for its path and identity and sets every limit
// to Unlimited, which is what an absent limit file means.
func resetSample(s *collectors.CgroupSample) {
	path, id := s.Path, s.Identity
	*s = collectors.CgroupSample{Path: path, Identity: id}
	m := &s.Memory
	m.MaxBytes, m.HighBytes, m.SoftLimitBytes = collectors.Unlimited, collectors.Unlimited, collectors.Unlimited
	m.SwapMaxBytes, m.MemswLimitBytes = collectors.Unlimited, collectors.Unlimited
}

// setBytes parses a limit file into dst, leaving it alone if malformed.
func setBytes(dst *collectors.Bytes, b []byte) error {
	v, err := parseLimit(b)
	if err == nil {
		*dst = collectors.Bytes(v)
	}
	return err
}

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

func (v1) fill(f fileID, b []byte, s *collectors.CgroupSample) error {
	m := &s.Memory
	var err error
	switch f {
	case fUsage:
		m.UsageBytes, err = parseValue(b)
	case fPeak:
		m.PeakBytes, err = parseValue(b)
	case fMax:
		err = setBytes(&m.MaxBytes, b)
	case fSoftLimit:
		err = setBytes(&m.SoftLimitBytes, b)
	case fMemswLimit:
		err = setBytes(&m.MemswLimitBytes, b)
	case fMemswUsage:
		m.MemswUsageBytes, err = parseValue(b)
	case fStat:
		err = parseMemoryStat(b, &s.Stat, 1)
	case fFailcnt:
		s.Events.Max, err = parseValue(b)
	case fOOMControl:
		err = parseOOMControl(b, &s.Events)
	}
	return err
}

// finish: v1 has no swap usage file of its own; memory.stat has it. There is
// no per-cgroup PSI on v1: Pressure stays Present=false.
func (v1) finish(s *collectors.CgroupSample) { s.Memory.SwapUsageBytes = s.Stat.Swap }

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

func (v2) fill(f fileID, b []byte, s *collectors.CgroupSample) error {
	m := &s.Memory
	var err error
	switch f {
	case fUsage:
		m.UsageBytes, err = parseValue(b)
	case fPeak:
		m.PeakBytes, err = parseValue(b)
	case fMax:
		err = setBytes(&m.MaxBytes, b)
	case fHigh:
		err = setBytes(&m.HighBytes, b)
	case fLow:
		m.LowBytes, err = parseLimit(b) // "max" protects everything: Unlimited
	case fMin:
		m.MinBytes, err = parseLimit(b)
	case fSwapMax:
		err = setBytes(&m.SwapMaxBytes, b)
	case fSwapCurrent:
		m.SwapUsageBytes, err = parseValue(b)
	case fStat:
		err = parseMemoryStat(b, &s.Stat, 2)
	case fEvents:
		err = parseEvents(b, &s.Events)
	case fPressure:
		var p collectors.Pressure
		if p, err = collectors.ParsePressure(b); err == nil {
			s.Pressure = p
		}
	}
	return err
}

// finish: memory.stat has no swap line on v2; keep Stat.Swap meaning the same
// on both versions.
func (v2) finish(s *collectors.CgroupSample) { s.Stat.Swap = s.Memory.SwapUsageBytes }

func (v2) effectiveLimit(s *collectors.CgroupSample, parent uint64) uint64 {
	return min(parent, uint64(s.Memory.MaxBytes), uint64(s.Memory.HighBytes))
}

package cgroupfs

import (
	"bytes"
	"fmt"
	"math"
	"os"

	"github.com/vigil-agent/vigil/collectors"
)

// The parsers below work on a buffer the sweep reuses and do not allocate
// unless the input is malformed (then they build an error). Keys are matched
// with switch string(key), which the compiler does without allocating.

// v1UnlimitedFloor: v1 reports "no limit" as the page counter maximum,
// LONG_MAX rounded down to a page (9223372036854771712 with 4 KiB pages,
// 9223372036854710272 with 64 KiB pages). Anything this close to LONG_MAX is
// no limit whatever the page size.
const v1UnlimitedFloor = math.MaxInt64 - (1 << 20)

// ReadMemoryStat reads and parses a memory.stat file of the given cgroup
// version (1 or 2).
func ReadMemoryStat(path string, version int) (collectors.MemoryStat, error) {
	var st collectors.MemoryStat
	b, err := os.ReadFile(path)
	if err != nil {
		return st, err
	}
	if err := parseMemoryStat(b, &st, version); err != nil {
		return st, fmt.Errorf("%s: %w", path, err)
	}
	return st, nil
}

// ReadMemoryEvents reads and parses a v2 memory.events file.
func ReadMemoryEvents(path string) (collectors.MemoryEvents, error) {
	var ev collectors.MemoryEvents
	b, err := os.ReadFile(path)
	if err != nil {
		return ev, err
	}
	if err := parseEvents(b, &ev); err != nil {
		return ev, fmt.Errorf("%s: %w", path, err)
	}
	return ev, nil
}

// ReadOOMControl reads and parses a v1 memory.oom_control file into the
// OOMKill, UnderOOM and OOMKillDisable fields.
func ReadOOMControl(path string) (collectors.MemoryEvents, error) {
	var ev collectors.MemoryEvents
	b, err := os.ReadFile(path)
	if err != nil {
		return ev, err
	}
	if err := parseOOMControl(b, &ev); err != nil {
		return ev, fmt.Errorf("%s: %w", path, err)
	}
	return ev, nil
}

// ReadLimit reads a limit file (v2 memory.max, memory.high, ...; v1
// memory.limit_in_bytes, ...): "max" and the v1 page counter maximum are
// collectors.Unlimited.
func ReadLimit(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	v, err := parseLimit(b)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

// parseMemoryStat fills st from a memory.stat file. On v1 only the
// hierarchical total_* keys (and hierarchical_*_limit) are used, so that both
// versions report this cgroup and its descendants. Unknown keys are skipped;
// a malformed line is reported after the rest has been parsed.
func parseMemoryStat(b []byte, st *collectors.MemoryStat, version int) error {
	*st = collectors.MemoryStat{}
	var firstErr error
	for len(b) > 0 {
		var line []byte
		line, b = collectors.NextLine(b)
		if len(line) == 0 {
			continue
		}
		key, val, ok := splitKV(line)
		if !ok {
			if firstErr == nil {
				firstErr = fmt.Errorf("memory.stat: malformed line %q", collectors.Truncate(line))
			}
			continue
		}
		if version == 1 {
			switch {
			case bytes.HasPrefix(key, []byte("total_")):
				key = key[len("total_"):]
			case string(key) == "hierarchical_memory_limit" || string(key) == "hierarchical_memsw_limit":
				v, err := parseLimit(val)
				if err != nil {
					if firstErr == nil {
						firstErr = fmt.Errorf("memory.stat: %s: %w", key, err)
					}
					continue
				}
				if string(key) == "hierarchical_memory_limit" {
					st.HierarchicalMemoryLimit = collectors.Bytes(v)
				} else {
					st.HierarchicalMemswLimit = collectors.Bytes(v)
				}
				continue
			default:
				continue // this cgroup alone: v1 reports the subtree in total_*
			}
		}
		p := statField(st, key)
		if p == nil {
			continue
		}
		v, err := collectors.ParseUint(val)
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("memory.stat: %s: %w", key, err)
			}
			continue
		}
		*p = v
	}
	return firstErr
}

// statField maps a memory.stat key (v2 name, or v1 name without total_) to
// its field, or nil for keys vigil does not keep.
func statField(st *collectors.MemoryStat, key []byte) *uint64 {
	switch string(key) {
	case "anon", "rss":
		return &st.Anon
	case "file", "cache":
		return &st.File
	case "active_anon":
		return &st.ActiveAnon
	case "inactive_anon":
		return &st.InactiveAnon
	case "active_file":
		return &st.ActiveFile
	case "inactive_file":
		return &st.InactiveFile
	case "unevictable":
		return &st.Unevictable
	case "shmem":
		return &st.Shmem
	case "file_mapped", "mapped_file":
		return &st.FileMapped
	case "file_dirty", "dirty":
		return &st.FileDirty
	case "file_writeback", "writeback":
		return &st.FileWriteback
	case "anon_thp", "rss_huge":
		return &st.AnonTHP
	case "swap":
		return &st.Swap
	case "kernel_stack":
		return &st.KernelStack
	case "slab":
		return &st.Slab
	case "slab_reclaimable":
		return &st.SlabReclaimable
	case "slab_unreclaimable":
		return &st.SlabUnreclaimable
	case "sock":
		return &st.Sock
	case "pgfault":
		return &st.Pgfault
	case "pgmajfault":
		return &st.Pgmajfault
	case "pgscan":
		return &st.Pgscan
	case "pgsteal":
		return &st.Pgsteal
	case "workingset_refault_anon":
		return &st.WorkingsetRefaultAnon
	// Before 5.9 anonymous pages were not tracked: the single counters are
	// file pages.
	case "workingset_refault_file", "workingset_refault":
		return &st.WorkingsetRefaultFile
	case "workingset_activate_anon":
		return &st.WorkingsetActivateAnon
	case "workingset_activate_file", "workingset_activate":
		return &st.WorkingsetActivateFile
	case "workingset_restore_anon":
		return &st.WorkingsetRestoreAnon
	case "workingset_restore_file", "workingset_restore":
		return &st.WorkingsetRestoreFile
	case "workingset_nodereclaim":
		return &st.WorkingsetNodereclaim
	}
	return nil
}

// parseEvents fills the v2 memory.events counters of ev.
func parseEvents(b []byte, ev *collectors.MemoryEvents) error {
	_, err := parseCounters(b, "memory.events", func(key []byte) *uint64 {
		switch string(key) {
		case "low":
			return &ev.Low
		case "high":
			return &ev.High
		case "max":
			return &ev.Max
		case "oom":
			return &ev.OOM
		case "oom_kill":
			return &ev.OOMKill
		case "oom_group_kill":
			return &ev.OOMGroupKill
		}
		return nil
	})
	return err
}

// parseOOMControl fills OOMKillDisable, UnderOOM and OOMKill of ev from a v1
// memory.oom_control file (oom_kill exists since Linux 4.13).
func parseOOMControl(b []byte, ev *collectors.MemoryEvents) error {
	seen, err := parseCounters(b, "memory.oom_control", func(key []byte) *uint64 {
		switch string(key) {
		case "oom_kill_disable":
			return &ev.OOMKillDisable
		case "under_oom":
			return &ev.UnderOOM
		case "oom_kill":
			return &ev.OOMKill
		}
		return nil
	})
	if err == nil && !seen {
		return fmt.Errorf("memory.oom_control: no known key")
	}
	return err
}

// parseCounters parses a flat "key value" file, storing each value where
// field points for its key (nil: unknown key, skipped). It reports whether
// any known key was stored; a malformed line or value is reported after the
// rest has been parsed.
func parseCounters(b []byte, file string, field func(key []byte) *uint64) (seen bool, firstErr error) {
	for len(b) > 0 {
		var line []byte
		line, b = collectors.NextLine(b)
		if len(line) == 0 {
			continue
		}
		key, val, ok := splitKV(line)
		if !ok {
			if firstErr == nil {
				firstErr = fmt.Errorf("%s: malformed line %q", file, collectors.Truncate(line))
			}
			continue
		}
		p := field(key)
		if p == nil {
			continue
		}
		v, err := collectors.ParseUint(val)
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("%s: %s: %w", file, key, err)
			}
			continue
		}
		*p = v
		seen = true
	}
	return seen, firstErr
}

// parseLimit parses a one-value limit file: "max" (v2) and the v1 page
// counter maximum are collectors.Unlimited.
func parseLimit(b []byte) (uint64, error) {
	b = trimSpace(b)
	if string(b) == "max" {
		return collectors.Unlimited, nil
	}
	v, err := collectors.ParseUint(b)
	if err != nil {
		return 0, err
	}
	if v >= v1UnlimitedFloor {
		return collectors.Unlimited, nil
	}
	return v, nil
}

// parseValue parses a one-value counter file (usage, failcnt, ...).
func parseValue(b []byte) (uint64, error) {
	return collectors.ParseUint(trimSpace(b))
}

// splitKV splits "key value" on its single space.
func splitKV(line []byte) (key, val []byte, ok bool) {
	i := bytes.IndexByte(line, ' ')
	if i <= 0 || i == len(line)-1 {
		return nil, nil, false
	}
	return line[:i], line[i+1:], true
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

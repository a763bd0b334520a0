package node

import (
	"bytes"
	"fmt"

	"github.com/vigil-agent/vigil/collectors"
)

// memInfo is the subset of /proc/meminfo vigil keeps, in bytes.
type memInfo struct {
	MemTotal, MemFree, MemAvailable      uint64
	Buffers, Cached                      uint64
	SwapTotal, SwapFree                  uint64
	ActiveAnon, InactiveAnon             uint64
	ActiveFile, InactiveFile             uint64
	Shmem, Dirty, Writeback              uint64
	Slab, SReclaimable                   uint64
	CommittedAS, CommitLimit             uint64
	haveMemTotal, haveMemAvailable       bool
	haveMemFree, haveBuffers, haveCached bool
}

// parseMeminfo parses /proc/meminfo ("Key:   value kB" lines). Values with a
// kB unit are converted to bytes; unknown keys are ignored. MemTotal is
// required. On kernels without MemAvailable (before 3.14) it is estimated as
// MemFree + Buffers + Cached. It does not allocate on success.
func parseMeminfo(b []byte) (memInfo, error) {
	var m memInfo
	for len(b) > 0 {
		var line []byte
		line, b = collectors.NextLine(b)
		if len(line) == 0 {
			continue
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return memInfo{}, fmt.Errorf("meminfo: malformed line %q", collectors.Truncate(line))
		}
		key := line[:colon]
		val := bytes.TrimSpace(line[colon+1:])
		scale := uint64(1)
		if bytes.HasSuffix(val, []byte(" kB")) {
			val, scale = bytes.TrimRight(val[:len(val)-3], " "), 1024
		}
		var dst *uint64
		switch string(key) {
		case "MemTotal":
			dst, m.haveMemTotal = &m.MemTotal, true
		case "MemFree":
			dst, m.haveMemFree = &m.MemFree, true
		case "MemAvailable":
			dst, m.haveMemAvailable = &m.MemAvailable, true
		case "Buffers":
			dst, m.haveBuffers = &m.Buffers, true
		case "Cached":
			dst, m.haveCached = &m.Cached, true
		case "SwapTotal":
			dst = &m.SwapTotal
		case "SwapFree":
			dst = &m.SwapFree
		case "Active(anon)":
			dst = &m.ActiveAnon
		case "Inactive(anon)":
			dst = &m.InactiveAnon
		case "Active(file)":
			dst = &m.ActiveFile
		case "Inactive(file)":
			dst = &m.InactiveFile
		case "Shmem":
			dst = &m.Shmem
		case "Dirty":
			dst = &m.Dirty
		case "Writeback":
			dst = &m.Writeback
		case "Slab":
			dst = &m.Slab
		case "SReclaimable":
			dst = &m.SReclaimable
		case "Committed_AS":
			dst = &m.CommittedAS
		case "CommitLimit":
			dst = &m.CommitLimit
		default:
			continue
		}
		v, err := collectors.ParseUint(val)
		if err != nil {
			return memInfo{}, fmt.Errorf("meminfo: %s: %w", key, err)
		}
		if v > (1<<64-1)/scale {
			return memInfo{}, fmt.Errorf("meminfo: %s: %d kB overflows uint64 bytes", key, v)
		}
		*dst = v * scale
	}
	if !m.haveMemTotal {
		return memInfo{}, fmt.Errorf("meminfo: no MemTotal")
	}
	if !m.haveMemAvailable {
		m.MemAvailable = min(m.MemTotal, m.MemFree+m.Buffers+m.Cached)
	}
	return m, nil
}

// apply copies m into the meminfo fields of dst.
func (m *memInfo) apply(dst *collectors.NodeSample) {
	dst.MemTotalBytes = m.MemTotal
	dst.MemFreeBytes = m.MemFree
	dst.MemAvailableBytes = m.MemAvailable
	dst.BuffersBytes = m.Buffers
	dst.CachedBytes = m.Cached
	dst.SwapTotalBytes = m.SwapTotal
	dst.SwapFreeBytes = m.SwapFree
	dst.ActiveAnonBytes = m.ActiveAnon
	dst.InactiveAnonBytes = m.InactiveAnon
	dst.ActiveFileBytes = m.ActiveFile
	dst.InactiveFileBytes = m.InactiveFile
	dst.ShmemBytes = m.Shmem
	dst.DirtyBytes = m.Dirty
	dst.WritebackBytes = m.Writeback
	dst.SlabBytes = m.Slab
	dst.SReclaimableBytes = m.SReclaimable
	dst.CommittedASBytes = m.CommittedAS
	dst.CommitLimitBytes = m.CommitLimit
}

// parseVMStat parses /proc/vmstat ("key value" lines) into the counters vigil
// uses. Counters split by the kernel are summed: allocstall_<zone>,
// workingset_activate_{anon,file} and, on kernels before 4.8,
// pgscan/pgsteal_{kswapd,direct}_<zone>. It does not allocate on success.
func parseVMStat(b []byte) (collectors.VMStat, error) {
	var s collectors.VMStat
	seen := 0
	for len(b) > 0 {
		var line []byte
		line, b = collectors.NextLine(b)
		if len(line) == 0 {
			continue
		}
		sp := bytes.IndexByte(line, ' ')
		if sp <= 0 {
			return collectors.VMStat{}, fmt.Errorf("vmstat: malformed line %q", collectors.Truncate(line))
		}
		key, val := line[:sp], line[sp+1:]
		var dst *uint64
		switch string(key) {
		case "pgscan_kswapd":
			dst = &s.PgscanKswapd
		case "pgscan_direct":
			dst = &s.PgscanDirect
		case "pgsteal_kswapd":
			dst = &s.PgstealKswapd
		case "pgsteal_direct":
			dst = &s.PgstealDirect
		case "pgmajfault":
			dst = &s.Pgmajfault
		case "workingset_refault_anon":
			dst = &s.WorkingsetRefaultAnon
		case "workingset_refault", "workingset_refault_file":
			// Before 5.9 there was one counter, of file pages only.
			dst = &s.WorkingsetRefaultFile
		case "workingset_activate", "workingset_activate_anon", "workingset_activate_file":
			dst = &s.WorkingsetActivate
		case "oom_kill":
			dst = &s.OOMKill
		case "allocstall":
			dst = &s.AllocStall
		default:
			switch {
			case bytes.HasPrefix(key, []byte("allocstall_")):
				dst = &s.AllocStall
			case zoneSplit(key, "pgscan_kswapd_"):
				dst = &s.PgscanKswapd
			case zoneSplit(key, "pgscan_direct_"):
				dst = &s.PgscanDirect
			case zoneSplit(key, "pgsteal_kswapd_"):
				dst = &s.PgstealKswapd
			case zoneSplit(key, "pgsteal_direct_"):
				dst = &s.PgstealDirect
			default:
				continue
			}
		}
		v, err := collectors.ParseUint(val)
		if err != nil {
			return collectors.VMStat{}, fmt.Errorf("vmstat: %s: %w", key, err)
		}
		*dst += v
		seen++
	}
	if seen == 0 {
		return collectors.VMStat{}, fmt.Errorf("vmstat: none of the expected counters")
	}
	return s, nil
}

// zoneSplit reports whether key is prefix followed by a memory zone name, as
// pre-4.8 kernels split reclaim counters (pgscan_direct_normal...). It keeps
// unrelated counters such as pgscan_direct_throttle out of the sums.
func zoneSplit(key []byte, prefix string) bool {
	if !bytes.HasPrefix(key, []byte(prefix)) {
		return false
	}
	switch string(key[len(prefix):]) {
	case "dma", "dma32", "normal", "movable", "high", "device":
		return true
	}
	return false
}

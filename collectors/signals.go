package collectors

import "math"

// Signal is one named number vigil derives from a Snapshot. The tables below
// are the single source of the names used by rules (CEL variables), by the
// Prometheus exporter (Metric) and by the README's signal table.
type Signal[T any] struct {
	// Name is the rules name. Dots nest: "psi.memory.some_avg10" is the
	// field some_avg10 of psi.memory.
	Name string
	// Metric is the Prometheus metric name exported for the signal ("" =
	// not exported, e.g. because it is a pure function of others).
	Metric string
	Help   string
	// Unit is bytes, seconds, ratio, percent, count, per_second or
	// microseconds.
	Unit string
	// Counter is true for cumulative counters (exported as counters).
	Counter bool
	Value   func(*T) float64
	// Version, when not 0, is the only cgroup version whose kernel provides
	// the signal: on the other it is a constant (0 or +Inf) and the exporter
	// leaves its family out (rules still see it).
	Version int
}

// CgroupSignal is a signal of one cgroup.
type CgroupSignal = Signal[CgroupSample]

// NodeSignal is a node-wide signal.
type NodeSignal = Signal[NodeSample]

// limit converts a Bytes limit to a float, +Inf when unlimited.
func limit(b Bytes) float64 {
	if b == Unlimited {
		return math.Inf(1)
	}
	return float64(b)
}

func u(v uint64) float64 { return float64(v) }

// CgroupSignals lists every per-cgroup signal.
var CgroupSignals = []CgroupSignal{
	{Name: "usage_bytes", Metric: "vigil_cgroup_memory_usage_bytes", Unit: "bytes", Help: "Memory charged to the cgroup (memory.current / memory.usage_in_bytes).", Value: func(c *CgroupSample) float64 { return u(c.Memory.UsageBytes) }},
	{Name: "peak_bytes", Metric: "vigil_cgroup_memory_peak_bytes", Unit: "bytes", Help: "Peak memory usage (memory.peak / memory.max_usage_in_bytes).", Value: func(c *CgroupSample) float64 { return u(c.Memory.PeakBytes) }},
	{Name: "working_set_bytes", Metric: "vigil_cgroup_memory_working_set_bytes", Unit: "bytes", Help: "Usage minus inactive file pages, as the kubelet computes it.", Value: func(c *CgroupSample) float64 { return u(c.Derived.WorkingSetBytes) }},
	{Name: "limit_bytes", Metric: "vigil_cgroup_memory_limit_bytes", Unit: "bytes", Help: "Effective limit: the size the cgroup can reach before a limit stops it, the tightest max/high of it and its ancestors less what the rest of each limited ancestor uses (+Inf if none).", Value: func(c *CgroupSample) float64 { return limit(c.Memory.EffectiveLimitBytes) }},
	{Name: "max_bytes", Metric: "vigil_cgroup_memory_max_bytes", Unit: "bytes", Help: "memory.max (v2) or memory.limit_in_bytes (v1); +Inf if unlimited.", Value: func(c *CgroupSample) float64 { return limit(c.Memory.MaxBytes) }},
	{Name: "high_bytes", Metric: "vigil_cgroup_memory_high_bytes", Unit: "bytes", Help: "memory.high (v2); +Inf if unset.", Value: func(c *CgroupSample) float64 { return limit(c.Memory.HighBytes) }, Version: 2},
	{Name: "low_bytes", Metric: "vigil_cgroup_memory_low_bytes", Unit: "bytes", Help: "memory.low (v2).", Value: func(c *CgroupSample) float64 { return u(c.Memory.LowBytes) }, Version: 2},
	{Name: "min_bytes", Metric: "vigil_cgroup_memory_min_bytes", Unit: "bytes", Help: "memory.min (v2).", Value: func(c *CgroupSample) float64 { return u(c.Memory.MinBytes) }, Version: 2},
	{Name: "soft_limit_bytes", Metric: "vigil_cgroup_memory_soft_limit_bytes", Unit: "bytes", Help: "memory.soft_limit_in_bytes (v1); +Inf if unset.", Value: func(c *CgroupSample) float64 { return limit(c.Memory.SoftLimitBytes) }, Version: 1},
	{Name: "swap_max_bytes", Metric: "vigil_cgroup_memory_swap_max_bytes", Unit: "bytes", Help: "memory.swap.max (v2); +Inf if unlimited.", Value: func(c *CgroupSample) float64 { return limit(c.Memory.SwapMaxBytes) }, Version: 2},
	{Name: "swap_usage_bytes", Metric: "vigil_cgroup_memory_swap_usage_bytes", Unit: "bytes", Help: "memory.swap.current (v2).", Value: func(c *CgroupSample) float64 { return u(c.Memory.SwapUsageBytes) }},
	{Name: "memsw_limit_bytes", Metric: "vigil_cgroup_memory_memsw_limit_bytes", Unit: "bytes", Help: "memory.memsw.limit_in_bytes (v1 with swap accounting); +Inf if unlimited.", Value: func(c *CgroupSample) float64 { return limit(c.Memory.MemswLimitBytes) }, Version: 1},
	{Name: "headroom_bytes", Metric: "vigil_cgroup_memory_headroom_bytes", Unit: "bytes", Help: "Effective limit minus working set (+Inf if unlimited).", Value: func(c *CgroupSample) float64 { return limit(c.Derived.HeadroomBytes) }},
	{Name: "usage_ratio", Metric: "vigil_cgroup_memory_usage_ratio", Unit: "ratio", Help: "Working set / effective limit (0 if unlimited).", Value: func(c *CgroupSample) float64 { return c.Derived.UsageRatio }},
	{Name: "growth_bytes_per_second", Metric: "vigil_cgroup_memory_growth_bytes_per_second", Unit: "per_second", Help: "Least-squares slope of the working set over the growth window.", Value: func(c *CgroupSample) float64 { return c.Derived.GrowthBytesPerSecond }},
	{Name: "seconds_to_limit", Metric: "vigil_cgroup_memory_seconds_to_limit", Unit: "seconds", Help: "Headroom / growth while growing; +Inf otherwise.", Value: func(c *CgroupSample) float64 { return float64(c.Derived.SecondsToLimit) }},
	{Name: "refault_rate", Metric: "vigil_cgroup_memory_refaults_per_second", Unit: "per_second", Help: "Workingset refaults (anon + file) per second.", Value: func(c *CgroupSample) float64 { return c.Derived.RefaultsPerSecond }},
	{Name: "reclaimable_bytes", Metric: "vigil_cgroup_memory_reclaimable_bytes", Unit: "bytes", Help: "Page cache reclaim can drop without swap: file - shmem - dirty - writeback.", Value: func(c *CgroupSample) float64 { return u(c.Derived.ReclaimableBytes) }},

	{Name: "stat.anon", Metric: "vigil_cgroup_memory_anon_bytes", Unit: "bytes", Help: "Anonymous memory (v2 anon, v1 total_rss).", Value: func(c *CgroupSample) float64 { return u(c.Stat.Anon) }},
	{Name: "stat.file", Metric: "vigil_cgroup_memory_file_bytes", Unit: "bytes", Help: "Page cache (v2 file, v1 total_cache).", Value: func(c *CgroupSample) float64 { return u(c.Stat.File) }},
	{Name: "stat.active_anon", Metric: "vigil_cgroup_memory_active_anon_bytes", Unit: "bytes", Help: "Anonymous memory on the active LRU.", Value: func(c *CgroupSample) float64 { return u(c.Stat.ActiveAnon) }},
	{Name: "stat.inactive_anon", Metric: "vigil_cgroup_memory_inactive_anon_bytes", Unit: "bytes", Help: "Anonymous memory on the inactive LRU.", Value: func(c *CgroupSample) float64 { return u(c.Stat.InactiveAnon) }},
	{Name: "stat.active_file", Metric: "vigil_cgroup_memory_active_file_bytes", Unit: "bytes", Help: "Page cache on the active LRU.", Value: func(c *CgroupSample) float64 { return u(c.Stat.ActiveFile) }},
	{Name: "stat.inactive_file", Metric: "vigil_cgroup_memory_inactive_file_bytes", Unit: "bytes", Help: "Page cache on the inactive LRU.", Value: func(c *CgroupSample) float64 { return u(c.Stat.InactiveFile) }},
	{Name: "stat.unevictable", Metric: "vigil_cgroup_memory_unevictable_bytes", Unit: "bytes", Help: "Unevictable memory.", Value: func(c *CgroupSample) float64 { return u(c.Stat.Unevictable) }},
	{Name: "stat.shmem", Metric: "vigil_cgroup_memory_shmem_bytes", Unit: "bytes", Help: "Shared memory and tmpfs.", Value: func(c *CgroupSample) float64 { return u(c.Stat.Shmem) }},
	{Name: "stat.file_mapped", Metric: "vigil_cgroup_memory_file_mapped_bytes", Unit: "bytes", Help: "Page cache mapped into processes.", Value: func(c *CgroupSample) float64 { return u(c.Stat.FileMapped) }},
	{Name: "stat.file_dirty", Metric: "vigil_cgroup_memory_file_dirty_bytes", Unit: "bytes", Help: "Dirty page cache.", Value: func(c *CgroupSample) float64 { return u(c.Stat.FileDirty) }},
	{Name: "stat.file_writeback", Metric: "vigil_cgroup_memory_file_writeback_bytes", Unit: "bytes", Help: "Page cache under writeback.", Value: func(c *CgroupSample) float64 { return u(c.Stat.FileWriteback) }},
	{Name: "stat.slab", Metric: "vigil_cgroup_memory_slab_bytes", Unit: "bytes", Help: "Kernel slab memory (v2).", Value: func(c *CgroupSample) float64 { return u(c.Stat.Slab) }, Version: 2},
	{Name: "stat.swap", Metric: "vigil_cgroup_memory_swap_bytes", Unit: "bytes", Help: "Swap used (v1 memory.stat swap).", Value: func(c *CgroupSample) float64 { return u(c.Stat.Swap) }},
	{Name: "stat.pgfault", Metric: "vigil_cgroup_memory_pgfault_total", Unit: "count", Counter: true, Help: "Page faults.", Value: func(c *CgroupSample) float64 { return u(c.Stat.Pgfault) }},
	{Name: "stat.pgmajfault", Metric: "vigil_cgroup_memory_pgmajfault_total", Unit: "count", Counter: true, Help: "Major page faults.", Value: func(c *CgroupSample) float64 { return u(c.Stat.Pgmajfault) }},
	{Name: "stat.workingset_refault_anon", Metric: "vigil_cgroup_memory_workingset_refault_anon_total", Unit: "count", Counter: true, Help: "Refaults of previously evicted anonymous pages.", Value: func(c *CgroupSample) float64 { return u(c.Stat.WorkingsetRefaultAnon) }},
	{Name: "stat.workingset_refault_file", Metric: "vigil_cgroup_memory_workingset_refault_file_total", Unit: "count", Counter: true, Help: "Refaults of previously evicted file pages.", Value: func(c *CgroupSample) float64 { return u(c.Stat.WorkingsetRefaultFile) }},
	{Name: "stat.workingset_activate_file", Metric: "vigil_cgroup_memory_workingset_activate_file_total", Unit: "count", Counter: true, Help: "Refaulted file pages activated immediately.", Value: func(c *CgroupSample) float64 { return u(c.Stat.WorkingsetActivateFile) }},

	{Name: "events.low", Metric: "vigil_cgroup_memory_events_low_total", Unit: "count", Counter: true, Help: "memory.events low (v2).", Value: func(c *CgroupSample) float64 { return u(c.Events.Low) }, Version: 2},
	{Name: "events.high", Metric: "vigil_cgroup_memory_events_high_total", Unit: "count", Counter: true, Help: "memory.events high: times usage went over memory.high (v2).", Value: func(c *CgroupSample) float64 { return u(c.Events.High) }, Version: 2},
	{Name: "events.max", Metric: "vigil_cgroup_memory_events_max_total", Unit: "count", Counter: true, Help: "memory.events max (v2) or failcnt (v1): times usage hit the limit.", Value: func(c *CgroupSample) float64 { return u(c.Events.Max) }},
	{Name: "events.oom", Metric: "vigil_cgroup_memory_events_oom_total", Unit: "count", Counter: true, Help: "memory.events oom (v2).", Value: func(c *CgroupSample) float64 { return u(c.Events.OOM) }, Version: 2},
	{Name: "events.oom_kill", Metric: "vigil_cgroup_memory_events_oom_kill_total", Unit: "count", Counter: true, Help: "Processes killed by the kernel OOM killer in this cgroup.", Value: func(c *CgroupSample) float64 { return u(c.Events.OOMKill) }},
	{Name: "kernel_oom_kills", Metric: "vigil_cgroup_kernel_oom_kills_total", Unit: "count", Counter: true, Help: "Kernel OOM kills of tasks in this cgroup read from the kernel log (/dev/kmsg) since vigil started.", Value: func(c *CgroupSample) float64 { return u(c.KernelOOMKills) }},
	{Name: "events.under_oom", Metric: "vigil_cgroup_memory_under_oom", Unit: "count", Help: "1 while a v1 cgroup is under OOM with the killer disabled.", Value: func(c *CgroupSample) float64 { return u(c.Events.UnderOOM) }, Version: 1},

	{Name: "psi.memory.some_avg10", Metric: "vigil_cgroup_memory_pressure_some_avg10_percent", Unit: "percent", Help: "memory.pressure some avg10 (share of time some task stalled on memory).", Value: func(c *CgroupSample) float64 { return c.Pressure.Some.Avg10 }, Version: 2},
	{Name: "psi.memory.some_avg60", Metric: "", Unit: "percent", Help: "memory.pressure some avg60.", Value: func(c *CgroupSample) float64 { return c.Pressure.Some.Avg60 }},
	{Name: "psi.memory.full_avg10", Metric: "vigil_cgroup_memory_pressure_full_avg10_percent", Unit: "percent", Help: "memory.pressure full avg10 (share of time all tasks stalled).", Value: func(c *CgroupSample) float64 { return c.Pressure.Full.Avg10 }, Version: 2},
	{Name: "psi.memory.full_avg60", Metric: "", Unit: "percent", Help: "memory.pressure full avg60.", Value: func(c *CgroupSample) float64 { return c.Pressure.Full.Avg60 }},
	{Name: "psi.memory.some_total", Metric: "vigil_cgroup_memory_pressure_some_seconds_total", Unit: "seconds", Counter: true, Help: "Cumulative time some task stalled on memory.", Value: func(c *CgroupSample) float64 { return float64(c.Pressure.Some.Total) / 1e6 }, Version: 2},
	{Name: "psi.memory.full_total", Metric: "vigil_cgroup_memory_pressure_full_seconds_total", Unit: "seconds", Counter: true, Help: "Cumulative time all tasks stalled on memory.", Value: func(c *CgroupSample) float64 { return float64(c.Pressure.Full.Total) / 1e6 }, Version: 2},

	// Container logs and traces: exported per pattern and per service by
	// their own collectors, not per cgroup. NaN when there is no source.
	{Name: "log.matches_total", Metric: "", Unit: "count", Counter: true, Help: "Container log messages that matched any configured pattern (one pattern: log_matches(\"name\")); NaN without log files.", Value: logMatchesTotal},
	{Name: "service.request_rate", Metric: "", Unit: "per_second", Help: "Requests per second of the service whose OTLP spans are joined to the cgroup; NaN without one.", Value: func(c *CgroupSample) float64 { return serviceValue(c, c.Service.RequestsPerSecond) }},
	{Name: "service.error_ratio", Metric: "", Unit: "ratio", Help: "Share of the service's requests that failed over the OTLP window; NaN without a service.", Value: func(c *CgroupSample) float64 { return serviceValue(c, c.Service.ErrorRatio) }},
	{Name: "service.p99_latency_seconds", Metric: "", Unit: "seconds", Help: "99th percentile request latency of the service over the OTLP window; NaN without a service.", Value: func(c *CgroupSample) float64 { return serviceValue(c, c.Service.P99LatencySeconds) }},
	{Name: "service.requests", Metric: "", Unit: "count", Help: "Requests of the service in the OTLP window; NaN without a service.", Value: func(c *CgroupSample) float64 { return serviceValue(c, u(c.Service.Requests)) }},
}

// NodeSignals lists every node-wide signal. Rules see them under "node."
// (e.g. node.psi.memory.some_avg10) and node-targeted rules also without it.
var NodeSignals = []NodeSignal{
	{Name: "mem_total_bytes", Metric: "vigil_node_memory_total_bytes", Unit: "bytes", Help: "MemTotal.", Value: func(n *NodeSample) float64 { return u(n.MemTotalBytes) }},
	{Name: "mem_available_bytes", Metric: "vigil_node_memory_available_bytes", Unit: "bytes", Help: "MemAvailable.", Value: func(n *NodeSample) float64 { return u(n.MemAvailableBytes) }},
	{Name: "mem_free_bytes", Metric: "vigil_node_memory_free_bytes", Unit: "bytes", Help: "MemFree.", Value: func(n *NodeSample) float64 { return u(n.MemFreeBytes) }},
	{Name: "cached_bytes", Metric: "vigil_node_memory_cached_bytes", Unit: "bytes", Help: "Cached (page cache).", Value: func(n *NodeSample) float64 { return u(n.CachedBytes) }},
	{Name: "swap_total_bytes", Metric: "vigil_node_memory_swap_total_bytes", Unit: "bytes", Help: "SwapTotal.", Value: func(n *NodeSample) float64 { return u(n.SwapTotalBytes) }},
	{Name: "swap_free_bytes", Metric: "vigil_node_memory_swap_free_bytes", Unit: "bytes", Help: "SwapFree.", Value: func(n *NodeSample) float64 { return u(n.SwapFreeBytes) }},
	{Name: "active_anon_bytes", Metric: "vigil_node_memory_active_anon_bytes", Unit: "bytes", Help: "Active(anon).", Value: func(n *NodeSample) float64 { return u(n.ActiveAnonBytes) }},
	{Name: "inactive_anon_bytes", Metric: "vigil_node_memory_inactive_anon_bytes", Unit: "bytes", Help: "Inactive(anon).", Value: func(n *NodeSample) float64 { return u(n.InactiveAnonBytes) }},
	{Name: "active_file_bytes", Metric: "vigil_node_memory_active_file_bytes", Unit: "bytes", Help: "Active(file).", Value: func(n *NodeSample) float64 { return u(n.ActiveFileBytes) }},
	{Name: "inactive_file_bytes", Metric: "vigil_node_memory_inactive_file_bytes", Unit: "bytes", Help: "Inactive(file).", Value: func(n *NodeSample) float64 { return u(n.InactiveFileBytes) }},
	{Name: "shmem_bytes", Metric: "vigil_node_memory_shmem_bytes", Unit: "bytes", Help: "Shmem.", Value: func(n *NodeSample) float64 { return u(n.ShmemBytes) }},
	{Name: "dirty_bytes", Metric: "vigil_node_memory_dirty_bytes", Unit: "bytes", Help: "Dirty.", Value: func(n *NodeSample) float64 { return u(n.DirtyBytes) }},
	{Name: "slab_bytes", Metric: "vigil_node_memory_slab_bytes", Unit: "bytes", Help: "Slab.", Value: func(n *NodeSample) float64 { return u(n.SlabBytes) }},
	{Name: "committed_as_bytes", Metric: "vigil_node_memory_committed_as_bytes", Unit: "bytes", Help: "Committed_AS.", Value: func(n *NodeSample) float64 { return u(n.CommittedASBytes) }},
	{Name: "used_ratio", Metric: "vigil_node_memory_used_ratio", Unit: "ratio", Help: "1 - MemAvailable/MemTotal.", Value: func(n *NodeSample) float64 { return n.UsedRatio }},
	{Name: "refault_rate", Metric: "vigil_node_memory_refaults_per_second", Unit: "per_second", Help: "Node workingset refaults per second.", Value: func(n *NodeSample) float64 { return n.RefaultsPerSecond }},
	{Name: "oom_kills_delta", Metric: "", Unit: "count", Help: "Kernel OOM kills on the node since the previous tick.", Value: func(n *NodeSample) float64 { return u(n.OOMKillsDelta) }},

	{Name: "vmstat.pgscan_kswapd", Metric: "vigil_node_vmstat_pgscan_kswapd_total", Unit: "count", Counter: true, Help: "Pages scanned by kswapd.", Value: func(n *NodeSample) float64 { return u(n.VMStat.PgscanKswapd) }},
	{Name: "vmstat.pgscan_direct", Metric: "vigil_node_vmstat_pgscan_direct_total", Unit: "count", Counter: true, Help: "Pages scanned by direct reclaim.", Value: func(n *NodeSample) float64 { return u(n.VMStat.PgscanDirect) }},
	{Name: "vmstat.pgsteal_kswapd", Metric: "vigil_node_vmstat_pgsteal_kswapd_total", Unit: "count", Counter: true, Help: "Pages reclaimed by kswapd.", Value: func(n *NodeSample) float64 { return u(n.VMStat.PgstealKswapd) }},
	{Name: "vmstat.pgsteal_direct", Metric: "vigil_node_vmstat_pgsteal_direct_total", Unit: "count", Counter: true, Help: "Pages reclaimed by direct reclaim.", Value: func(n *NodeSample) float64 { return u(n.VMStat.PgstealDirect) }},
	{Name: "vmstat.pgmajfault", Metric: "vigil_node_vmstat_pgmajfault_total", Unit: "count", Counter: true, Help: "Major page faults.", Value: func(n *NodeSample) float64 { return u(n.VMStat.Pgmajfault) }},
	{Name: "vmstat.workingset_refault_anon", Metric: "vigil_node_vmstat_workingset_refault_anon_total", Unit: "count", Counter: true, Help: "Anonymous refaults.", Value: func(n *NodeSample) float64 { return u(n.VMStat.WorkingsetRefaultAnon) }},
	{Name: "vmstat.workingset_refault_file", Metric: "vigil_node_vmstat_workingset_refault_file_total", Unit: "count", Counter: true, Help: "File refaults.", Value: func(n *NodeSample) float64 { return u(n.VMStat.WorkingsetRefaultFile) }},
	{Name: "vmstat.oom_kill", Metric: "vigil_node_vmstat_oom_kill_total", Unit: "count", Counter: true, Help: "Kernel OOM kills (/proc/vmstat oom_kill).", Value: func(n *NodeSample) float64 { return u(n.VMStat.OOMKill) }},
	{Name: "vmstat.allocstall", Metric: "vigil_node_vmstat_allocstall_total", Unit: "count", Counter: true, Help: "Direct reclaim allocation stalls (sum of allocstall_*).", Value: func(n *NodeSample) float64 { return u(n.VMStat.AllocStall) }},

	{Name: "psi.memory.some_avg10", Metric: "vigil_node_pressure_memory_some_avg10_percent", Unit: "percent", Help: "/proc/pressure/memory some avg10.", Value: func(n *NodeSample) float64 { return n.MemoryPressure.Some.Avg10 }},
	{Name: "psi.memory.some_avg60", Metric: "", Unit: "percent", Help: "/proc/pressure/memory some avg60.", Value: func(n *NodeSample) float64 { return n.MemoryPressure.Some.Avg60 }},
	{Name: "psi.memory.full_avg10", Metric: "vigil_node_pressure_memory_full_avg10_percent", Unit: "percent", Help: "/proc/pressure/memory full avg10.", Value: func(n *NodeSample) float64 { return n.MemoryPressure.Full.Avg10 }},
	{Name: "psi.memory.full_avg60", Metric: "", Unit: "percent", Help: "/proc/pressure/memory full avg60.", Value: func(n *NodeSample) float64 { return n.MemoryPressure.Full.Avg60 }},
	{Name: "psi.memory.some_total", Metric: "vigil_node_pressure_memory_some_seconds_total", Unit: "seconds", Counter: true, Help: "Cumulative time some task stalled on memory.", Value: func(n *NodeSample) float64 { return float64(n.MemoryPressure.Some.Total) / 1e6 }},
	{Name: "psi.memory.full_total", Metric: "vigil_node_pressure_memory_full_seconds_total", Unit: "seconds", Counter: true, Help: "Cumulative time all tasks stalled on memory.", Value: func(n *NodeSample) float64 { return float64(n.MemoryPressure.Full.Total) / 1e6 }},
	{Name: "psi.cpu.some_avg10", Metric: "vigil_node_pressure_cpu_some_avg10_percent", Unit: "percent", Help: "/proc/pressure/cpu some avg10.", Value: func(n *NodeSample) float64 { return n.CPUPressure.Some.Avg10 }},
	{Name: "psi.io.some_avg10", Metric: "vigil_node_pressure_io_some_avg10_percent", Unit: "percent", Help: "/proc/pressure/io some avg10.", Value: func(n *NodeSample) float64 { return n.IOPressure.Some.Avg10 }},
	{Name: "psi.io.full_avg10", Metric: "vigil_node_pressure_io_full_avg10_percent", Unit: "percent", Help: "/proc/pressure/io full avg10.", Value: func(n *NodeSample) float64 { return n.IOPressure.Full.Avg10 }},
}

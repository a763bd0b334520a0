// Package collectors owns what vigil reads from the world: the Snapshot type
// that every tick produces, the canonical table of signals derived from it,
// and (in its subpackages) the readers for cgroup v1/v2, node memory and
// pressure, kernel notifications and workload identity.
//
// A collector never decides anything: it fills a Snapshot, and rules/ and
// remediate/ read it.
package collectors

import (
	"encoding/json"
	"math"
	"strconv"
	"time"
)

// Snapshot is everything vigil saw in one tick. Every consumer of a tick sees
// the same Snapshot, so decisions are consistent and replayable.
//
// A Snapshot is filled in place by the sweep and its slices are reused from
// tick to tick: a consumer that keeps data beyond the tick must copy it.
type Snapshot struct {
	// Seq increases by one per full sweep; off-cycle (event-driven) partial
	// snapshots carry the Seq of the sweep they follow.
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	// Partial is true for an off-cycle snapshot that holds only the cgroups
	// an event concerned (Trigger says which event).
	Partial bool   `json:"partial,omitempty"`
	Trigger *Event `json:"trigger,omitempty"`

	Hierarchy Hierarchy      `json:"hierarchy"`
	Node      NodeSample     `json:"node"`
	Cgroups   []CgroupSample `json:"cgroups"`
	// Alerts are external alerts (Alertmanager webhook) active at Time, fed in
	// as signals so that rules can fire from them.
	Alerts []Alert `json:"alerts,omitempty"`
	// KernelOOMKills are the kernel OOM kills read from the kernel log
	// (/dev/kmsg) since the previous snapshot, oldest first.
	KernelOOMKills []KernelOOMKill `json:"kernel_oom_kills,omitempty"`
}

// KernelOOMKill is one process the kernel OOM killer killed, as its report in
// the kernel log tells it.
type KernelOOMKill struct {
	Time time.Time `json:"time"`
	// Seq is the kernel log sequence number of the kill line.
	Seq uint64 `json:"seq"`
	// CgroupPath is the killed task's memory cgroup (task_memcg), relative
	// to the hierarchy root like CgroupSample.Path; OOMMemcg is the cgroup
	// whose limit was hit ("/" for a node-wide OOM).
	CgroupPath string `json:"cgroup_path"`
	OOMMemcg   string `json:"oom_memcg,omitempty"`
	// Constraint is CONSTRAINT_MEMCG for a cgroup limit, CONSTRAINT_NONE
	// for a node-wide OOM.
	Constraint string `json:"constraint"`
	Global     bool   `json:"global,omitempty"`
	PID        int    `json:"pid"`
	Comm       string `json:"comm"`
	// Memory of the killed task at the kill.
	AnonRSSBytes  uint64 `json:"anon_rss_bytes"`
	FileRSSBytes  uint64 `json:"file_rss_bytes"`
	ShmemRSSBytes uint64 `json:"shmem_rss_bytes"`
	TotalVMBytes  uint64 `json:"total_vm_bytes"`
	OOMScoreAdj   int    `json:"oom_score_adj"`
	// MemcgUsageBytes and MemcgLimitBytes come from the report's memory
	// dump (0 when absent).
	MemcgUsageBytes uint64 `json:"memcg_usage_bytes,omitempty"`
	MemcgLimitBytes uint64 `json:"memcg_limit_bytes,omitempty"`
	// Report holds the report's lines, header to kill.
	Report []string `json:"report,omitempty"`
}

// Hierarchy describes the cgroup layout vigil detected under the host root.
type Hierarchy struct {
	// Mode is "unified" (cgroup v2 only), "hybrid" (v1 controllers plus an
	// empty v2 mount) or "legacy" (v1 only).
	Mode string `json:"mode"`
	// MemoryRoot is the absolute directory of the memory hierarchy that is
	// swept (e.g. /sys/fs/cgroup or /sys/fs/cgroup/memory).
	MemoryRoot string `json:"memory_root"`
	// Version is the cgroup version of the memory controller: 1 or 2.
	Version int `json:"version"`
}

// CgroupSample is one cgroup as seen in one tick.
type CgroupSample struct {
	// Path is relative to the hierarchy root, always starting with "/"
	// ("/" is the root cgroup). It is the same in every v1 controller.
	Path     string   `json:"path"`
	Identity Identity `json:"identity"`

	Memory   CgroupMemory `json:"memory"`
	Stat     MemoryStat   `json:"stat"`
	Events   MemoryEvents `json:"events"`
	Pressure Pressure     `json:"pressure"`
	Derived  Derived      `json:"derived"`
	// LogMatches are the cumulative pattern counters of the container's (for
	// a pod cgroup: its containers') CRI log files, one per configured
	// pattern, sorted by pattern; nil when the cgroup has no followed log
	// files. Filled by the pod logs enricher.
	LogMatches []LogMatch `json:"log_matches,omitempty"`
	// Service holds the RED signals of the service(s) whose OTLP spans were
	// joined to this cgroup (Present false when none). Filled by the OTLP
	// enricher.
	Service ServiceSample `json:"service,omitzero"`
	// KernelOOMKills counts the kernel OOM kills in this cgroup read from
	// the kernel log since vigil started (0 when the kernel log is not
	// read).
	KernelOOMKills uint64 `json:"kernel_oom_kills,omitempty"`
}

// Unlimited is the value vigil uses for a limit that is not set ("max" on v2,
// the page-counter maximum on v1).
const Unlimited = math.MaxUint64

// CgroupMemory holds usage and limits in bytes. Limits not set are Unlimited;
// files absent on this cgroup version are 0 unless noted.
type CgroupMemory struct {
	UsageBytes uint64 `json:"usage_bytes"`
	// PeakBytes is memory.peak (v2) or memory.max_usage_in_bytes (v1).
	PeakBytes uint64 `json:"peak_bytes"`
	// MaxBytes is memory.max (v2) or memory.limit_in_bytes (v1).
	MaxBytes Bytes `json:"max_bytes"`
	// HighBytes is memory.high (v2 only; Unlimited on v1).
	HighBytes Bytes `json:"high_bytes"`
	// LowBytes and MinBytes are memory.low / memory.min (v2 only).
	LowBytes uint64 `json:"low_bytes"`
	MinBytes uint64 `json:"min_bytes"`
	// SoftLimitBytes is memory.soft_limit_in_bytes (v1 only; Unlimited on v2).
	SoftLimitBytes Bytes `json:"soft_limit_bytes"`
	// SwapMaxBytes is memory.swap.max (v2); MemswLimitBytes is
	// memory.memsw.limit_in_bytes (v1, when swap accounting is on).
	SwapMaxBytes    Bytes  `json:"swap_max_bytes"`
	SwapUsageBytes  uint64 `json:"swap_usage_bytes"`
	MemswLimitBytes Bytes  `json:"memsw_limit_bytes"`
	MemswUsageBytes uint64 `json:"memsw_usage_bytes"`
	// EffectiveLimitBytes is the size this cgroup can reach before a limit
	// stops it: the tightest of its own and its ancestors' max and high (v1:
	// hierarchical_memory_limit), less, for each limited ancestor, what the
	// rest of that ancestor uses (siblings under a shared limit leave each
	// other less). Unlimited if no limit applies.
	EffectiveLimitBytes Bytes `json:"effective_limit_bytes"`
}

// MemoryStat is memory.stat normalised across versions. Values are
// hierarchical (this cgroup and its descendants) on both versions: on v1 they
// come from the total_* keys. Bytes unless the name says otherwise.
type MemoryStat struct {
	Anon              uint64 `json:"anon"`          // v2 anon, v1 total_rss
	File              uint64 `json:"file"`          // v2 file, v1 total_cache
	ActiveAnon        uint64 `json:"active_anon"`   // both
	InactiveAnon      uint64 `json:"inactive_anon"` // both
	ActiveFile        uint64 `json:"active_file"`
	InactiveFile      uint64 `json:"inactive_file"`
	Unevictable       uint64 `json:"unevictable"`
	Shmem             uint64 `json:"shmem"`
	FileMapped        uint64 `json:"file_mapped"`    // v1 mapped_file
	FileDirty         uint64 `json:"file_dirty"`     // v1 dirty
	FileWriteback     uint64 `json:"file_writeback"` // v1 writeback
	AnonTHP           uint64 `json:"anon_thp"`       // v1 rss_huge
	Swap              uint64 `json:"swap"`           // v1 swap (memsw only)
	KernelStack       uint64 `json:"kernel_stack"`   // v2 only
	Slab              uint64 `json:"slab"`           // v2 only
	SlabReclaimable   uint64 `json:"slab_reclaimable"`
	SlabUnreclaimable uint64 `json:"slab_unreclaimable"`
	Sock              uint64 `json:"sock"`
	// Event counters (counts, monotonic).
	Pgfault                uint64 `json:"pgfault"`
	Pgmajfault             uint64 `json:"pgmajfault"`
	Pgscan                 uint64 `json:"pgscan"`
	Pgsteal                uint64 `json:"pgsteal"`
	WorkingsetRefaultAnon  uint64 `json:"workingset_refault_anon"`
	WorkingsetRefaultFile  uint64 `json:"workingset_refault_file"`
	WorkingsetActivateAnon uint64 `json:"workingset_activate_anon"`
	WorkingsetActivateFile uint64 `json:"workingset_activate_file"`
	WorkingsetRestoreAnon  uint64 `json:"workingset_restore_anon"`
	WorkingsetRestoreFile  uint64 `json:"workingset_restore_file"`
	WorkingsetNodereclaim  uint64 `json:"workingset_nodereclaim"`
	// v1 only: hierarchical limits reported in memory.stat.
	HierarchicalMemoryLimit Bytes `json:"hierarchical_memory_limit,omitempty"`
	HierarchicalMemswLimit  Bytes `json:"hierarchical_memsw_limit,omitempty"`
}

// MemoryEvents are the cumulative memory event counters of a cgroup.
// v2: memory.events (hierarchical). v1: Max is failcnt, OOMKill and UnderOOM
// come from memory.oom_control; Low/High/OOM stay 0.
type MemoryEvents struct {
	Low          uint64 `json:"low"`
	High         uint64 `json:"high"`
	Max          uint64 `json:"max"`
	OOM          uint64 `json:"oom"`
	OOMKill      uint64 `json:"oom_kill"`
	OOMGroupKill uint64 `json:"oom_group_kill"`
	// UnderOOM is 1 while a v1 cgroup is under OOM with the OOM killer
	// disabled (memory.oom_control under_oom).
	UnderOOM uint64 `json:"under_oom"`
	// OOMKillDisable mirrors v1 oom_kill_disable.
	OOMKillDisable uint64 `json:"oom_kill_disable"`
}

// Pressure is a PSI reading (a cgroup's memory.pressure or a
// /proc/pressure/* file). Present is false when the file does not exist.
type Pressure struct {
	Present bool      `json:"present"`
	Some    PSIRecord `json:"some"`
	Full    PSIRecord `json:"full"`
}

// PSIRecord is one line of a pressure file: averages are percentages,
// Total is the cumulative stall time in microseconds.
type PSIRecord struct {
	Avg10  float64 `json:"avg10"`
	Avg60  float64 `json:"avg60"`
	Avg300 float64 `json:"avg300"`
	Total  uint64  `json:"total"`
}

// Derived holds the signals vigil computes once per cgroup per tick, in the
// collector layer, so every consumer agrees on them.
type Derived struct {
	// WorkingSetBytes is usage minus inactive file pages, as the kubelet
	// computes it (clamped at 0).
	WorkingSetBytes uint64 `json:"working_set_bytes"`
	// HeadroomBytes is EffectiveLimitBytes - WorkingSetBytes (0 when over,
	// Unlimited when no limit).
	HeadroomBytes Bytes `json:"headroom_bytes"`
	// GrowthBytesPerSecond is the least-squares slope of the working set over
	// the growth window.
	GrowthBytesPerSecond float64 `json:"growth_bytes_per_second"`
	// SecondsToLimit is HeadroomBytes / GrowthBytesPerSecond while growing;
	// +Inf when not growing or unlimited.
	SecondsToLimit Float `json:"seconds_to_limit"`
	// RefaultsPerSecond is the rate of workingset refaults (anon + file)
	// since the previous sample.
	RefaultsPerSecond float64 `json:"refaults_per_second"`
	// ReclaimableBytes is page cache that reclaim can drop without swap:
	// file - shmem - dirty - writeback (clamped at 0).
	ReclaimableBytes uint64 `json:"reclaimable_bytes"`
	// UsageRatio is WorkingSetBytes / EffectiveLimitBytes (0 if unlimited).
	UsageRatio float64 `json:"usage_ratio"`
	// StatAgeSeconds is how old the memory.stat values of the sample (Stat,
	// and what derives from them) are at the snapshot time: 0 when read in
	// this snapshot. The usage and event files are read at every snapshot;
	// memory.stat of a quiet cgroup may be reused for a few seconds (the
	// agent's stat_max_age).
	StatAgeSeconds float64 `json:"stat_age_seconds,omitempty"`
}

// Identity maps a cgroup to what a user recognises. Fields that do not apply
// are empty. Pod names and labels are filled later from the API server.
type Identity struct {
	// Kind is "pod", "container", "unit", "slice", "scope" or "cgroup".
	Kind string `json:"kind"`
	// QoS is the Kubernetes QoS class from the path: guaranteed, burstable,
	// besteffort.
	QoS         string `json:"qos,omitempty"`
	PodUID      string `json:"pod_uid,omitempty"`
	ContainerID string `json:"container_id,omitempty"`
	// Runtime is the container runtime named in the path (containerd, crio,
	// docker) when the path says.
	Runtime string `json:"runtime,omitempty"`
	// Unit is the systemd unit (foo.service, bar.slice, baz.scope).
	Unit string `json:"unit,omitempty"`

	// Filled from the Kubernetes API when available.
	Namespace   string            `json:"namespace,omitempty"`
	Pod         string            `json:"pod,omitempty"`
	Container   string            `json:"container,omitempty"`
	Owner       string            `json:"owner,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// NodeSample is the node-wide memory picture.
type NodeSample struct {
	Hostname string `json:"hostname"`
	// MemInfo holds /proc/meminfo in bytes (keys as in the file, e.g.
	// MemTotal, MemAvailable); HugePages_* counts are pages.
	MemTotalBytes     uint64 `json:"mem_total_bytes"`
	MemFreeBytes      uint64 `json:"mem_free_bytes"`
	MemAvailableBytes uint64 `json:"mem_available_bytes"`
	BuffersBytes      uint64 `json:"buffers_bytes"`
	CachedBytes       uint64 `json:"cached_bytes"`
	SwapTotalBytes    uint64 `json:"swap_total_bytes"`
	SwapFreeBytes     uint64 `json:"swap_free_bytes"`
	ActiveAnonBytes   uint64 `json:"active_anon_bytes"`
	InactiveAnonBytes uint64 `json:"inactive_anon_bytes"`
	ActiveFileBytes   uint64 `json:"active_file_bytes"`
	InactiveFileBytes uint64 `json:"inactive_file_bytes"`
	ShmemBytes        uint64 `json:"shmem_bytes"`
	DirtyBytes        uint64 `json:"dirty_bytes"`
	WritebackBytes    uint64 `json:"writeback_bytes"`
	SlabBytes         uint64 `json:"slab_bytes"`
	SReclaimableBytes uint64 `json:"sreclaimable_bytes"`
	CommittedASBytes  uint64 `json:"committed_as_bytes"`
	CommitLimitBytes  uint64 `json:"commit_limit_bytes"`

	// VMStat counters from /proc/vmstat (cumulative).
	VMStat VMStat `json:"vmstat"`

	MemoryPressure Pressure `json:"memory_pressure"`
	CPUPressure    Pressure `json:"cpu_pressure"`
	IOPressure     Pressure `json:"io_pressure"`

	// Derived node signals.
	// UsedRatio is 1 - MemAvailable/MemTotal.
	UsedRatio float64 `json:"used_ratio"`
	// RefaultsPerSecond is the node-wide workingset refault rate.
	RefaultsPerSecond float64 `json:"refaults_per_second"`
	// OOMKillsDelta is the number of kernel OOM kills since the previous tick.
	OOMKillsDelta uint64 `json:"oom_kills_delta"`
}

// VMStat holds the /proc/vmstat counters vigil uses (cumulative counts).
type VMStat struct {
	PgscanKswapd          uint64 `json:"pgscan_kswapd"`
	PgscanDirect          uint64 `json:"pgscan_direct"`
	PgstealKswapd         uint64 `json:"pgsteal_kswapd"`
	PgstealDirect         uint64 `json:"pgsteal_direct"`
	Pgmajfault            uint64 `json:"pgmajfault"`
	WorkingsetRefaultAnon uint64 `json:"workingset_refault_anon"`
	WorkingsetRefaultFile uint64 `json:"workingset_refault_file"`
	WorkingsetActivate    uint64 `json:"workingset_activate"`
	OOMKill               uint64 `json:"oom_kill"`
	AllocStall            uint64 `json:"allocstall"`
}

// Alert is an external alert (e.g. from Alertmanager) fed in as a signal.
type Alert struct {
	Name        string            `json:"name"`
	Fingerprint string            `json:"fingerprint"`
	Status      string            `json:"status"` // firing | resolved
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	StartsAt    time.Time         `json:"starts_at"`
	// Target is the cgroup path the alert was matched to ("" = node).
	Target string `json:"target,omitempty"`
}

// Event is a kernel notification that woke vigil between ticks.
type Event struct {
	// Kind is one of the EventKind constants.
	Kind string    `json:"kind"`
	Path string    `json:"path"` // cgroup path ("" for node-wide PSI)
	Time time.Time `json:"time"`
}

// Event kinds.
const (
	EventThreshold    = "threshold"     // v1 usage threshold crossed
	EventOOM          = "oom"           // v1 oom_control notification
	EventMemoryEvents = "memory_events" // v2 memory.events changed
	EventPSI          = "psi"           // PSI trigger fired
)

// Bytes is a byte count whose Unlimited value encodes as the JSON string
// "max", so snapshots stay readable.
type Bytes uint64

// MarshalJSON writes Unlimited as "max".
func (b Bytes) MarshalJSON() ([]byte, error) {
	if b == Unlimited {
		return []byte(`"max"`), nil
	}
	return strconv.AppendUint(nil, uint64(b), 10), nil
}

// UnmarshalJSON accepts a number or "max".
func (b *Bytes) UnmarshalJSON(data []byte) error {
	if string(data) == `"max"` {
		*b = Unlimited
		return nil
	}
	var v uint64
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	*b = Bytes(v)
	return nil
}

// Float is a float64 whose infinities and NaN survive JSON as strings
// ("+Inf", "-Inf", "NaN"), as in the Prometheus text format.
type Float float64

// MarshalJSON writes non-finite values as strings.
func (f Float) MarshalJSON() ([]byte, error) {
	v := float64(f)
	switch {
	case math.IsInf(v, 1):
		return []byte(`"+Inf"`), nil
	case math.IsInf(v, -1):
		return []byte(`"-Inf"`), nil
	case math.IsNaN(v):
		return []byte(`"NaN"`), nil
	}
	return strconv.AppendFloat(nil, v, 'g', -1, 64), nil
}

// UnmarshalJSON accepts a number or one of the strings MarshalJSON writes.
func (f *Float) UnmarshalJSON(data []byte) error {
	switch string(data) {
	case `"+Inf"`:
		*f = Float(math.Inf(1))
		return nil
	case `"-Inf"`:
		*f = Float(math.Inf(-1))
		return nil
	case `"NaN"`:
		*f = Float(math.NaN())
		return nil
	}
	var v float64
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	*f = Float(v)
	return nil
}

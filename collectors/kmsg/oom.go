package kmsg

import (
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/collectors/identity"
)

// Constraint values of the oom-kill line.
const (
	ConstraintNone    = "CONSTRAINT_NONE"
	ConstraintMemcg   = "CONSTRAINT_MEMCG"
	ConstraintCpuset  = "CONSTRAINT_CPUSET"
	ConstraintMemPoly = "CONSTRAINT_MEMORY_POLICY"
)

// OOMEvent is one process killed by the kernel OOM killer, with the context
// of the report it came from.
type OOMEvent struct {
	// Seq is the sequence number of the "Killed process" record; StartSeq
	// that of the report's "invoked oom-killer" header (0 when the header
	// was not seen).
	Seq      uint64 `json:"seq"`
	StartSeq uint64 `json:"start_seq,omitempty"`
	// Time is BootTime + Monotonic.
	Time      time.Time     `json:"time"`
	Monotonic time.Duration `json:"monotonic_ns"`

	// Constraint is CONSTRAINT_MEMCG for a cgroup limit, CONSTRAINT_NONE
	// for a node-wide OOM (CPUSET / MEMORY_POLICY are rare).
	Constraint string `json:"constraint"`
	// Global is true when the node, not a cgroup limit, ran out of memory.
	Global bool `json:"global"`
	// CgroupPath is the memory cgroup of the killed task (task_memcg), as a
	// path relative to the hierarchy root ("/kubepods/burstable/pod.../<id>").
	CgroupPath string `json:"cgroup_path"`
	// Identity is what CgroupPath names (pod, container, unit), from the
	// path alone; names and labels come later from the Kubernetes API.
	Identity collectors.Identity `json:"identity"`
	// OOMMemcg is the cgroup whose limit was hit (oom_memcg; "/" when global).
	OOMMemcg    string `json:"oom_memcg,omitempty"`
	Nodemask    string `json:"nodemask,omitempty"`
	Cpuset      string `json:"cpuset,omitempty"`
	MemsAllowed string `json:"mems_allowed,omitempty"`

	PID  int    `json:"pid"`
	Comm string `json:"comm"`
	UID  int    `json:"uid"`
	// Memory of the killed task at the kill, in KiB.
	TotalVMKiB   uint64 `json:"total_vm_kib"`
	AnonRSSKiB   uint64 `json:"anon_rss_kib"`
	FileRSSKiB   uint64 `json:"file_rss_kib"`
	ShmemRSSKiB  uint64 `json:"shmem_rss_kib"`
	PgtablesKiB  uint64 `json:"pgtables_kib,omitempty"`
	OOMScoreAdj  int    `json:"oom_score_adj"`
	OOMScore     int    `json:"oom_score,omitempty"` // 4.x "score N"
	GroupKill    bool   `json:"group_kill,omitempty"`
	InvokerComm  string `json:"invoker_comm,omitempty"`
	GFPMask      string `json:"gfp_mask,omitempty"`
	Order        int    `json:"order"`
	InvokerScore int    `json:"invoker_oom_score_adj"`
	// Memcg usage/limit/failcnt from the "memory: usage" dump line (KiB).
	MemcgUsageKiB uint64 `json:"memcg_usage_kib,omitempty"`
	MemcgLimitKiB uint64 `json:"memcg_limit_kib,omitempty"`
	MemcgFailcnt  uint64 `json:"memcg_failcnt,omitempty"`
	// Report holds the report's lines from the header to the kill (bounded
	// to maxReportLines), as evidence for the journal.
	Report []string `json:"report,omitempty"`
}

const (
	maxReportLines = 256
	// A report whose kill line does not follow its header within this
	// kernel-time window is abandoned (no killable task, or lost records).
	reportTimeout = 30 * time.Second
	// Further kills of a memory.oom.group report follow the first closely.
	groupWindow = 2 * time.Second
)

var (
	reHeader = regexp.MustCompile(`^(.*) invoked oom-killer: gfp_mask=(0x[0-9a-fA-F]+)(?:\([^)]*\))?,(?: nodemask=[^,]*(?:\([^)]*\))?,)? order=(-?\d+), oom_score_adj=(-?\d+)`)
	reKilled = regexp.MustCompile(`^(?:(Memory cgroup out of memory|Out of memory(?: \(oom_kill_allocating_task\))?): )?Killed process (\d+) \((.*)\)(?:, UID (\d+))?,? total-vm:(\d+)kB, anon-rss:(\d+)kB, file-rss:(\d+)kB, shmem-rss:(\d+)kB(.*)$`)
	reKill4x = regexp.MustCompile(`^(Memory cgroup out of memory|Out of memory(?: \(oom_kill_allocating_task\))?): Kill process (\d+) \((.*)\) score (-?\d+) or sacrifice child`)
	reTaskIn = regexp.MustCompile(`^Task in (\S+) killed as a result of limit of (\S+)`)
	reUsage  = regexp.MustCompile(`^memory: usage (\d+)kB, limit (\d+)kB, failcnt (\d+)`)
	reGroup  = regexp.MustCompile(`^Tasks in (\S+) are going to be killed due to memory\.oom\.group set`)
	reCpuset = regexp.MustCompile(`^.* cpuset=(\S*) mems_allowed=(\S+)$`)
	reUID    = regexp.MustCompile(`UID:(\d+)`)
	rePgtab  = regexp.MustCompile(`pgtables:(\d+)kB`)
	reAdj    = regexp.MustCompile(`oom_score_adj:(-?\d+)`)
)

// assembler groups the records of OOM reports into OOMEvents.
type assembler struct {
	bootTime time.Time
	pending  *OOMEvent // report in progress (header seen, no kill yet)
	last     *OOMEvent // last emitted event, context for oom.group kills
	// incomplete counts reports abandoned without a kill line.
	incomplete uint64
}

// pendingStart returns the seq of the header of a report in progress, or 0.
func (a *assembler) pendingStart() uint64 {
	if a.pending == nil {
		return 0
	}
	return a.pending.StartSeq
}

// add feeds one record and returns the event it completes, if any.
func (a *assembler) add(r Record) (OOMEvent, bool) {
	msg := strings.TrimRight(r.Message, " \n")
	if p := a.pending; p != nil && r.Monotonic-p.Monotonic > reportTimeout {
		a.pending = nil
		a.incomplete++
	}
	if m := reHeader.FindStringSubmatch(msg); m != nil {
		if a.pending != nil {
			a.incomplete++
		}
		order, _ := strconv.Atoi(m[3])
		adj, _ := strconv.Atoi(m[4])
		a.pending = &OOMEvent{StartSeq: r.Seq, Monotonic: r.Monotonic, InvokerComm: m[1], GFPMask: m[2], Order: order, InvokerScore: adj}
		a.appendLine(msg)
		return OOMEvent{}, false
	}
	if m := reKilled.FindStringSubmatch(msg); m != nil {
		return a.kill(r, msg, m), true
	}
	p := a.pending
	switch {
	case strings.HasPrefix(msg, "oom-kill:"):
		if p == nil {
			// The header was lost: start from the kill context line.
			p = &OOMEvent{StartSeq: r.Seq, Monotonic: r.Monotonic}
			a.pending = p
		}
		parseOOMKillLine(p, msg[len("oom-kill:"):])
	case p == nil:
		if m := reGroup.FindStringSubmatch(msg); m != nil && a.last != nil && r.Monotonic-a.last.Monotonic < groupWindow {
			a.last.GroupKill = true
			a.last.CgroupPath = m[1]
		}
		return OOMEvent{}, false
	default:
		if m := reTaskIn.FindStringSubmatch(msg); m != nil {
			p.CgroupPath, p.OOMMemcg = m[1], m[2]
		} else if m := reUsage.FindStringSubmatch(msg); m != nil && p.MemcgUsageKiB == 0 {
			p.MemcgUsageKiB, _ = strconv.ParseUint(m[1], 10, 64)
			p.MemcgLimitKiB, _ = strconv.ParseUint(m[2], 10, 64)
			p.MemcgFailcnt, _ = strconv.ParseUint(m[3], 10, 64)
		} else if m := reKill4x.FindStringSubmatch(msg); m != nil {
			p.OOMScore, _ = strconv.Atoi(m[4])
			if p.Constraint == "" {
				p.Constraint = constraintFromPrefix(m[1])
			}
		} else if m := reGroup.FindStringSubmatch(msg); m != nil {
			p.GroupKill = true
		} else if m := reCpuset.FindStringSubmatch(msg); m != nil && p.Cpuset == "" {
			p.Cpuset, p.MemsAllowed = m[1], m[2] // before 4.19
		}
	}
	a.appendLine(msg)
	return OOMEvent{}, false
}

func (a *assembler) appendLine(msg string) {
	if p := a.pending; p != nil && len(p.Report) < maxReportLines {
		p.Report = append(p.Report, msg)
	}
}

// kill completes an event from a "Killed process" line.
func (a *assembler) kill(r Record, msg string, m []string) OOMEvent {
	var ev OOMEvent
	switch {
	case a.pending != nil:
		ev = *a.pending
	case a.last != nil && r.Monotonic-a.last.Monotonic < groupWindow && a.last.GroupKill:
		// Another task of a memory.oom.group kill: same report context.
		ev = *a.last
		ev.Report = nil
		ev.OOMScore = 0
	}
	a.pending = nil
	ev.Seq = r.Seq
	ev.Monotonic = r.Monotonic
	ev.Time = a.bootTime.Add(r.Monotonic)
	ev.PID, _ = strconv.Atoi(m[2])
	ev.Comm = m[3]
	if m[4] != "" { // 3.10: "Killed process N (comm), UID N, total-vm:..."
		ev.UID, _ = strconv.Atoi(m[4])
	}
	ev.TotalVMKiB, _ = strconv.ParseUint(m[5], 10, 64)
	ev.AnonRSSKiB, _ = strconv.ParseUint(m[6], 10, 64)
	ev.FileRSSKiB, _ = strconv.ParseUint(m[7], 10, 64)
	ev.ShmemRSSKiB, _ = strconv.ParseUint(m[8], 10, 64)
	if x := reUID.FindStringSubmatch(m[9]); x != nil {
		ev.UID, _ = strconv.Atoi(x[1])
	}
	if x := rePgtab.FindStringSubmatch(m[9]); x != nil {
		ev.PgtablesKiB, _ = strconv.ParseUint(x[1], 10, 64)
	}
	if x := reAdj.FindStringSubmatch(m[9]); x != nil {
		ev.OOMScoreAdj, _ = strconv.Atoi(x[1])
	}
	if ev.Constraint == "" && m[1] != "" {
		ev.Constraint = constraintFromPrefix(m[1])
	}
	if ev.Constraint == "" && ev.OOMMemcg != "" && ev.OOMMemcg != "/" {
		ev.Constraint = ConstraintMemcg
	}
	if ev.Constraint == "" {
		ev.Constraint = ConstraintNone
	}
	ev.Global = ev.Constraint != ConstraintMemcg
	if ev.Global && ev.OOMMemcg == "" {
		ev.OOMMemcg = "/"
	}
	if len(ev.Report) < maxReportLines {
		ev.Report = append(ev.Report, msg)
	}
	attributed := ev.CgroupPath
	if attributed == "" {
		attributed = ev.OOMMemcg
	}
	ev.Identity = identity.FromPath(attributed)
	last := ev
	a.last = &last
	return ev
}

func constraintFromPrefix(prefix string) string {
	if prefix == "Memory cgroup out of memory" {
		return ConstraintMemcg
	}
	return ConstraintNone
}

// parseOOMKillLine parses "constraint=...,nodemask=...,cpuset=...,
// mems_allowed=...,oom_memcg=...,task_memcg=...,task=...,pid=...,uid=...".
// Values may themselves contain commas (mems_allowed=0,2): a part without
// '=' continues the previous value.
func parseOOMKillLine(ev *OOMEvent, s string) {
	kv := map[string]string{}
	var key string
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(part, "=")
		if !ok || !isKey(k) {
			if key != "" {
				kv[key] += "," + part
			}
			continue
		}
		key = k
		kv[k] = v
	}
	ev.Constraint = kv["constraint"]
	ev.Nodemask = kv["nodemask"]
	ev.Cpuset = kv["cpuset"]
	ev.MemsAllowed = kv["mems_allowed"]
	ev.OOMMemcg = kv["oom_memcg"]
	ev.CgroupPath = kv["task_memcg"]
	if v, ok := kv["task"]; ok {
		ev.Comm = v
	}
	if v, err := strconv.Atoi(kv["pid"]); err == nil {
		ev.PID = v
	}
	if v, err := strconv.Atoi(kv["uid"]); err == nil {
		ev.UID = v
	}
}

func isKey(k string) bool {
	switch k {
	case "constraint", "nodemask", "cpuset", "mems_allowed", "oom_memcg", "task_memcg", "task", "pid", "uid":
		return true
	}
	return false
}

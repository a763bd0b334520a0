package journal

import (
	"time"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/rules"
)

// Record kinds.
const (
	// KindRemediation is a ladder vigil ran (or dry-ran) for an enforce finding.
	KindRemediation = "remediation"
	// KindShadow is a finding of a shadow rule: recorded, never acted on.
	KindShadow = "shadow"
	// KindRefusal is a finding whose ladder safety refused to start.
	KindRefusal = "refusal"
	// KindOOMMiss is a kernel OOM kill that no remediation prevented.
	KindOOMMiss = "oom_miss"
	// KindRecovery is vigil restoring, at start-up, limits a previous run
	// applied and did not release (e.g. after kill -9).
	KindRecovery = "recovery"
)

// Outcomes. The final outcome of a record is that of its last measurement.
const (
	// OutcomePending: not measured yet.
	OutcomePending = "pending"
	// OutcomeOOMAvoided: vigil acted, the target was projected to reach its
	// limit (finite seconds_to_limit within the horizon, or usage_ratio ≥
	// 0.9 at the decision), and at measurement time it is alive with no
	// kernel OOM kill since the decision.
	OutcomeOOMAvoided = "oom_avoided"
	// OutcomeRecovered: vigil acted, no OOM was projected, a step's verify
	// held (or pressure and growth dropped), no OOM kill, target alive.
	OutcomeRecovered = "recovered"
	// OutcomeNoEffect: vigil acted, no verify held and neither growth nor
	// pressure dropped, no OOM kill yet.
	OutcomeNoEffect = "no_effect"
	// OutcomeTerminated: a step vigil ran ended the target's processes on
	// purpose (signal, kill-cgroup, restart-unit) and the kernel did not.
	OutcomeTerminated = "terminated"
	// OutcomeOOMKilled: the kernel OOM-killed in the target after the
	// decision: a miss, whatever vigil did.
	OutcomeOOMKilled = "oom_killed"
	// OutcomeTargetGone: the target's cgroup disappeared and vigil had not
	// killed it.
	OutcomeTargetGone = "target_gone"
	// OutcomeRefused: safety refused the remediation; nothing was done.
	OutcomeRefused = "refused"
	// OutcomeDryRun: dry-run; nothing was done and no OOM kill followed.
	OutcomeDryRun = "dry_run"
	// OutcomeShadow: shadow finding; nothing was done and no OOM kill followed.
	OutcomeShadow = "shadow"
	// OutcomeFailed: every step that ran returned an error.
	OutcomeFailed = "failed"
	// OutcomeRestored: a recovery record restored a limit left behind.
	OutcomeRestored = "restored"
)

// Record is one entry of the journal: a remediation with its evidence,
// decision, steps and outcome, or a refusal, a shadow finding, an OOM kill
// vigil missed, or a start-up recovery.
type Record struct {
	ID   string    `json:"id"`
	Node string    `json:"node"`
	Kind string    `json:"kind"`
	Time time.Time `json:"time"`
	// Updated is when the record was last written.
	Updated time.Time    `json:"updated"`
	Target  rules.Target `json:"target"`
	Rule    string       `json:"rule,omitempty"`
	// Finding is the finding that started the record (nil for misses and
	// recoveries).
	Finding  *rules.Finding `json:"finding,omitempty"`
	Evidence Evidence       `json:"evidence"`
	// Decision says in words what vigil decided and why.
	Decision string `json:"decision"`
	// Reason is the machine-readable refusal reason (refusals only).
	Reason string   `json:"reason,omitempty"`
	DryRun bool     `json:"dry_run,omitempty"`
	Shadow bool     `json:"shadow,omitempty"`
	Steps  []Step   `json:"steps,omitempty"`
	Errors []string `json:"errors,omitempty"`
	// Outcome is the latest measured outcome (OutcomePending until the
	// first measurement).
	Outcome      string        `json:"outcome"`
	Measurements []Measurement `json:"measurements,omitempty"`
	// Done is true once the ladder finished and the last measurement is in.
	Done bool `json:"done"`
	// TraceID is the OpenTelemetry trace of the remediation (its span and
	// the ladder steps as child spans), when tracing is on.
	TraceID string `json:"trace_id,omitempty"`
}

// Evidence is what vigil saw when it decided.
type Evidence struct {
	// Signals are the values of the signals the rule's condition referenced.
	Signals map[string]float64 `json:"signals,omitempty"`
	// Samples are the last samples of the target before the decision,
	// oldest first.
	Samples []Sample `json:"samples,omitempty"`
	// TopProcesses are the target's processes by resident memory, largest
	// first.
	TopProcesses []Process `json:"top_processes,omitempty"`
	// KernelOOMKills are the kernel's OOM kill reports (from /dev/kmsg)
	// about the target: who was killed, its memory, the report lines.
	KernelOOMKills []collectors.KernelOOMKill `json:"kernel_oom_kills,omitempty"`
}

// Sample is the memory picture of a target at one tick.
type Sample struct {
	Time            time.Time        `json:"time"`
	WorkingSetBytes uint64           `json:"working_set_bytes"`
	UsageBytes      uint64           `json:"usage_bytes"`
	LimitBytes      collectors.Bytes `json:"limit_bytes"`
	HighBytes       collectors.Bytes `json:"high_bytes"`
	GrowthBytesPerS float64          `json:"growth_bytes_per_second"`
	PSISomeAvg10    float64          `json:"psi_some_avg10"`
	PSIFullAvg10    float64          `json:"psi_full_avg10"`
	OOMKills        uint64           `json:"oom_kills"`
}

// Process is one process of the target.
type Process struct {
	PID      int    `json:"pid"`
	Name     string `json:"name"`
	RSSBytes uint64 `json:"rss_bytes"`
}

// Step is one rung of the ladder as it ran. Intent is written (and synced)
// before the action runs; the rest after.
type Step struct {
	Index      int            `json:"index"`
	Action     string         `json:"action"`
	Params     map[string]any `json:"params,omitempty"`
	VerifyExpr string         `json:"verify,omitempty"`
	Timeout    time.Duration  `json:"timeout,omitempty"`
	DryRun     bool           `json:"dry_run,omitempty"`
	Intent     time.Time      `json:"intent"`
	Finished   time.Time      `json:"finished,omitempty"`
	// Result is "applied", "dry_run", "skipped" (nothing to do, or the
	// cgroup version lacks the knob: Detail says which), "refused", "error"
	// or "" while running.
	Result string `json:"result,omitempty"`
	// Detail describes what the action did (e.g. memory.high 512M -> 300M).
	Detail string `json:"detail,omitempty"`
	Error  string `json:"error,omitempty"`
	// Verified is set when the step's verify held; VerifyTimedOut when it
	// did not hold within Timeout.
	Verified       bool      `json:"verified,omitempty"`
	VerifiedAt     time.Time `json:"verified_at,omitempty"`
	VerifyTimedOut bool      `json:"verify_timed_out,omitempty"`
}

// Measurement is the target measured some time after the decision.
type Measurement struct {
	// After is the delay since the decision (15s, 60s).
	After time.Duration `json:"after"`
	Time  time.Time     `json:"time"`
	// Present is false when the target's cgroup was gone.
	Present bool   `json:"present"`
	Sample  Sample `json:"sample"`
	// OOMKillsSince counts kernel OOM kills in the target since the decision.
	OOMKillsSince uint64 `json:"oom_kills_since"`
	Outcome       string `json:"outcome"`
}

// AppliedLimit is a limit vigil wrote and has not restored yet. It is
// recorded before the write, so that a restarted vigil can put Original
// back (never leaving a limit orphaned).
type AppliedLimit struct {
	// Key identifies the knob: target path, controller, file.
	Key           string `json:"key"`
	RemediationID string `json:"remediation_id"`
	Target        string `json:"target"`
	// Cgroup locates the target's cgroup; Knob names what was changed
	// (memory.high, memory.soft_limit, cpu.max, freeze).
	Cgroup   Location  `json:"cgroup"`
	Knob     string    `json:"knob"`
	Original string    `json:"original"`
	Applied  string    `json:"applied"`
	Time     time.Time `json:"time"`
}

// Location says where a cgroup lives: the mount root, and the cgroup's path
// under it per v1 controller ("" key on v2, where there is one hierarchy).
type Location struct {
	Version int               `json:"version"`
	Root    string            `json:"root"`
	Paths   map[string]string `json:"paths"`
	// Unresolved says, per v1 controller without a path, why the target
	// has no cgroup of its own there (for example, its processes share the
	// root cpu cgroup with the rest of the host).
	Unresolved map[string]string `json:"unresolved,omitempty"`
}

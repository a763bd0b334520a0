package rules

import (
	"encoding/json"
	"time"

	"github.com/vigil-agent/vigil/collectors"
)

// Mode says whether a rule's findings may lead to actions.
type Mode string

const (
	// Enforce findings are handed to remediation.
	Enforce Mode = "enforce"
	// Shadow findings are recorded exactly as if enforced, and no action runs.
	Shadow Mode = "shadow"
)

// State is where a rule stands for one target.
type State string

const (
	// Pending: the condition holds but not yet for the rule's "for".
	Pending State = "pending"
	// Firing: the condition held for "for"; a Finding is emitted.
	Firing State = "firing"
	// Resolved: the clear condition held (or the condition stopped holding,
	// past hysteresis) after firing; a Finding with this state is emitted once.
	Resolved State = "resolved"
)

// NodeTarget is the Target.Key of node-wide rules.
const NodeTarget = "node"

// Target is what a rule is evaluated against: one cgroup, or the node.
type Target struct {
	// Kind is "cgroup" or "node".
	Kind string `json:"kind"`
	// Path is the cgroup path ("" for the node).
	Path     string              `json:"path,omitempty"`
	Identity collectors.Identity `json:"identity"`
}

// Key identifies the target in rule state and rate limits: the cgroup path,
// or NodeTarget.
func (t Target) Key() string {
	if t.Kind == "node" {
		return NodeTarget
	}
	return t.Path
}

// Finding is the output of one rule for one target at one evaluation.
type Finding struct {
	Rule        string `json:"rule"`
	Description string `json:"description,omitempty"`
	Severity    string `json:"severity"`
	Mode        Mode   `json:"mode"`
	State       State  `json:"state"`
	Target      Target `json:"target"`
	// Time is the snapshot time the finding was evaluated at; Since is when
	// the condition started to hold.
	Time  time.Time `json:"time"`
	Since time.Time `json:"since"`
	// Evidence holds the value of every signal the condition referenced,
	// by its rules name (e.g. "working_set_bytes", "node.psi.memory.some_avg10").
	Evidence map[string]float64 `json:"evidence"`
	// Alert names the external alert that fired the rule, if any.
	Alert string `json:"alert,omitempty"`
	// Actions is the rule's escalation ladder, in order.
	Actions []ActionStep `json:"actions,omitempty"`
}

// ActionStep is one rung of a rule's escalation ladder.
type ActionStep struct {
	// Action is the registered action name (e.g. "throttle-memory").
	Action string `json:"action"`
	// Params are the action's parameters, validated at load time by the
	// validator registered for the action.
	Params map[string]any `json:"params,omitempty"`
	// Verify is a condition on fresh signals that says the step worked
	// (nil: the step counts as done when the action returns).
	Verify *Condition `json:"-"`
	// VerifyExpr is Verify's source, kept for the journal.
	VerifyExpr string `json:"verify,omitempty"`
	// Timeout bounds how long Verify may take to hold before the next step.
	Timeout time.Duration `json:"timeout,omitempty"`
	// DryRun forces this step to dry-run whatever the global setting.
	DryRun bool `json:"dry_run,omitempty"`
}

// ActionValidator checks an action's parameters at rule load time. The
// remediation layer registers one per action name; rules/ cannot import it.
type ActionValidator func(params map[string]any) error

// findingJSON is Finding with Evidence values that survive JSON when they
// are not finite (seconds_to_limit and limits are +Inf when unlimited).
type findingJSON struct {
	plainFinding
	Evidence map[string]collectors.Float `json:"evidence"`
}

type plainFinding Finding

// MarshalJSON writes non-finite evidence values as "+Inf", "-Inf" or "NaN".
func (f Finding) MarshalJSON() ([]byte, error) {
	out := findingJSON{plainFinding: plainFinding(f)}
	if f.Evidence != nil {
		out.Evidence = make(map[string]collectors.Float, len(f.Evidence))
		for k, v := range f.Evidence {
			out.Evidence[k] = collectors.Float(v)
		}
	}
	return json.Marshal(out)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (f *Finding) UnmarshalJSON(data []byte) error {
	var in findingJSON
	if err := json.Unmarshal(data, &in); err != nil {
		return err
	}
	*f = Finding(in.plainFinding)
	f.Evidence = nil
	if in.Evidence != nil {
		f.Evidence = make(map[string]float64, len(in.Evidence))
		for k, v := range in.Evidence {
			f.Evidence[k] = float64(v)
		}
	}
	return nil
}

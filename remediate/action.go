package remediate

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/rules"
)

// Action is one thing vigil can do to a target. Every action, built in or
// registered later (Kubernetes evict, restart-container, scale-out), has this
// contract; safety, dry-run decisions and journaling happen around it, in
// the Executor, never inside it.
type Action interface {
	Name() string
	// Do acts once. With req.DryRun it must change nothing and describe
	// what it would do.
	Do(ctx context.Context, req Request) (Result, error)
}

// NodeScoped is implemented by actions that act on the node itself (cordon)
// rather than on a cgroup: only they run on node-level findings, which have
// no cgroup. Every other action is refused on a node target
// (RefusedNoCgroup).
type NodeScoped interface {
	NodeScoped() bool
}

// nodeScoped reports whether a acts on the node.
func nodeScoped(a Action) bool {
	n, ok := a.(NodeScoped)
	return ok && n.NodeScoped()
}

// Releaser is implemented by actions that hold something (a lowered limit,
// a frozen cgroup) until the condition clears: Release restores it.
type Releaser interface {
	Release(ctx context.Context, req Request) (string, error)
}

// Request is everything an action gets.
type Request struct {
	RemediationID string
	Rule          string
	Target        rules.Target
	// Cgroup is the target's cgroup (nil for node targets).
	Cgroup Cgroup
	Params map[string]any
	DryRun bool
	// Sample is the latest sample of the target (a copy), nil if none.
	Sample *collectors.CgroupSample
	// Limits records a limit durably before it is written, so it can be
	// restored, also by a restarted vigil.
	Limits *Limits
	// Victims says which processes a signal may pick.
	Victims VictimPolicy
	// ConditionHolds reports, on the freshest signals, whether the problem
	// is still there (the finding still fires and the step's verify does
	// not hold). Actions re-check it before an irreversible escalation.
	ConditionHolds func() bool
	Log            *slog.Logger
}

// Result says what an action did.
type Result struct {
	// Detail is a readable account (memory.high max -> 402653184).
	Detail string
	// Terminated is true when the action ended the target's processes.
	Terminated bool
	// Skipped is true when the action found nothing to do (Detail says
	// why): the ladder moves on to the next step without waiting.
	Skipped bool
}

// Action names.
const (
	ActionThrottleMemory = "throttle-memory"
	ActionReclaim        = "reclaim"
	ActionThrottleCPU    = "throttle-cpu"
	ActionFreeze         = "freeze"
	ActionThaw           = "thaw"
	ActionSignal         = "signal"
	ActionKillCgroup     = "kill-cgroup"
	ActionRestartUnit    = "restart-unit"
	ActionExec           = "exec"
)

var (
	validatorsMu sync.Mutex
	validators   = map[string]rules.ActionValidator{}
)

// RegisterValidator registers the parameter validator of an action name
// (built-in actions register from init; Kubernetes actions from their
// package).
func RegisterValidator(name string, v rules.ActionValidator) {
	validatorsMu.Lock()
	defer validatorsMu.Unlock()
	validators[name] = v
}

// Validators returns the validator of every known action, for the rule
// loader: an action name not in the map is unknown.
func Validators() map[string]rules.ActionValidator {
	validatorsMu.Lock()
	defer validatorsMu.Unlock()
	return maps.Clone(validators)
}

// params is a typed view of an action's parameters. Each getter returns the
// default when the key is absent and an error when it is malformed.
type params map[string]any

func (p params) known(names ...string) error {
	for k := range p {
		ok := false
		for _, n := range names {
			ok = ok || k == n
		}
		if !ok {
			return fmt.Errorf("unknown parameter %q (want one of %s)", k, strings.Join(names, ", "))
		}
	}
	return nil
}

func (p params) float(key string, def float64) (float64, error) {
	v, ok := p[key]
	if !ok {
		return def, nil
	}
	switch x := v.(type) {
	case float64:
		return x, nil
	case float32:
		return float64(x), nil
	case int:
		return float64(x), nil
	case int64:
		return float64(x), nil
	case uint64:
		return float64(x), nil
	case string:
		f, err := strconv.ParseFloat(x, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: want a number, got %q", key, x)
		}
		return f, nil
	}
	return 0, fmt.Errorf("%s: want a number, got %T", key, v)
}

func (p params) duration(key string, def time.Duration) (time.Duration, error) {
	v, ok := p[key]
	if !ok {
		return def, nil
	}
	switch x := v.(type) {
	case string:
		d, err := time.ParseDuration(x)
		if err != nil || d < 0 {
			return 0, fmt.Errorf("%s: want a duration like 10s, got %q", key, x)
		}
		return d, nil
	case time.Duration:
		return x, nil
	}
	f, err := p.float(key, 0)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("%s: want a duration like 10s, got %v", key, v)
	}
	return time.Duration(f * float64(time.Second)), nil
}

// bytes accepts a number of bytes or a string with a K/M/G(i) suffix.
func (p params) bytes(key string, def uint64) (uint64, error) {
	v, ok := p[key]
	if !ok {
		return def, nil
	}
	if s, ok := v.(string); ok {
		n, err := parseBytes(s)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", key, err)
		}
		return n, nil
	}
	f, err := p.float(key, 0)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("%s: want bytes, got %v", key, v)
	}
	return uint64(f), nil
}

func parseBytes(s string) (uint64, error) {
	s = strings.TrimSpace(s)
	mult := uint64(1)
	for _, u := range []struct {
		suffix string
		mult   uint64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"K", 1000}, {"M", 1000 * 1000}, {"G", 1000 * 1000 * 1000}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("want bytes like 64Mi, got %q", s)
	}
	return n * mult, nil
}

func (p params) str(key, def string) (string, error) {
	v, ok := p[key]
	if !ok {
		return def, nil
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%s: want a string, got %T", key, v)
	}
	return s, nil
}

func (p params) strs(key string) ([]string, error) {
	v, ok := p[key]
	if !ok {
		return nil, nil
	}
	switch x := v.(type) {
	case []string:
		return x, nil
	case string:
		return []string{x}, nil
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("%s: want a list of strings, got %T in it", key, e)
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s: want a list of strings, got %T", key, v)
}

func (p params) boolean(key string, def bool) (bool, error) {
	v, ok := p[key]
	if !ok {
		return def, nil
	}
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("%s: want true or false, got %T", key, v)
	}
	return b, nil
}

func humanBytes(v uint64) string {
	if v == collectors.Unlimited {
		return "max"
	}
	return strconv.FormatFloat(float64(v)/(1<<20), 'f', 1, 64) + "MiB"
}

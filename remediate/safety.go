package remediate

import (
	"path"
	"strings"
	"sync"
	"time"

	"github.com/vigil-agent/vigil/rules"
)

// Refusal reasons, as journaled and as the reason label of
// vigil_remediation_refused_total.
const (
	RefusedPaused    = "paused"
	RefusedProtected = "protected"
	// RefusedProtectedBelow: the target holds a protected cgroup, which a
	// freeze, a throttle, a kill or a signal to its largest process would
	// hit too.
	RefusedProtectedBelow = "protected_descendant"
	RefusedSelf           = "vigil_itself"
	RefusedNotOptedIn     = "not_opted_in"
	RefusedOmitted        = "omitted"
	RefusedRateTarget     = "rate_limited_target"
	RefusedRateNode       = "rate_limited_node"
	RefusedMaxConcurrent  = "max_concurrent"
	RefusedBlastRadius    = "blast_radius"
	RefusedNoCgroup       = "no_cgroup"
	RefusedUnknownAction  = "unknown_action"
)

// Rate is a token bucket: Burst tokens, one more every Every.
type Rate struct {
	Every time.Duration `json:"every" yaml:"every"`
	Burst int           `json:"burst" yaml:"burst"`
}

// SafetyConfig is every limit around every action. Target patterns are:
//
//	/a/b/*           path.Match on the cgroup path
//	/a/b/**          the cgroup /a/b and everything below it
//	unit:<glob>      the systemd unit (kubelet.service)
//	namespace:<glob> the Kubernetes namespace
//	label:k=v        a label or annotation of the pod
type SafetyConfig struct {
	// DryRun makes every action describe what it would do instead of doing
	// it. The default (DefaultSafety) is true: acting is opted into.
	DryRun bool `json:"dry_run" yaml:"dry_run"`
	// OptIn lists the targets vigil may act on; anything else is refused.
	OptIn []string `json:"opt_in" yaml:"opt_in"`
	// Protected lists targets never touched, opted in or not, directly or
	// through an action on a cgroup that contains them.
	Protected []string `json:"protected" yaml:"protected"`
	// Omit lists targets skipped like protected ones (site policy rather than
	// system safety); Prefer and Avoid order competing targets.
	Omit   []string `json:"omit" yaml:"omit"`
	Prefer []string `json:"prefer" yaml:"prefer"`
	Avoid  []string `json:"avoid" yaml:"avoid"`
	// SelfCgroup is vigil's own cgroup path: it, its ancestors and its
	// descendants are never touched (in the root cgroup, only the root).
	// Empty: found from /proc/self/cgroup, resolved through cgroup
	// namespaces.
	SelfCgroup string `json:"self_cgroup" yaml:"self_cgroup"`
	// PerTarget and PerNode limit how often a remediation may start.
	PerTarget Rate `json:"per_target" yaml:"per_target"`
	PerNode   Rate `json:"per_node" yaml:"per_node"`
	// MaxConcurrent bounds remediations running at once.
	MaxConcurrent int `json:"max_concurrent" yaml:"max_concurrent"`
	// BlastRadius bounds the distinct targets remediated within BlastWindow.
	BlastRadius int           `json:"blast_radius" yaml:"blast_radius"`
	BlastWindow time.Duration `json:"blast_window" yaml:"blast_window"`
}

// DefaultProtected is the protected set vigil starts from: the root, core
// system units, the node's Kubernetes and container runtime daemons, and
// kube-system.
var DefaultProtected = []string{
	"/", "/init.scope", "/system.slice",
	"unit:init.scope", "unit:systemd-*", "unit:dbus*", "unit:ssh.service", "unit:sshd.service",
	"unit:kubelet.service", "unit:containerd.service", "unit:crio.service", "unit:docker.service",
	"/system.slice/kubelet.service/**", "/system.slice/containerd.service/**", "/system.slice/crio.service/**",
	"/system.slice/docker.service/**", "/system.slice/systemd-*",
	"namespace:kube-system",
}

// DefaultSafety is the safe starting point: dry-run, only targets labelled
// vigil.io/remediate=true, the default protected set, one remediation per
// target per 10 minutes (burst 1), 6 per node per 10 minutes, 4 at once, 3
// distinct targets per 10 minutes.
func DefaultSafety() SafetyConfig {
	return SafetyConfig{
		DryRun:        true,
		OptIn:         []string{"label:vigil.io/remediate=true"},
		Protected:     append([]string(nil), DefaultProtected...),
		PerTarget:     Rate{Every: 10 * time.Minute, Burst: 1},
		PerNode:       Rate{Every: 100 * time.Second, Burst: 6},
		MaxConcurrent: 4,
		BlastRadius:   3,
		BlastWindow:   10 * time.Minute,
	}
}

// matchTarget reports whether pattern selects t.
func matchTarget(pattern string, t rules.Target) bool {
	id := t.Identity
	switch {
	case strings.HasPrefix(pattern, "unit:"):
		ok, _ := path.Match(pattern[5:], id.Unit)
		return id.Unit != "" && ok
	case strings.HasPrefix(pattern, "namespace:"):
		ok, _ := path.Match(pattern[10:], id.Namespace)
		return id.Namespace != "" && ok
	case strings.HasPrefix(pattern, "label:"):
		k, v, _ := strings.Cut(pattern[6:], "=")
		if got, ok := id.Labels[k]; ok && got == v {
			return true
		}
		got, ok := id.Annotations[k]
		return ok && got == v
	case strings.HasSuffix(pattern, "/**"):
		base := strings.TrimSuffix(pattern, "/**")
		return t.Path == base || strings.HasPrefix(t.Path, base+"/") || base == "" && t.Path != ""
	}
	if t.Kind != "cgroup" {
		return false
	}
	ok, _ := path.Match(pattern, t.Path)
	return ok
}

func matchAnyTarget(patterns []string, t rules.Target) bool {
	for _, p := range patterns {
		if matchTarget(p, t) {
			return true
		}
	}
	return false
}

// isSelf reports whether acting on target could act on vigil, whose
// cgroup is self: target is self, an ancestor of it, or a descendant (where
// vigil's own helpers run). A vigil in the root cgroup (a host or VM without
// a service manager) owns only the root: its descendants are everyone else's.
func isSelf(target, self string) bool {
	switch {
	case target == "" || self == "":
		return false
	case target == self || target == "/":
		return true
	case self == "/":
		return false
	}
	return strings.HasPrefix(target, self+"/") || strings.HasPrefix(self, target+"/")
}

type bucket struct {
	tokens float64
	last   time.Time
}

// full reports whether b, refilled at r, is back to its burst: it then
// allows what a new bucket allows.
func (b *bucket) full(r Rate, now time.Time) bool {
	if r.Burst <= 0 || r.Every <= 0 || b.last.IsZero() {
		return true
	}
	return b.tokens+float64(now.Sub(b.last))/float64(r.Every) >= float64(r.Burst)
}

// take refills b at r and takes a token if there is one.
func (b *bucket) take(r Rate, now time.Time) bool {
	if r.Burst <= 0 || r.Every <= 0 {
		return true
	}
	if b.last.IsZero() {
		b.tokens = float64(r.Burst)
	} else {
		b.tokens = min(float64(r.Burst), b.tokens+float64(now.Sub(b.last))/float64(r.Every))
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// safety is the one place that decides whether an action may run. It is
// consulted when a ladder starts (admit) and before every step (step).
type safety struct {
	mu      sync.Mutex
	cfg     SafetyConfig
	paused  bool
	node    bucket
	targets map[string]*bucket
	recent  map[string]time.Time // target -> last remediation start (blast radius)
	active  int
}

func newSafety(cfg SafetyConfig) *safety {
	return &safety{cfg: cfg, targets: map[string]*bucket{}, recent: map[string]time.Time{}}
}

// refusal returns why t may not be touched at all, or "". nodeScoped says
// the action acts on the node itself (NodeScoped): only such an action may
// take a node target, and the cgroup selectors (self, protected, omit,
// opt-in) do not apply to it; its opt-in is its registration (e.g.
// kubernetes.cordon), and pause, dry-run and the rate limits still hold.
func (s *safety) refusal(t rules.Target, nodeScoped bool) string {
	switch {
	case s.paused:
		return RefusedPaused
	case nodeScoped && t.Kind == "node":
		return ""
	case t.Kind != "cgroup" || t.Path == "":
		return RefusedNoCgroup
	case isSelf(t.Path, s.cfg.SelfCgroup):
		return RefusedSelf
	case matchAnyTarget(s.cfg.Protected, t):
		return RefusedProtected
	case matchAnyTarget(s.cfg.Omit, t):
		return RefusedOmitted
	case !matchAnyTarget(s.cfg.OptIn, t):
		return RefusedNotOptedIn
	}
	return ""
}

// admit decides whether a remediation of t may start now, and if so counts
// it as active (release with done).
func (s *safety) admit(t rules.Target, now time.Time) string { return s.admitScoped(t, false, now) }

// admitScoped is admit for a ladder that has a node-scoped action when
// nodeScoped is set.
func (s *safety) admitScoped(t rules.Target, nodeScoped bool, now time.Time) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.refusal(t, nodeScoped); r != "" {
		return r
	}
	if s.cfg.MaxConcurrent > 0 && s.active >= s.cfg.MaxConcurrent {
		return RefusedMaxConcurrent
	}
	s.prune(now)
	if s.cfg.BlastRadius > 0 {
		n := 0
		for k := range s.recent {
			if k != t.Key() {
				n++
			}
		}
		if n >= s.cfg.BlastRadius {
			return RefusedBlastRadius
		}
	}
	b := s.targets[t.Key()]
	if b == nil {
		b = &bucket{}
		s.targets[t.Key()] = b
	}
	// Check both buckets before taking from either.
	tb, nb := *b, s.node
	if !tb.take(s.cfg.PerTarget, now) {
		return RefusedRateTarget
	}
	if !nb.take(s.cfg.PerNode, now) {
		return RefusedRateNode
	}
	*b, s.node = tb, nb
	s.recent[t.Key()] = now
	s.active++
	return ""
}

// prune forgets the per-target state that no longer constrains anything:
// a blast-radius entry out of its window and a rate bucket refilled to its
// burst (a new bucket starts full). Without it every target ever admitted
// (cgroups of pods and units come and go) would stay for the life of the
// process. s.mu is held.
func (s *safety) prune(now time.Time) {
	for k, at := range s.recent {
		if now.Sub(at) > s.cfg.BlastWindow {
			delete(s.recent, k)
		}
	}
	for k, b := range s.targets {
		if b.full(s.cfg.PerTarget, now) {
			delete(s.targets, k)
		}
	}
}

// sizes returns how many targets the safety layer keeps state for.
func (s *safety) sizes() (buckets, recent int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.targets), len(s.recent)
}

// protected is the protected target patterns in force.
func (s *safety) protected() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.Protected
}

func (s *safety) done() {
	s.mu.Lock()
	s.active--
	s.mu.Unlock()
}

// step decides, before every action, whether it may run and whether it runs
// dry.
func (s *safety) step(t rules.Target, st rules.ActionStep, nodeScoped bool) (refused string, dryRun bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refusal(t, nodeScoped), s.cfg.DryRun || st.DryRun
}

// rank orders competing targets: preferred first, avoided last.
func (s *safety) rank(t rules.Target) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case matchAnyTarget(s.cfg.Prefer, t):
		return 0
	case matchAnyTarget(s.cfg.Avoid, t):
		return 2
	}
	return 1
}

package rules

import (
	"errors"
	"fmt"
	"hash/maphash"
	"sort"
	"sync"
	"time"

	"github.com/vigil-agent/vigil/collectors"
)

// EngineOptions configure an Engine.
type EngineOptions struct {
	// Shadow marks every finding shadow (no action runs), whatever the
	// rules' own mode.
	Shadow bool
	// OptIn is the agent configuration's opt-in list for selectors with
	// opt_in.
	OptIn OptIn
	// HistorySize is the number of samples kept per signal per target for
	// the history functions (default DefaultHistorySize).
	HistorySize int
	// TargetGrace keeps the state and history of a cgroup that vanished for
	// this long, so a unit or pod whose cgroup is recreated (a crash loop)
	// stays the same target (default 2m; negative: drop at once).
	TargetGrace time.Duration
	// MaxTargets bounds the targets tracked; past it, vanished targets are
	// dropped without grace (default 20000).
	MaxTargets int
	// MaxVanished bounds the vanished targets kept for their grace period
	// (each holds its history, a few KiB with the shipped rules); past it
	// the longest gone are dropped first (default 1000). Under heavy churn
	// of selected cgroups, without it the engine would hold up to
	// MaxTargets of them.
	MaxVanished int
	// MaxFiringSeries caps the vigil_rule_firing series; the firing targets
	// past the cap are counted under target="_other" (default 200).
	MaxFiringSeries int
	// Clock, if set, times each Evaluate for
	// vigil_rule_evaluation_duration_seconds. Evaluation itself never reads
	// a clock.
	Clock func() time.Time
}

// ErrTargetGone is returned by Verify when the target is not in the
// snapshot.
var ErrTargetGone = errors.New("target not in snapshot")

// Engine evaluates a RuleSet against snapshots and keeps the per-rule,
// per-target state and the signal history it needs. It is safe for
// concurrent use: Evaluate, Verify, Swap, State and metric collection
// serialise on one lock.
type Engine struct {
	mu   sync.Mutex
	opts EngineOptions
	set  *RuleSet
	gen  uint64
	// cgroupRules and nodeRules are indexes into set.Rules.
	cgroupRules, nodeRules []int
	ruleIndex              map[string]int

	targets map[string]*target
	node    *target
	tick    uint64
	seed    maphash.Seed
	ctx     evalContext
	// vanished is dropVanished's scratch list of targets in grace.
	vanished []*target

	metrics engineMetrics
}

// target is one cgroup (or the node) as the engine tracks it.
type target struct {
	key      string
	kind     string
	path     string
	identity collectors.Identity
	fp       uint64
	gen      uint64
	set      *RuleSet // the set states is indexed by
	// match lists the indexes of the rules that select this target.
	match    []int
	series   *series
	states   []*ruleState
	seenTick uint64
	lastSeen time.Time
}

// ruleState is where one rule stands for one target.
type ruleState struct {
	state      State // "" (inactive), Pending or Firing
	since      time.Time
	lastFired  time.Time
	clearSince time.Time
	announced  bool // a Firing finding was emitted in this episode
	alert      string
}

// NewEngine returns an engine running set (which may be nil: no rules).
func NewEngine(set *RuleSet, opts EngineOptions) *Engine {
	if opts.HistorySize <= 0 {
		opts.HistorySize = DefaultHistorySize
	}
	if opts.TargetGrace == 0 {
		opts.TargetGrace = 2 * time.Minute
	}
	if opts.MaxTargets <= 0 {
		opts.MaxTargets = 20000
	}
	if opts.MaxVanished <= 0 {
		opts.MaxVanished = 1000
	}
	if opts.MaxFiringSeries <= 0 {
		opts.MaxFiringSeries = 200
	}
	e := &Engine{
		opts:    opts,
		targets: map[string]*target{},
		seed:    maphash.MakeSeed(),
		node:    &target{key: NodeTarget, kind: TargetNode},
	}
	e.metrics.init(opts.Clock != nil)
	e.install(set)
	e.metrics.reloadSuccess = 1
	return e
}

// install makes set current; callers hold mu (or own e exclusively).
func (e *Engine) install(set *RuleSet) {
	e.metrics.fold(e.set)
	e.set = set
	e.gen++
	e.cgroupRules, e.nodeRules = nil, nil
	e.ruleIndex = map[string]int{}
	for i, r := range set.rules() {
		e.ruleIndex[r.Name] = i
		if r.Target == TargetNode {
			e.nodeRules = append(e.nodeRules, i)
		} else {
			e.cgroupRules = append(e.cgroupRules, i)
		}
	}
	e.metrics.reset(set)
}

func (s *RuleSet) rules() []*Rule {
	if s == nil {
		return nil
	}
	return s.Rules
}

// Swap replaces the rule set (hot reload). The state of rules that still
// exist, by name, is kept; history is kept for signals still used.
func (e *Engine) Swap(set *RuleSet) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.install(set)
	e.metrics.reloadSuccess = 1
	e.metrics.reloads[0]++
}

// ReloadFailed records a rejected reload in the reload metrics; the
// current set keeps running.
func (e *Engine) ReloadFailed(error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.metrics.reloadSuccess = 0
	e.metrics.reloads[1]++
}

// RuleSet returns the current rule set.
func (e *Engine) RuleSet() *RuleSet {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.set
}

// Evaluate runs every rule on the snapshot and returns the findings of
// this tick. It copies what it keeps: the snapshot may be reused after the
// call. A partial (event-driven) snapshot evaluates only the cgroups it
// holds, and the node only when its trigger is node-wide.
func (e *Engine) Evaluate(snap *collectors.Snapshot, now time.Time) []Finding {
	var start time.Time
	if e.opts.Clock != nil {
		start = e.opts.Clock()
	}
	e.mu.Lock()
	out := e.evaluate(snap, now)
	if e.opts.Clock != nil {
		e.metrics.duration.Observe(e.opts.Clock().Sub(start).Seconds())
	}
	e.mu.Unlock()
	return out
}

func (e *Engine) evaluate(snap *collectors.Snapshot, now time.Time) []Finding {
	set := e.set
	if set == nil || snap == nil {
		return nil
	}
	e.tick++
	nowNs := now.UnixNano()
	var out []Finding
	nodeTick := !snap.Partial || snap.Trigger == nil || snap.Trigger.Path == ""

	nd := e.node
	e.refresh(nd, nil)
	if nodeTick {
		for _, si := range set.nodeSignals {
			nd.series.set(si, collectors.NodeSignals[si].Value(&snap.Node))
		}
		nd.seenTick, nd.lastSeen = e.tick, now
	}

	ctx := &e.ctx
	*ctx = evalContext{node: nd.series, now: nowNs, tick: e.tick, alerts: snap.Alerts}
	for i := range snap.Cgroups {
		c := &snap.Cgroups[i]
		t := e.targets[c.Path]
		if t == nil {
			t = &target{key: c.Path, kind: TargetCgroup, path: c.Path}
			e.targets[c.Path] = t
		}
		t.seenTick, t.lastSeen = e.tick, now
		e.refresh(t, c)
		if len(t.match) == 0 {
			continue
		}
		for _, si := range set.cgroupSignals {
			t.series.set(si, cgroupValue(si, c))
		}
		ctx.target, ctx.path, ctx.isNode = t.series, t.path, false
		ctx.statNow = statReadAt(c, nowNs)
		for _, ri := range t.match {
			out = e.step(set.Rules[ri], ri, t, ctx, now, out)
		}
		pushHistory(t.series, nowNs, ctx.statNow)
	}
	if nodeTick {
		ctx.target, ctx.path, ctx.isNode, ctx.statNow = nd.series, "", true, 0
		for _, ri := range nd.match {
			out = e.step(set.Rules[ri], ri, nd, ctx, now, out)
		}
		pushHistory(nd.series, nowNs, nowNs)
	}
	*ctx = evalContext{}
	if !snap.Partial {
		out = e.dropVanished(now, out)
	}
	return out
}

// pushHistory appends the tick's values to the target's rings: at now,
// and the memory.stat signals of a cgroup at statAt, when they were read.
func pushHistory(s *series, now, statAt int64) {
	for i, r := range s.rings {
		if r == nil {
			continue
		}
		t := now
		if statAt != now && statSignal(signalID(i)) {
			t = statAt
		}
		r.push(t, s.vals[i])
	}
}

// refresh recomputes a target's rule matches, history layout and state
// indexing when its identity or the rule set changed. c is nil for the
// node.
func (e *Engine) refresh(t *target, c *collectors.CgroupSample) {
	var fp uint64
	if c != nil {
		fp = identityFingerprint(e.seed, &c.Identity)
	}
	if t.gen == e.gen && fp == t.fp {
		return
	}
	if c != nil && fp != t.fp {
		t.identity = copyIdentity(&c.Identity)
		t.fp = fp
	}
	set := e.set
	t.match = t.match[:0]
	if t.kind == TargetNode {
		for _, ri := range e.nodeRules {
			if !set.Rules[ri].Selector.OptIn || e.opts.OptIn.Node {
				t.match = append(t.match, ri)
			}
		}
	} else {
		for _, ri := range e.cgroupRules {
			if set.Rules[ri].Selector.Matches(t.path, &t.identity, &e.opts.OptIn) {
				t.match = append(t.match, ri)
			}
		}
	}
	// Rule states follow the rules by name.
	if t.set != set {
		states := make([]*ruleState, len(set.Rules))
		for i, st := range t.states {
			if st != nil && t.set != nil && i < len(t.set.Rules) {
				if ni, ok := e.ruleIndex[t.set.Rules[i].Name]; ok {
					states[ni] = st
				}
			}
		}
		t.states, t.set = states, set
	}
	// History rings follow the signals the set keeps history for.
	if len(t.match) > 0 || t.kind == TargetNode {
		n, windows := max(len(set.cgroupWindows), len(collectors.CgroupSignals)), set.cgroupWindows
		counter := cgroupCounter
		if t.kind == TargetNode {
			n, windows = len(collectors.NodeSignals), set.nodeWindows
			counter = func(i int) bool { return collectors.NodeSignals[i].Counter }
		}
		if t.series == nil {
			t.series = newSeries(n)
		}
		t.series.grow(n)
		if t.series.rings == nil {
			t.series.rings = make([]*ring, n)
		}
		for i, w := range windows {
			switch {
			case w < 0:
				t.series.rings[i] = nil
			case t.series.rings[i] == nil:
				t.series.rings[i] = newRing(e.opts.HistorySize, ringStep(w, e.opts.HistorySize), counter(i))
			default:
				t.series.rings[i].step = ringStep(w, e.opts.HistorySize)
			}
		}
	}
	t.gen = e.gen
}

// ringStep spaces committed points so size-2 of them span the window.
func ringStep(window time.Duration, size int) int64 {
	if size <= 3 {
		return int64(window)
	}
	return int64(window) / int64(size-2)
}

// step advances one rule's state for one target and appends the finding
// the transition produces, if any.
func (e *Engine) step(r *Rule, ri int, t *target, ctx *evalContext, now time.Time, out []Finding) []Finding {
	ctx.alert = ""
	holds, err := r.Condition.eval(ctx)
	e.metrics.evals[ri]++
	if err != nil {
		e.metrics.errors[ri]++
	}
	st := t.states[ri]
	if st == nil {
		if !holds {
			return out
		}
		st = &ruleState{}
		t.states[ri] = st
	}
	switch st.state {
	case "":
		if !holds {
			if st.lastFired.IsZero() || now.Sub(st.lastFired) >= r.Cooldown {
				t.states[ri] = nil // nothing left to remember
			}
			return out
		}
		st.state, st.since, st.alert = Pending, now, ctx.alert
		fallthrough
	case Pending:
		if !holds {
			st.state = ""
			return out
		}
		if ctx.alert != "" {
			st.alert = ctx.alert
		}
		if now.Sub(st.since) < r.For {
			return out
		}
		st.state, st.announced, st.clearSince = Firing, false, time.Time{}
	case Firing:
		clearing := !holds
		if r.Clear != nil {
			c, err := r.Clear.eval(ctx)
			if err != nil {
				e.metrics.errors[ri]++
			}
			clearing = c
		}
		if clearing {
			if st.clearSince.IsZero() {
				st.clearSince = now
			}
			if now.Sub(st.clearSince) >= r.Hysteresis {
				announced := st.announced
				st.state, st.announced = "", false
				if announced {
					f := e.finding(r, t, ctx, st, Resolved, now)
					if r.Clear != nil {
						r.Clear.evidence(ctx, f.Evidence)
					}
					e.metrics.resolved[ri]++
					return append(out, f)
				}
			}
			return out
		}
		st.clearSince = time.Time{}
	}
	// Firing and not clearing: announce, then repeat each cooldown.
	elapsed := st.lastFired.IsZero() || now.Sub(st.lastFired) >= r.Cooldown
	if elapsed && (r.Cooldown > 0 || !st.announced) {
		st.announced, st.lastFired = true, now
		e.metrics.fired[ri]++
		return append(out, e.finding(r, t, ctx, st, Firing, now))
	}
	return out
}

func (e *Engine) finding(r *Rule, t *target, ctx *evalContext, st *ruleState, state State, now time.Time) Finding {
	mode := r.Mode
	if e.opts.Shadow {
		mode = Shadow
	}
	f := Finding{
		Rule: r.Name, Description: r.Description, Severity: r.Severity, Mode: mode, State: state,
		Target:   t.publicTarget(),
		Time:     now,
		Since:    st.since,
		Evidence: map[string]float64{},
		Alert:    st.alert,
		Actions:  r.Actions,
	}
	if ctx != nil {
		r.Condition.evidence(ctx, f.Evidence)
	}
	return f
}

func (t *target) publicTarget() Target {
	if t.kind == TargetNode {
		return Target{Kind: TargetNode}
	}
	return Target{Kind: TargetCgroup, Path: t.path, Identity: t.identity}
}

// dropVanished forgets cgroups missing from a full snapshot for longer than
// the grace period, and the longest gone past MaxVanished. A rule firing on
// a vanished target is resolved.
func (e *Engine) dropVanished(now time.Time, out []Finding) []Finding {
	grace := e.opts.TargetGrace
	if len(e.targets) > e.opts.MaxTargets {
		grace = -1
	}
	held := e.vanished[:0]
	for _, t := range e.targets {
		if t.seenTick == e.tick {
			continue
		}
		if grace >= 0 && now.Sub(t.lastSeen) <= grace && t.keep() {
			held = append(held, t)
			continue
		}
		out = e.drop(t, now, out)
	}
	if len(held) > e.opts.MaxVanished {
		sort.Slice(held, func(i, j int) bool { return held[i].lastSeen.Before(held[j].lastSeen) })
		for _, t := range held[:len(held)-e.opts.MaxVanished] {
			out = e.drop(t, now, out)
		}
	}
	clear(held)
	e.vanished = held[:0]
	return out
}

// drop forgets a vanished target, resolving its firing rules.
func (e *Engine) drop(t *target, now time.Time, out []Finding) []Finding {
	for ri, st := range t.states {
		if st == nil || st.state != Firing || !st.announced || t.set == nil || ri >= len(t.set.Rules) {
			continue
		}
		// The states of a target not seen since a reload are still
		// indexed by the set it was last evaluated with: resolve by
		// name (a rule the reload removed has nothing to resolve, as
		// for the targets still present).
		ci, ok := e.ruleIndex[t.set.Rules[ri].Name]
		if !ok {
			continue
		}
		f := e.finding(e.set.Rules[ci], t, nil, st, Resolved, now)
		e.metrics.resolved[ci]++
		out = append(out, f)
	}
	delete(e.targets, t.key)
	return out
}

// keep reports whether a vanished target has anything worth the grace
// period: a rule state (a cooldown, a pending or firing episode) or the
// history of a rule that selects it. A cgroup no rule selects is dropped
// at once.
func (t *target) keep() bool {
	if len(t.match) > 0 {
		return true
	}
	for _, st := range t.states {
		if st != nil {
			return true
		}
	}
	return false
}

// identityFingerprint hashes what selectors look at, so that matches are
// recomputed only when the identity changes. Map entries are combined
// order-independently.
func identityFingerprint(seed maphash.Seed, id *collectors.Identity) uint64 {
	var h maphash.Hash
	h.SetSeed(seed)
	for _, s := range [...]string{id.Kind, id.QoS, id.PodUID, id.ContainerID, id.Runtime, id.Unit, id.Namespace, id.Pod, id.Container, id.Owner} {
		h.WriteString(s)
		h.WriteByte(0)
	}
	sum := h.Sum64()
	for k, v := range id.Labels {
		sum += maphash.String(seed, k)*31 ^ maphash.String(seed, v)
	}
	for k, v := range id.Annotations {
		sum += (maphash.String(seed, k)*37 ^ maphash.String(seed, v)) + 1
	}
	return sum | 1 // never 0, the "unset" value
}

func copyIdentity(id *collectors.Identity) collectors.Identity {
	c := *id
	c.Labels = copyMap(id.Labels)
	c.Annotations = copyMap(id.Annotations)
	return c
}

func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// Verify evaluates a condition (an ActionStep.Verify) on a fresh snapshot
// for one target, with the engine's history so that rate() and friends
// work. It returns whether it holds and the evidence. The snapshot's time is
// the evaluation time.
func (e *Engine) Verify(c *Condition, snap *collectors.Snapshot, tgt Target) (bool, map[string]float64, error) {
	if c == nil {
		return true, nil, nil
	}
	if snap == nil {
		return false, nil, fmt.Errorf("verify %s: no snapshot", tgt.Key())
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	ctx := &evalContext{now: snap.Time.UnixNano(), alerts: snap.Alerts}
	node := newSeries(len(collectors.NodeSignals))
	node.rings = e.nodeRings()
	for _, r := range c.refs {
		if r.id.isNode() {
			i := int(r.id - nodeBase)
			node.set(i, collectors.NodeSignals[i].Value(&snap.Node))
		}
	}
	ctx.node = node
	if tgt.Kind == TargetNode || c.target == TargetNode {
		ctx.target, ctx.isNode = node, true
	} else {
		var sample *collectors.CgroupSample
		for i := range snap.Cgroups {
			if snap.Cgroups[i].Path == tgt.Path {
				sample = &snap.Cgroups[i]
				break
			}
		}
		if sample == nil {
			return false, nil, fmt.Errorf("verify %s: %w", tgt.Path, ErrTargetGone)
		}
		s := newSeries(cgroupSlots())
		if t := e.targets[tgt.Path]; t != nil && t.series != nil {
			s.rings = t.series.rings
		}
		for _, r := range c.refs {
			if !r.id.isNode() {
				s.set(int(r.id), cgroupValue(int(r.id), sample))
			}
		}
		ctx.target, ctx.path = s, tgt.Path
		ctx.statNow = statReadAt(sample, ctx.now)
	}
	holds, err := c.eval(ctx)
	ev := map[string]float64{}
	c.evidence(ctx, ev)
	if err != nil {
		return false, ev, fmt.Errorf("verify %s: %w", tgt.Key(), err)
	}
	return holds, ev, nil
}

func (e *Engine) nodeRings() []*ring {
	if e.node.series == nil {
		return nil
	}
	return e.node.series.rings
}

// TargetState is the persisted state of one rule for one target. The
// agent stores State() in its journal and hands it to Restore after a
// restart, so a restart neither escapes a cooldown nor refires a storm.
type TargetState struct {
	Rule   string `json:"rule"`
	Target Target `json:"target"`
	// State is pending or firing; empty while only a cooldown is remembered.
	State      State     `json:"state,omitempty"`
	Since      time.Time `json:"since,omitzero"`
	LastFired  time.Time `json:"last_fired,omitzero"`
	ClearSince time.Time `json:"clear_since,omitzero"`
	// Announced is true once a Firing finding went out for this episode.
	Announced bool   `json:"announced,omitempty"`
	Alert     string `json:"alert,omitempty"`
	// CooldownUntil is informational: LastFired plus the rule's cooldown.
	CooldownUntil time.Time `json:"cooldown_until,omitzero"`
}

// State returns every non-idle rule state, sorted by rule then target.
func (e *Engine) State() []TargetState {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []TargetState
	add := func(t *target) {
		if t.set != e.set {
			return
		}
		for ri, st := range t.states {
			if st == nil || (st.state == "" && st.lastFired.IsZero()) {
				continue
			}
			r := e.set.Rules[ri]
			ts := TargetState{Rule: r.Name, Target: t.publicTarget(), State: st.state, Since: st.since,
				LastFired: st.lastFired, ClearSince: st.clearSince, Announced: st.announced, Alert: st.alert}
			if !st.lastFired.IsZero() {
				ts.CooldownUntil = st.lastFired.Add(r.Cooldown)
			}
			out = append(out, ts)
		}
	}
	add(e.node)
	for _, t := range e.targets {
		add(t)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Rule != out[j].Rule {
			return out[i].Rule < out[j].Rule
		}
		return out[i].Target.Key() < out[j].Target.Key()
	})
	return out
}

// Restore loads persisted states. States of rules the current set does not
// have are ignored; targets that do not come back are dropped after the
// grace period like any vanished target.
func (e *Engine) Restore(states []TargetState) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.set == nil {
		return
	}
	for _, ts := range states {
		ri, ok := e.ruleIndex[ts.Rule]
		if !ok {
			continue
		}
		r := e.set.Rules[ri]
		var t *target
		switch {
		case ts.Target.Kind == TargetNode && r.Target == TargetNode:
			t = e.node
		case ts.Target.Kind == TargetCgroup && r.Target == TargetCgroup && ts.Target.Path != "":
			t = e.targets[ts.Target.Path]
			if t == nil {
				t = &target{key: ts.Target.Path, kind: TargetCgroup, path: ts.Target.Path,
					identity: copyIdentity(&ts.Target.Identity)}
				e.targets[ts.Target.Path] = t
			}
		default:
			continue
		}
		if t.set != e.set {
			e.refresh(t, nil)
			t.gen = 0 // recompute matches with the real identity on first sight
		}
		switch ts.State {
		case "", Pending, Firing:
		default:
			continue
		}
		t.states[ri] = &ruleState{state: ts.State, since: ts.Since, lastFired: ts.LastFired,
			clearSince: ts.ClearSince, announced: ts.Announced, alert: ts.Alert}
	}
}

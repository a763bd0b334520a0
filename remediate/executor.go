package remediate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/remediate/journal"
	"github.com/vigil-agent/vigil/rules"
)

// limitsOnlyAction marks actions that change the target only through
// Request.Limits (so their intent can be journaled with the first limit).
type limitsOnlyAction interface{ changesOnlyThroughLimits() }

func (*ThrottleMemory) changesOnlyThroughLimits() {}
func (*ThrottleCPU) changesOnlyThroughLimits()    {}
func (*Freeze) changesOnlyThroughLimits()         {}

// verifier evaluates a step's verify condition on fresh signals; the rules
// engine implements it.
type verifier interface {
	Verify(c *rules.Condition, snap *collectors.Snapshot, target rules.Target) (bool, map[string]float64, error)
}

// VerifyFunc adapts a function to the verifier the Executor needs.
type VerifyFunc func(c *rules.Condition, snap *collectors.Snapshot, target rules.Target) (bool, map[string]float64, error)

// Verify implements the Executor's verifier.
func (f VerifyFunc) Verify(c *rules.Condition, snap *collectors.Snapshot, target rules.Target) (bool, map[string]float64, error) {
	return f(c, snap, target)
}

// Config configures an Executor.
type Config struct {
	// Node is the node name written in every record (default: hostname).
	Node    string
	Safety  SafetyConfig
	Victims VictimPolicy
	// Resolver locates a target's cgroup (default: DefaultResolver for the
	// host's hierarchy under /sys/fs/cgroup).
	Resolver Resolver
	// History is how many samples per cgroup are kept as evidence (20).
	History int
	// Measure are the delays after the decision at which the outcome is
	// measured (15s and 60s).
	Measure []time.Duration
	// StepTimeout is a step's verify timeout when the rule gives none (30s).
	StepTimeout time.Duration
	// HoldMax bounds how long a successful ladder keeps a limit while the
	// finding keeps firing (10m); then it is released.
	HoldMax time.Duration
	Log     *slog.Logger
}

// Executor turns findings into remediations: it runs escalation ladders
// asynchronously behind the safety layer, verifies each step on the
// snapshots passed to Observe, measures outcomes, and journals everything.
//
// Per tick the agent calls Observe(snap) and then Handle(findings).
type Executor struct {
	cfg     Config
	j       *journal.Journal
	verify  verifier
	log     *slog.Logger
	safety  *safety
	limits  *Limits
	metrics *metrics
	events  *eventBus

	actionsMu sync.RWMutex
	actions   map[string]Action
	throttle  *ThrottleMemory

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	ladders   map[string]*ladder     // rule|target -> running or holding ladder
	episodes  map[string]string      // rule|target -> id of the shadow/refusal record of the current episode
	tracked   map[string]*tracked    // record id -> record awaiting measurement
	cgroups   map[string]*cgroupSeen // path -> latest sample and history
	missed    map[string]*missed     // path -> recent OOM miss record (dedupe of counter and kernel log)
	kernelLog bool                   // kernel OOM reports arrive in snapshots
	seq       uint64
}

// cgroupSeen is what Observe keeps of one cgroup between ticks.
type cgroupSeen struct {
	latest  collectors.CgroupSample // Identity labels/annotations dropped
	ring    []journal.Sample
	pos     int
	seenSeq uint64
}

func (c *cgroupSeen) samples() []journal.Sample {
	out := make([]journal.Sample, 0, len(c.ring))
	if len(c.ring) == cap(c.ring) {
		out = append(out, c.ring[c.pos:]...)
		return append(out, c.ring[:c.pos]...)
	}
	return append(out, c.ring...)
}

func sampleOf(t time.Time, c *collectors.CgroupSample) journal.Sample {
	return journal.Sample{Time: t, WorkingSetBytes: c.Derived.WorkingSetBytes, UsageBytes: c.Memory.UsageBytes,
		LimitBytes: c.Memory.EffectiveLimitBytes, HighBytes: c.Memory.HighBytes, GrowthBytesPerS: c.Derived.GrowthBytesPerSecond,
		PSISomeAvg10: c.Pressure.Some.Avg10, PSIFullAvg10: c.Pressure.Full.Avg10, OOMKills: c.Events.OOMKill}
}

// tracked is a journaled record whose outcome is still to be measured.
type tracked struct {
	mu      sync.Mutex // serialises changes and writes of rec
	rec     *journal.Record
	path    string
	start   time.Time
	oomBase uint64
	lastOOM uint64
	growth0 float64
	psi0    float64
	next    int // index into cfg.Measure
	ladder  *ladder
	predict bool
}

// ladder is one remediation's escalation.
type ladder struct {
	key      string
	id       string
	finding  rules.Finding
	cg       Cgroup
	tr       *tracked
	resolved chan struct{}
	verified chan struct{}

	// guarded by Executor.mu
	isResolved bool
	cur        *rules.ActionStep
	verifyOK   bool
	verifySig  bool
	running    bool
	holding    bool
	terminated bool
	holdSince  time.Time
	latest     *collectors.CgroupSample
	held       []heldAction
}

type heldAction struct {
	r   Releaser
	req Request
}

// New opens an Executor on journal j. verify may be nil when no rule has a
// verify condition. It restores limits a previous run left applied.
func New(cfg Config, j *journal.Journal, verify verifier) (*Executor, error) {
	if j == nil {
		return nil, errors.New("remediate: nil journal")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Node == "" {
		cfg.Node, _ = os.Hostname()
	}
	if cfg.History <= 0 {
		cfg.History = 20
	}
	if len(cfg.Measure) == 0 {
		cfg.Measure = []time.Duration{15 * time.Second, 60 * time.Second}
	}
	if cfg.StepTimeout <= 0 {
		cfg.StepTimeout = 30 * time.Second
	}
	if cfg.HoldMax <= 0 {
		cfg.HoldMax = 10 * time.Minute
	}
	if cfg.Resolver == nil {
		v := 1
		if b, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers"); err == nil && strings.Contains(string(b), "memory") {
			v = 2
		}
		cfg.Resolver = DefaultResolver("/sys/fs/cgroup", v)
	}
	if cfg.Safety.SelfCgroup == "" {
		cfg.Safety.SelfCgroup = ownCgroup(cfg.Resolver, os.Getpid())
	}
	ctx, cancel := context.WithCancel(context.Background())
	x := &Executor{cfg: cfg, j: j, verify: verify, log: cfg.Log, safety: newSafety(cfg.Safety),
		limits: &Limits{j: j, now: time.Now}, actions: map[string]Action{}, ctx: ctx, cancel: cancel,
		ladders: map[string]*ladder{}, episodes: map[string]string{}, tracked: map[string]*tracked{}, cgroups: map[string]*cgroupSeen{},
		missed: map[string]*missed{}, events: newEventBus()}
	x.metrics = newMetrics(x.activeCount, func() float64 {
		if x.Paused() {
			return 1
		}
		return 0
	})
	x.metrics.extra = []prometheus.Collector{x.events.dropped, x.events.emitted}
	x.throttle = NewThrottleMemory(x.note)
	for _, a := range []Action{x.throttle, &Reclaim{}, &ThrottleCPU{}, &Freeze{}, &Thaw{}, &Signal{}, &KillCgroup{}, &RestartUnit{}, &Exec{}} {
		x.actions[a.Name()] = a
	}
	if err := x.recover(); err != nil {
		cancel()
		return nil, err
	}
	return x, nil
}

// Register adds an action (e.g. the Kubernetes evict action), replacing any
// of the same name. Register its validator with RegisterValidator too.
func (x *Executor) Register(a Action) {
	x.actionsMu.Lock()
	x.actions[a.Name()] = a
	x.actionsMu.Unlock()
}

func (x *Executor) action(name string) Action {
	x.actionsMu.RLock()
	defer x.actionsMu.RUnlock()
	return x.actions[name]
}

// Collector returns the remediation metrics.
func (x *Executor) Collector() prometheus.Collector { return x.metrics }

// Journal is the journal the Executor writes.
func (x *Executor) Journal() *journal.Journal { return x.j }

// Pause stops new remediations and new steps until Resume; running limits
// stay as they are.
func (x *Executor) Pause() {
	x.safety.mu.Lock()
	x.safety.paused = true
	x.safety.mu.Unlock()
	x.log.Warn("remediation paused")
}

// Resume undoes Pause.
func (x *Executor) Resume() {
	x.safety.mu.Lock()
	x.safety.paused = false
	x.safety.mu.Unlock()
	x.log.Warn("remediation resumed")
}

// Paused reports whether remediation is paused.
func (x *Executor) Paused() bool {
	x.safety.mu.Lock()
	defer x.safety.mu.Unlock()
	return x.safety.paused
}

// SetSafety replaces the safety configuration (config reload); counters and
// rate-limit buckets are kept.
func (x *Executor) SetSafety(cfg SafetyConfig) {
	x.safety.mu.Lock()
	if cfg.SelfCgroup == "" {
		cfg.SelfCgroup = x.safety.cfg.SelfCgroup
	}
	x.safety.cfg = cfg
	x.safety.mu.Unlock()
}

func (x *Executor) activeCount() float64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	return float64(len(x.ladders))
}

func ladderKey(f *rules.Finding) string { return f.Rule + "|" + f.Target.Key() }

func (x *Executor) put(tr *tracked) {
	if err := x.j.Put(tr.rec); err != nil {
		x.log.Error("journal write failed", "remediation_id", tr.rec.ID, "err", err)
	}
}

// Handle starts or continues remediations for findings. Enforce findings
// start a ladder (once per rule and target while it runs or holds); shadow
// findings are journaled once per episode and never acted on; resolved
// findings end the episode and release held limits. Handle does not block on
// actions.
func (x *Executor) Handle(findings []rules.Finding) {
	order := make([]int, 0, len(findings))
	for i := range findings {
		order = append(order, i)
	}
	sort.SliceStable(order, func(a, b int) bool {
		return x.safety.rank(findings[order[a]].Target) < x.safety.rank(findings[order[b]].Target)
	})
	for _, i := range order {
		f := &findings[i]
		key := ladderKey(f)
		switch {
		case f.State == rules.Resolved:
			x.resolve(key)
		case f.State != rules.Firing:
		case f.Mode == rules.Shadow:
			x.episodeRecord(f, journal.KindShadow, "", "shadow rule: recorded, no action")
		default:
			x.start(f)
		}
	}
}

func (x *Executor) resolve(key string) {
	x.mu.Lock()
	delete(x.episodes, key)
	l := x.ladders[key]
	if l != nil && !l.isResolved {
		l.isResolved = true
		close(l.resolved)
	}
	holding := l != nil && l.holding && !l.running
	x.mu.Unlock()
	if holding {
		x.wg.Add(1)
		go func() {
			defer x.wg.Done()
			x.releaseHeld(l, "condition cleared")
			x.mu.Lock()
			delete(x.ladders, key)
			x.mu.Unlock()
		}()
	}
}

// newRecord builds a record with the evidence Observe kept for f's target.
func (x *Executor) newRecord(f *rules.Finding, kind string) (*journal.Record, *tracked) {
	fc := *f
	fc.Evidence = cloneMap(f.Evidence)
	rec := &journal.Record{ID: uuid.NewString(), Node: x.cfg.Node, Kind: kind, Time: time.Now(), Target: f.Target,
		Rule: f.Rule, Finding: &fc, Outcome: journal.OutcomePending,
		Evidence: journal.Evidence{Signals: fc.Evidence}, Shadow: kind == journal.KindShadow}
	tr := &tracked{rec: rec, path: f.Target.Path, start: rec.Time}
	x.mu.Lock()
	if c := x.cgroups[f.Target.Path]; c != nil && f.Target.Kind == "cgroup" {
		rec.Evidence.Samples = c.samples()
		tr.oomBase, tr.lastOOM = c.latest.Events.OOMKill, c.latest.Events.OOMKill
		tr.growth0, tr.psi0 = c.latest.Derived.GrowthBytesPerSecond, c.latest.Pressure.Some.Avg10
		d := c.latest.Derived
		tr.predict = c.latest.Memory.EffectiveLimitBytes != collectors.Unlimited &&
			(d.UsageRatio >= 0.9 || !math.IsInf(float64(d.SecondsToLimit), 1) && float64(d.SecondsToLimit) <= 300)
	}
	x.mu.Unlock()
	return rec, tr
}

func cloneMap(m map[string]float64) map[string]float64 {
	if m == nil {
		return nil
	}
	out := make(map[string]float64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// episodeRecord journals a shadow finding or a refusal once per episode
// (until the finding resolves), and tracks it for outcome measurement.
func (x *Executor) episodeRecord(f *rules.Finding, kind, reason, decision string) {
	key := ladderKey(f)
	x.mu.Lock()
	if _, seen := x.episodes[key]; seen {
		x.mu.Unlock()
		return
	}
	x.episodes[key] = "pending"
	x.mu.Unlock()
	rec, tr := x.newRecord(f, kind)
	rec.Reason, rec.Decision = reason, decision
	x.mu.Lock()
	x.episodes[key] = rec.ID
	x.tracked[rec.ID] = tr
	x.mu.Unlock()
	x.log.Info("remediation recorded without action", "remediation_id", rec.ID, "rule", f.Rule, "target", f.Target.Key(), "kind", kind, "reason", reason)
	x.wg.Add(1)
	go func() {
		defer x.wg.Done()
		tr.mu.Lock()
		x.put(tr)
		tr.mu.Unlock()
	}()
}

func (x *Executor) start(f *rules.Finding) {
	key := ladderKey(f)
	x.mu.Lock()
	_, running := x.ladders[key]
	x.mu.Unlock()
	if running {
		return
	}
	known, nodeActs := false, false
	for _, st := range f.Actions {
		act := x.action(st.Action)
		known = known || act != nil
		nodeActs = nodeActs || act != nil && nodeScoped(act)
	}
	if !known {
		x.metrics.refused.WithLabelValues(RefusedUnknownAction).Inc()
		x.episodeRecord(f, journal.KindRefusal, RefusedUnknownAction, "refused: no action of the ladder is available on this node")
		return
	}
	// A node-level finding has no cgroup: only node-scoped actions (cordon)
	// take it; its ladder's other steps are refused one by one.
	onNode := f.Target.Kind == "node" && nodeActs
	if reason := x.safety.admitScoped(f.Target, onNode, time.Now()); reason != "" {
		x.metrics.refused.WithLabelValues(reason).Inc()
		x.episodeRecord(f, journal.KindRefusal, reason, "refused by safety: "+reason)
		return
	}
	var cg Cgroup
	var loc Location
	var err error
	if !onNode {
		loc, err = x.cfg.Resolver(f.Target)
		if err == nil {
			cg, err = OpenCgroup(loc)
		}
	}
	if err != nil {
		x.safety.done()
		x.metrics.refused.WithLabelValues(RefusedNoCgroup).Inc()
		x.episodeRecord(f, journal.KindRefusal, RefusedNoCgroup, "refused: "+err.Error())
		return
	}
	if !onNode {
		if below := protectedBelow(x.safety.protected(), f.Target, memoryDir(loc), x.knownIdentity); below != "" {
			x.safety.done()
			x.metrics.refused.WithLabelValues(RefusedProtectedBelow).Inc()
			x.episodeRecord(f, journal.KindRefusal, RefusedProtectedBelow, "refused by safety: the protected cgroup "+below+" is inside the target")
			return
		}
	}
	rec, tr := x.newRecord(f, journal.KindRemediation)
	l := &ladder{key: key, id: rec.ID, finding: *rec.Finding, cg: cg, tr: tr, resolved: make(chan struct{}),
		verified: make(chan struct{}, 1), running: true}
	tr.ladder = l
	steps := make([]string, len(f.Actions))
	for i, st := range f.Actions {
		steps[i] = st.Action
	}
	rec.Decision = fmt.Sprintf("rule %s fired on %s: ladder %s", f.Rule, f.Target.Key(), strings.Join(steps, " -> "))
	x.mu.Lock()
	if _, dup := x.ladders[key]; dup { // Handle called concurrently for the same key
		x.mu.Unlock()
		x.safety.done()
		return
	}
	if c := x.cgroups[f.Target.Path]; c != nil {
		s := c.latest
		l.latest = &s
	}
	x.ladders[key] = l
	x.tracked[rec.ID] = tr
	x.mu.Unlock()
	x.wg.Add(1)
	go func() {
		defer x.wg.Done()
		defer x.safety.done()
		x.runLadder(l)
	}()
}

func (x *Executor) request(l *ladder, st *rules.ActionStep, dry bool) Request {
	x.mu.Lock()
	var sample *collectors.CgroupSample
	if l.latest != nil {
		s := *l.latest
		sample = &s
	}
	x.mu.Unlock()
	return Request{RemediationID: l.id, Rule: l.finding.Rule, Target: l.finding.Target, Cgroup: l.cg,
		Params: st.Params, DryRun: dry, Sample: sample, Limits: x.limits, Victims: x.cfg.Victims,
		ConditionHolds: func() bool {
			x.mu.Lock()
			defer x.mu.Unlock()
			return !l.isResolved && !l.verifyOK
		},
		Log: x.log.With("remediation_id", l.id, "rule", l.finding.Rule, "target", l.finding.Target.Key(), "action", st.Action)}
}

func (x *Executor) runLadder(l *ladder) {
	tr, rec := l.tr, l.tr.rec
	log := x.log.With("remediation_id", l.id, "rule", l.finding.Rule, "target", l.finding.Target.Key())
	if l.cg != nil { // nil for a node target: no processes of its own
		if pids, err := l.cg.Pids(); err == nil {
			procs := topProcesses(pids)
			if len(procs) > 5 {
				procs = procs[:5]
			}
			rec.Evidence.TopProcesses = procs
		}
	}
	if x.events.has() {
		tr.mu.Lock()
		ev := recordEvent(EventStarted, rec)
		tr.mu.Unlock()
		x.events.emit(ev)
	}
	succeeded, anyApplied, allDry := false, false, true
	for i := range l.finding.Actions {
		st := &l.finding.Actions[i]
		if x.isResolved(l) || x.ctx.Err() != nil {
			break
		}
		act := x.action(st.Action)
		onNode := l.cg == nil && act != nil && nodeScoped(act)
		refused, dry := x.safety.step(l.finding.Target, *st, onNode)
		step := journal.Step{Index: i, Action: st.Action, Params: st.Params, VerifyExpr: st.VerifyExpr,
			Timeout: st.Timeout, DryRun: dry, Intent: time.Now()}
		if refused != "" {
			step.Result, step.Error, step.Finished = "refused", refused, time.Now()
			x.metrics.refused.WithLabelValues(refused).Inc()
			x.metrics.remediations.WithLabelValues(st.Action, "refused").Inc()
			tr.mu.Lock()
			rec.Steps = append(rec.Steps, step)
			x.put(tr)
			x.emitStep(rec, PhaseResult)
			tr.mu.Unlock()
			log.Warn("step refused", "action", st.Action, "reason", refused)
			break
		}
		if act == nil {
			// Validated at load time but not registered here (e.g. a
			// Kubernetes action on a node without Kubernetes): next step.
			step.Result, step.Error, step.Finished = "error", "action not available on this node", time.Now()
			x.metrics.remediations.WithLabelValues(st.Action, "error").Inc()
			tr.mu.Lock()
			rec.Steps = append(rec.Steps, step)
			x.put(tr)
			x.emitStep(rec, PhaseResult)
			tr.mu.Unlock()
			continue
		}
		// Intent, durable before acting. An action that changes nothing but
		// through Limits gets it written with the first limit's original, in
		// one transaction: one fsync less before the first write.
		tr.mu.Lock()
		rec.DryRun = rec.DryRun || dry
		rec.Steps = append(rec.Steps, step)
		_, limitsOnly := act.(limitsOnlyAction)
		deferIntent := limitsOnly && !dry
		if !deferIntent {
			x.put(tr)
		}
		x.emitStep(rec, PhaseIntent)
		tr.mu.Unlock()
		x.mu.Lock()
		l.cur, l.verifyOK, l.verifySig = st, false, false
		x.mu.Unlock()
		req := x.request(l, st, dry)
		if deferIntent {
			req.Limits = x.limits.withIntent(func(a *journal.AppliedLimit) error {
				tr.mu.Lock()
				defer tr.mu.Unlock()
				return x.j.PutWithApplied(tr.rec, a)
			})
		}
		timeout := st.Timeout
		if timeout <= 0 {
			timeout = x.cfg.StepTimeout
		}
		t0 := time.Now()
		res, err := x.do(act, req, timeout, log)
		x.metrics.duration.WithLabelValues(st.Action).Observe(time.Since(t0).Seconds())
		result := "applied"
		switch {
		case errors.Is(err, ErrUnsupported):
			// Not an error of the action: this cgroup version lacks the
			// knob (memory.high, memory.reclaim on v1). Next step.
			result, res.Detail, res.Skipped, err = "skipped", err.Error(), true, nil
		case err != nil:
			result = "error"
		case dry:
			result = "dry_run"
		case res.Skipped:
			result = "skipped"
		}
		x.metrics.remediations.WithLabelValues(st.Action, result).Inc()
		tr.mu.Lock()
		s := &rec.Steps[len(rec.Steps)-1]
		s.Finished, s.Result, s.Detail = time.Now(), result, res.Detail
		if err != nil {
			s.Error = err.Error()
			rec.Errors = append(rec.Errors, fmt.Sprintf("step %d %s: %v", i, st.Action, err))
		}
		x.put(tr)
		x.emitStep(rec, PhaseResult)
		tr.mu.Unlock()
		log.Info("step done", "action", st.Action, "result", result, "detail", res.Detail, "err", err)
		if err != nil {
			continue
		}
		if dry || res.Skipped {
			continue
		}
		allDry = false
		anyApplied = true
		if r, ok := act.(Releaser); ok {
			x.mu.Lock()
			l.held = append(l.held, heldAction{r: r, req: req})
			x.mu.Unlock()
		}
		if res.Terminated {
			x.mu.Lock()
			l.terminated = true
			x.mu.Unlock()
			succeeded = true
			break
		}
		if st.Verify == nil || x.verify == nil {
			succeeded = true
			break
		}
		timer := time.NewTimer(timeout)
		verified := false
		select {
		case <-l.verified:
			verified = true
		case <-l.resolved:
		case <-timer.C:
		case <-x.ctx.Done():
		}
		timer.Stop()
		tr.mu.Lock()
		s = &rec.Steps[len(rec.Steps)-1]
		if verified {
			s.Verified, s.VerifiedAt = true, time.Now()
		} else if !x.isResolved(l) && x.ctx.Err() == nil {
			s.VerifyTimedOut = true
		}
		x.put(tr)
		if s.Verified || s.VerifyTimedOut {
			x.emitStep(rec, PhaseVerify)
		}
		tr.mu.Unlock()
		if verified || x.isResolved(l) {
			succeeded = true
			break
		}
	}
	tr.mu.Lock()
	switch {
	case allDry && len(rec.Steps) > 0 && rec.Steps[0].Result == "dry_run":
		rec.Decision += " (dry-run: nothing changed)"
	case !anyApplied && len(rec.Steps) > 0:
		rec.Decision += " (no step applied)"
	}
	if x.events.has() {
		x.events.emit(recordEvent(EventEnded, rec))
	}
	tr.mu.Unlock()
	x.mu.Lock()
	l.running, l.cur = false, nil
	hold := succeeded && !l.terminated && !l.isResolved && len(l.held) > 0 && x.ctx.Err() == nil
	if hold {
		l.holding, l.holdSince = true, time.Now()
	}
	x.mu.Unlock()
	if !hold {
		why := "ladder ended"
		if x.isResolved(l) {
			why = "condition cleared"
		}
		x.releaseHeld(l, why)
		x.mu.Lock()
		delete(x.ladders, l.key)
		x.mu.Unlock()
	}
}

// errStepOverran is a step whose action did not return within the step's
// timeout; the ladder moves on without it.
var errStepOverran = errors.New("action did not return within the step timeout")

// do runs act.Do with a deadline of timeout and returns when Do does or
// when the deadline passes, whichever is first, so that an action stuck in
// the kernel (a long memory.reclaim write, a hung D-Bus call) cannot hold
// the ladder: the next step runs. An overrunning Do keeps running in a
// goroutine owned by the Executor's WaitGroup; if it applies something
// releasable after all, that is released at once, since the ladder has
// moved on.
func (x *Executor) do(act Action, req Request, timeout time.Duration, log *slog.Logger) (Result, error) {
	if d, ok := act.(interface {
		minStepDeadline(map[string]any) time.Duration
	}); ok {
		timeout = max(timeout, d.minStepDeadline(req.Params))
	}
	ctx, cancel := context.WithTimeout(x.ctx, timeout)
	var (
		mu      sync.Mutex
		out     *Result
		outErr  error
		gaveUp  bool
		doneRun = make(chan struct{})
	)
	x.wg.Add(1)
	go func() {
		defer x.wg.Done()
		defer cancel()
		res, err := act.Do(ctx, req)
		mu.Lock()
		late := gaveUp
		out, outErr = &res, err
		mu.Unlock()
		close(doneRun)
		if !late {
			return
		}
		log.Warn("overrunning step returned after the ladder moved on", "action", act.Name(), "detail", res.Detail, "err", err)
		if r, ok := act.(Releaser); ok && err == nil && !req.DryRun && !res.Skipped {
			if detail, rerr := r.Release(context.Background(), req); rerr != nil || detail != "" {
				log.Warn("released late step", "action", act.Name(), "detail", detail, "err", rerr)
			}
		}
	}()
	select {
	case <-doneRun:
	case <-ctx.Done():
	}
	mu.Lock()
	defer mu.Unlock()
	if out != nil { // Do returned, perhaps just as the deadline passed
		return *out, outErr
	}
	gaveUp = true
	return Result{}, fmt.Errorf("%s on %s after %s: %w", act.Name(), req.Target.Key(), timeout, errStepOverran)
}

func (x *Executor) isResolved(l *ladder) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return l.isResolved
}

// releaseHeld releases what the ladder's steps hold, newest first, and
// journals it.
func (x *Executor) releaseHeld(l *ladder, why string) {
	x.mu.Lock()
	held := l.held
	l.held, l.holding = nil, false
	x.mu.Unlock()
	for i := len(held) - 1; i >= 0; i-- {
		h := held[i]
		detail, err := h.r.Release(context.Background(), h.req)
		if detail == "" && err == nil {
			continue
		}
		step := journal.Step{Index: len(l.tr.rec.Steps), Action: actionName(h.r) + ":release",
			Intent: time.Now(), Finished: time.Now(), Result: "released", Detail: why + ": " + detail}
		if err != nil {
			step.Result, step.Error = "error", err.Error()
		}
		l.tr.mu.Lock()
		l.tr.rec.Steps = append(l.tr.rec.Steps, step)
		x.put(l.tr)
		x.emitStep(l.tr.rec, PhaseResult)
		l.tr.mu.Unlock()
	}
}

func actionName(r Releaser) string {
	if a, ok := r.(Action); ok {
		return a.Name()
	}
	return "release"
}

// note journals what an action did on its own (a throttle's watchdog).
func (x *Executor) note(id, detail string) {
	x.mu.Lock()
	tr := x.tracked[id]
	for _, l := range x.ladders {
		if l.id != id {
			continue
		}
		tr = l.tr
		for i, h := range l.held {
			if _, ok := h.r.(*ThrottleMemory); ok {
				l.held = append(l.held[:i], l.held[i+1:]...)
				break
			}
		}
	}
	x.mu.Unlock()
	step := journal.Step{Action: ActionThrottleMemory + ":release", Intent: time.Now(), Finished: time.Now(), Result: "released", Detail: detail}
	if tr == nil {
		// The record is no longer tracked: append to the stored one.
		rec, err := x.j.Get(id)
		if err != nil {
			x.log.Error("journal: cannot note a release", "remediation_id", id, "err", err)
			return
		}
		tr = &tracked{rec: rec}
	}
	tr.mu.Lock()
	step.Index = len(tr.rec.Steps)
	tr.rec.Steps = append(tr.rec.Steps, step)
	x.put(tr)
	x.emitStep(tr.rec, PhaseResult)
	tr.mu.Unlock()
}

// emitStep emits an EventStep about rec's last step; call with the record's
// lock held.
func (x *Executor) emitStep(rec *journal.Record, phase string) {
	if rec.Kind != journal.KindRemediation || len(rec.Steps) == 0 || !x.events.has() {
		return
	}
	x.events.emit(stepEvent(rec, phase, len(rec.Steps)-1))
}

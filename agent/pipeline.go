package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/vigil-agent/vigil/agent/config"
	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/remediate"
	"github.com/vigil-agent/vigil/remediate/journal"
	"github.com/vigil-agent/vigil/rules"
	"github.com/vigil-agent/vigil/rules/builtin"
	"github.com/vigil-agent/vigil/rules/loader"
)

// engineStateKey is where the rule engine's state (pending, firing,
// cooldowns) is kept in the journal, so a restart neither escapes a
// cooldown nor re-fires a storm.
const engineStateKey = "rules.engine.state"

// stateSaveEvery is how often the engine state is saved while running.
const stateSaveEvery = 15 * time.Second

// pipeline is the part of a tick after collection: collect → evaluate →
// remediate. Without a journal, remediation is off and findings are only
// counted by the engine's metrics; /readyz says so.
type pipeline struct {
	log       *slog.Logger
	engine    *rules.Engine
	executor  *remediate.Executor
	journal   *journal.Journal
	findings  []rules.Finding
	lastSaved []byte
	nextSave  time.Time
	health    *health
	agent     *Agent
}

// buildPipeline loads the rules, opens the journal and the executor, and
// mounts their metrics and handlers. Rule files that fail to load stop the
// start; a journal that cannot be opened leaves the agent observing, not
// ready.
func (a *Agent) buildPipeline(cfg *config.Config, hier collectors.Hierarchy) error {
	p := &a.pipeline
	p.log, p.health, p.agent = a.log, a.health, a
	set, err := a.loadRules(cfg)
	if err != nil {
		return err
	}
	p.engine = rules.NewEngine(set, engineOptions(cfg))
	a.reg.MustRegister(p.engine.Collector())

	j, err := journal.Open(cfg.Remediation.Journal.Path, journal.Options{
		Retention: cfg.Remediation.Journal.Retention,
		MaxBytes:  cfg.Remediation.Journal.MaxBytes,
	})
	if err != nil {
		a.log.Error("journal unavailable: observing only, no remediation", "path", cfg.Remediation.Journal.Path, "err", err)
		a.SetNotReady("journal", err.Error())
		return nil
	}
	p.journal = j
	if b, err := j.LoadState(engineStateKey); err == nil && len(b) > 0 {
		var states []rules.TargetState
		if err := json.Unmarshal(b, &states); err != nil {
			a.log.Warn("ignoring unreadable rule state", "err", err)
		} else {
			p.engine.Restore(states)
			p.lastSaved = b
			a.log.Info("rule state restored", "states", len(states))
		}
	}
	x, err := remediate.New(remediate.Config{
		Safety:   safetyConfig(cfg),
		Resolver: remediate.DefaultResolver(filepath.Join(cfg.HostRoot, "sys", "fs", "cgroup"), hier.Version),
		Log:      a.log,
	}, j, remediate.VerifyFunc(p.engine.Verify))
	if err != nil {
		j.Close()
		p.journal = nil
		a.log.Error("remediation unavailable: observing only", "err", err)
		a.SetNotReady("journal", err.Error())
		return nil
	}
	p.executor = x
	a.reg.MustRegister(x.Collector())
	a.Handle("GET /api/v1/remediations", j.Handler())
	a.Handle("GET /api/v1/remediations/{id}", j.Handler())
	pause := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The token is checked by HandleAuthenticated; hand the executor's
		// handler the current one so reloads of api.token_file apply.
		tok := ""
		if t := a.token.Load(); t != nil {
			tok = *t
		}
		x.PauseHandler(tok).ServeHTTP(w, r)
	})
	a.Handle("GET /api/v1/pause", pause)
	a.HandleAuthenticated("POST /api/v1/pause", pause)
	a.HandleAuthenticated("POST /api/v1/resume", pause)
	return nil
}

func engineOptions(cfg *config.Config) rules.EngineOptions {
	return rules.EngineOptions{
		Shadow:     cfg.Rules.Shadow,
		OptIn:      ruleOptIn(cfg.Remediation.OptIn),
		MaxTargets: cfg.MaxCgroups,
		// TargetGrace 0 is the engine's default.
		TargetGrace: cfg.Rules.TargetGrace,
		Clock:       time.Now,
	}
}

// ruleOptIn maps remediation.opt_in to the rule selectors' opt-in: path
// globs and unit: globs (namespace: and label: patterns are matched by
// remediation's safety layer).
func ruleOptIn(patterns []string) rules.OptIn {
	var o rules.OptIn
	for _, p := range patterns {
		switch {
		case strings.HasPrefix(p, "/"):
			o.Paths = append(o.Paths, p)
		case strings.HasPrefix(p, "unit:"):
			o.Units = append(o.Units, strings.TrimPrefix(p, "unit:"))
		}
	}
	return o
}

// safetyConfig maps the remediation section onto remediate's safety layer.
func safetyConfig(cfg *config.Config) remediate.SafetyConfig {
	r := cfg.Remediation
	s := remediate.DefaultSafety()
	s.DryRun = r.DryRun
	s.OptIn = append([]string(nil), r.OptIn...)
	s.Protected = append(append([]string(nil), remediate.DefaultProtected...), r.Protected...)
	s.PerTarget = remediate.Rate{Every: r.PerTarget.Every, Burst: r.PerTarget.Burst}
	s.PerNode = remediate.Rate{Every: r.PerNode.Every, Burst: r.PerNode.Burst}
	s.MaxConcurrent = r.MaxConcurrent
	s.BlastRadius = r.MaxTargetsPerHour
	s.BlastWindow = time.Hour
	return s
}

// loadRules is loadRuleSet for the running agent: when only the shipped
// rules fail to compile (an action they name is not in this build), the
// agent starts with the user's rules alone, degraded, instead of not at all.
func (a *Agent) loadRules(cfg *config.Config) (*rules.RuleSet, error) {
	set, err := loadRuleSet(cfg)
	if err == nil || !cfg.Rules.Builtin {
		a.SetDegraded("builtin_rules", "")
		return set, err
	}
	without := *cfg
	without.Rules.Builtin = false
	set, err2 := loadRuleSet(&without)
	if err2 != nil {
		return nil, err
	}
	a.log.Error("built-in rules do not compile in this build; running without them", "err", err)
	a.SetDegraded("builtin_rules", err.Error())
	return set, nil
}

// loadRuleSet compiles the shipped rules (rules.builtin) and the rule
// files of rules.dirs (*.yaml and *.yml, not *_test.yaml, following
// symlinks so a Kubernetes ConfigMap's ..data swap works). No files: no
// rules.
func loadRuleSet(cfg *config.Config) (*rules.RuleSet, error) {
	files := map[string][]byte{}
	for _, dir := range cfg.Rules.Dirs {
		dirFiles, err := loader.ReadDir(dir)
		if err != nil {
			return nil, err
		}
		for name, b := range dirFiles {
			files[name] = b
		}
	}
	if cfg.Rules.Builtin {
		for name, b := range builtin.Files() {
			files[name] = b
		}
	}
	if len(files) == 0 {
		return nil, nil
	}
	return rules.Load(files, rules.LoadOptions{Actions: remediate.Validators()})
}

// start runs the executor's housekeeping; the returned func stops it,
// releases what remediations hold, saves the rule state and closes the
// journal.
func (p *pipeline) start(ctx context.Context, a *Agent) (stop func()) {
	if p.executor == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.executor.Run(ctx); err != nil && ctx.Err() == nil {
			a.log.Error("remediation housekeeping stopped", "err", err)
		}
	}()
	return func() {
		cancel()
		<-done
		if err := p.executor.Close(); err != nil {
			a.log.Warn("closing remediation", "err", err)
		}
		p.saveState(true)
		if err := p.journal.Close(); err != nil {
			a.log.Warn("closing journal", "err", err)
		}
	}
}

// closeUnstarted releases the executor and the journal when the agent
// fails to start after buildPipeline.
func (p *pipeline) closeUnstarted() {
	if p.executor != nil {
		p.executor.Close()
	}
	if p.journal != nil {
		p.journal.Close()
	}
}

// process runs one snapshot (full or partial) through the stages.
func (p *pipeline) process(snap *collectors.Snapshot, now time.Time) {
	if p.engine == nil {
		return
	}
	p.findings = p.engine.Evaluate(snap, now)
	p.refreshLimits()
	if p.executor == nil {
		return
	}
	p.executor.Observe(snap)
	if len(p.findings) > 0 {
		p.executor.Handle(p.findings)
	}
	if p.executor.Paused() {
		p.health.setNotReady("paused", "remediation paused by an operator (POST /api/v1/resume)")
	} else {
		p.health.setNotReady("paused", "")
	}
	if !snap.Partial && now.After(p.nextSave) {
		p.nextSave = now.Add(stateSaveEvery)
		p.saveState(false)
	}
}

// refreshLimits has the limit files of every cgroup with a finding re-read
// at the next snapshot (they are otherwise read every 10 s): remediation may
// write memory.high or a limit there, asynchronously, and the rules and the
// journal's evidence should see it at the next tick.
func (p *pipeline) refreshLimits() {
	if p.agent == nil || p.agent.sampler == nil {
		return
	}
	for i := range p.findings {
		if t := &p.findings[i].Target; t.Kind == "cgroup" && t.Path != "" {
			p.agent.sampler.cgroups.RefreshLimits(t.Path)
		}
	}
}

// saveState writes the rule state to the journal when it changed.
func (p *pipeline) saveState(final bool) {
	if p.journal == nil || p.engine == nil {
		return
	}
	states := p.engine.State()
	sort.SliceStable(states, func(i, j int) bool { return states[i].Rule < states[j].Rule })
	b, err := json.Marshal(states)
	if err != nil {
		p.log.Warn("encoding rule state", "err", err)
		return
	}
	if bytes.Equal(b, p.lastSaved) {
		return
	}
	if err := p.journal.SaveState(engineStateKey, b); err != nil {
		p.log.Warn("saving rule state", "err", err, "final", final)
		return
	}
	p.lastSaved = b
}

// reload applies a new configuration to the stages: new rules (a set that
// fails to load rejects the whole reload) and new safety limits.
func (p *pipeline) reload(cfg *config.Config) error {
	if p.engine == nil {
		return nil
	}
	set, err := p.agent.loadRules(cfg)
	if err != nil {
		p.engine.ReloadFailed(err)
		return err
	}
	p.engine.Swap(set)
	if p.executor != nil {
		p.executor.SetSafety(safetyConfig(cfg))
	}
	return nil
}

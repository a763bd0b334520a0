package agent

import (
	"context"
	"time"

	"github.com/vigil-agent/vigil/agent/config"
	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/rules"
)

// ruleEvaluator is what the loop needs from the rule engine: pure
// evaluation of one snapshot.
type ruleEvaluator interface {
	Evaluate(snap *collectors.Snapshot, now time.Time) []rules.Finding
}

// remediator is what the loop needs from remediation: it sees every
// snapshot (to verify ladder steps and measure outcomes) and every set of
// findings; it acts in its own goroutine (Run).
type remediator interface {
	Observe(snap *collectors.Snapshot)
	Handle(findings []rules.Finding)
	Run(ctx context.Context) error
}

// pipeline is the part of a tick after collection: collect → evaluate →
// remediate. A stage that is not configured is skipped.
type pipeline struct {
	rules     ruleEvaluator
	remediate remediator
	findings  []rules.Finding
}

// start runs the stages' goroutines; the returned func stops them and waits.
func (p *pipeline) start(ctx context.Context, a *Agent) (stop func()) {
	if p.remediate == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.remediate.Run(ctx); err != nil && ctx.Err() == nil {
			a.log.Error("remediation stopped", "err", err)
			a.SetNotReady("remediation", err.Error())
		}
	}()
	return func() { cancel(); <-done }
}

// process runs one snapshot (full or partial) through the stages.
func (p *pipeline) process(snap *collectors.Snapshot, now time.Time) {
	p.findings = p.findings[:0]
	if p.rules != nil {
		p.findings = p.rules.Evaluate(snap, now)
	}
	if p.remediate != nil {
		p.remediate.Observe(snap)
		if len(p.findings) > 0 {
			p.remediate.Handle(p.findings)
		}
	}
}

// reload applies a new configuration to the stages; an error rejects the
// whole reload.
func (p *pipeline) reload(cfg *config.Config) error { return nil }

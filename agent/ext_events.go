package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/vigil-agent/vigil/agent/config"
	"github.com/vigil-agent/vigil/agent/telemetry"
	"github.com/vigil-agent/vigil/remediate"
	"github.com/vigil-agent/vigil/remediate/journal"
	"github.com/vigil-agent/vigil/remediate/webhook"
)

// The remediation event consumers: outbound webhooks, log forwarding and
// tracing. Each subscribes to the executor's events, which reach it on its
// own goroutine through a bounded queue: a slow or dead receiver never
// holds up a ladder (what overflows is counted in
// vigil_remediation_events_dropped_total).

func init() {
	registerExtension(&Extension{Name: "remediation-events", Setup: setupRemediationEvents})
}

// nodeName is the node name events and records carry.
func (a *Agent) nodeName() string {
	if n := a.Config().Kubernetes.NodeName; n != "" {
		return n
	}
	if f := a.facts.Load(); f != nil && f.Hostname != "" {
		return f.Hostname
	}
	h, _ := os.Hostname()
	return h
}

// besideJournal is a file next to the journal.
func besideJournal(cfg *config.Config, name string) string {
	return filepath.Join(filepath.Dir(cfg.Remediation.Journal.Path), name)
}

// forwarderOnce builds the agent's one Forwarder (nil when forwarding is
// off), shared by the remediation records and the kernel OOM events.
func (a *Agent) forwarder() (*telemetry.Forwarder, error) {
	a.fwdOnce.Do(func() {
		cfg := a.Config().Forward
		if cfg.Address == "" {
			return
		}
		m, err := telemetry.NewForwardMetrics(a.reg)
		if err != nil {
			a.fwdErr = fmt.Errorf("forward: %w", err)
			return
		}
		a.fwd, a.fwdErr = telemetry.NewForwarder(telemetry.ForwarderConfig{Address: cfg.Address, TagPrefix: cfg.TagPrefix,
			BufferRecords: cfg.BufferRecords, Timeout: cfg.Timeout, NoAck: cfg.NoAck}, m, a.log)
		if a.fwd != nil {
			f := a.fwd
			a.OnStop(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				_ = f.Flush(ctx) // a dead endpoint must not hold the stop
				f.Close()
			})
		}
	})
	return a.fwd, a.fwdErr
}

func setupRemediationEvents(a *Agent) error {
	x := a.pipeline.executor
	if x == nil {
		return nil // no journal, no remediation: nothing to report
	}
	cfg := a.Config()
	node := a.nodeName()
	if err := setupOutboundWebhooks(a, cfg, x, node); err != nil {
		return err
	}
	fwd, err := a.forwarder()
	if err != nil {
		return err
	}
	if fwd != nil {
		j := x.Journal()
		x.Subscribe("forward", 0, func(ev remediate.Event) { forwardEvent(a, fwd, j, ev) })
	}
	return setupTracing(a, cfg, x, node)
}

// setupOutboundWebhooks starts the sender of webhooks.outbound and feeds it
// the executor's events.
func setupOutboundWebhooks(a *Agent, cfg *config.Config, x *remediate.Executor, node string) error {
	out := cfg.Webhooks.Outbound
	if len(out.Endpoints) == 0 {
		return nil
	}
	eps := make([]webhook.Endpoint, 0, len(out.Endpoints))
	for _, e := range out.Endpoints {
		ep := webhook.Endpoint{Name: e.Name, URL: e.URL, Types: e.Types, Format: e.Format}
		if ep.Format == "" {
			ep.Format = webhook.FormatEvent
		}
		if e.SecretFile != "" {
			s, err := readSecret(e.SecretFile)
			if err != nil {
				return err
			}
			ep.Secret = []byte(s)
		}
		if e.BearerTokenFile != "" {
			s, err := readSecret(e.BearerTokenFile)
			if err != nil {
				return err
			}
			ep.BearerToken = s
		}
		eps = append(eps, ep)
	}
	outbox := out.OutboxPath
	if outbox == "" {
		outbox = besideJournal(cfg, "outbox.db")
	}
	s, err := webhook.NewSender(webhook.SenderConfig{OutboxPath: outbox, Endpoints: eps,
		MinBackoff: out.MinBackoff, MaxBackoff: out.MaxBackoff, Logger: a.log.With("component", "webhooks")})
	if err != nil {
		return fmt.Errorf("webhooks.outbound: %w", err)
	}
	a.reg.MustRegister(s)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.Run(ctx); err != nil && ctx.Err() == nil {
			a.log.Error("outbound webhooks stopped", "err", err)
		}
	}()
	// Runs after the executor closed, so every event it emitted is in the
	// outbox (delivered on the next start if not now).
	a.OnStop(func() {
		cancel()
		<-done
		if err := s.Close(); err != nil {
			a.log.Warn("closing the webhook outbox", "err", err)
		}
	})
	x.Subscribe("webhooks", 0, func(ev remediate.Event) {
		we, ok := webhookEvent(ev, node)
		if !ok {
			return
		}
		if _, err := s.Enqueue(we); err != nil {
			a.log.Error("webhook event lost: outbox write failed", "remediation_id", ev.RecordID, "type", we.Type, "err", err)
		}
	})
	return nil
}

// webhookEvent maps an executor event to an outbound event; ok is false for
// events that have no outbound counterpart.
func webhookEvent(ev remediate.Event, node string) (webhook.Event, bool) {
	we := webhook.Event{Time: ev.Time, Node: node, RemediationID: ev.RecordID, Rule: ev.Rule, Severity: ev.Severity,
		Target: ev.Target, DryRun: ev.DryRun, Evidence: ev.Evidence}
	switch ev.Type {
	case remediate.EventStarted:
		we.Type, we.Message = webhook.EventRemediationStarted, ev.Decision
	case remediate.EventStep:
		st := ev.Step
		we.Type = webhook.EventRemediationStep
		es := &webhook.EventStep{Index: st.Index, Action: st.Action, Error: st.Error}
		switch {
		case ev.Phase == remediate.PhaseIntent:
			es.Result, we.Message = "started", fmt.Sprintf("step %d %s started", st.Index, st.Action)
		case ev.Phase == remediate.PhaseVerify && st.Verified:
			es.Result, we.Message = "verified", fmt.Sprintf("step %d %s: verify held", st.Index, st.Action)
		case ev.Phase == remediate.PhaseVerify:
			es.Result, we.Message = "timeout", fmt.Sprintf("step %d %s: verify did not hold within its timeout", st.Index, st.Action)
		case st.Result == "error" || st.Result == "refused":
			es.Result, we.Message = st.Result, fmt.Sprintf("step %d %s: %s", st.Index, st.Action, st.Error)
		default: // applied, dry_run, released
			es.Result, we.Message = "ok", st.Detail
			we.DryRun = we.DryRun || st.DryRun
		}
		we.Step = es
	case remediate.EventOutcome:
		we.Type, we.Outcome = webhook.EventRemediationOutcome, ev.Outcome
		we.Message = fmt.Sprintf("outcome %s (%s)", ev.Outcome, ev.Decision)
	case remediate.EventOOMMiss:
		we.Type, we.Outcome, we.RemediationID = webhook.EventOOMMissed, ev.Outcome, ""
		we.Message = fmt.Sprintf("kernel OOM-killed %d process(es) in %s; no remediation covered it", ev.OOMKills, ev.Target.Path)
		for _, k := range ev.KernelOOMKills {
			we.Message += fmt.Sprintf("; %s (pid %d, anon-rss %d KiB, %s)", k.Comm, k.PID, k.AnonRSSBytes>>10, k.Constraint)
		}
		we.Evidence = map[string]float64{"oom_kills": float64(ev.OOMKills)}
	default:
		return webhook.Event{}, false
	}
	return we, true
}

// forwardEvent forwards the journal record of a remediation when its
// outcome is measured, and of an OOM miss when it is journaled.
func forwardEvent(a *Agent, fwd *telemetry.Forwarder, j *journal.Journal, ev remediate.Event) {
	if ev.Type != remediate.EventOutcome && ev.Type != remediate.EventOOMMiss {
		return
	}
	rec, err := j.Get(ev.RecordID)
	if err != nil {
		a.log.Debug("forward: record not readable", "remediation_id", ev.RecordID, "err", err)
		return
	}
	m, err := telemetry.Record(rec)
	if err != nil {
		a.log.Warn("forward: encoding a record", "remediation_id", ev.RecordID, "err", err)
		return
	}
	fwd.Post(telemetry.KindRemediation, ev.Time, m)
}

// setupTracing traces every remediation: a root span from its start to the
// end of its ladder, a child span per step carrying the step's result; the
// trace id is written into the journal record.
func setupTracing(a *Agent, cfg *config.Config, x *remediate.Executor, node string) error {
	tc := cfg.Tracing
	if tc.Endpoint == "" {
		return nil
	}
	ratio := tc.SampleRatio
	tr, err := telemetry.NewTracing(context.Background(), telemetry.TracingConfig{Endpoint: tc.Endpoint, Protocol: tc.Protocol,
		Insecure: tc.Insecure, Headers: tc.Headers, TickSampleRatio: &ratio, ServiceName: tc.ServiceName, Node: node, Version: a.info.Version})
	if err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	a.OnStop(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if err := tr.Shutdown(ctx); err != nil {
			a.log.Warn("tracing shutdown", "err", err)
		}
	})
	t := &remediationTracer{tr: tr, x: x, a: a, open: map[string]*openTrace{}}
	x.Subscribe("tracing", 0, t.handle)
	a.OnStop(t.endAll) // ladders still open when vigil stops
	return nil
}

// remediationTracer turns the events of each remediation into its spans.
type remediationTracer struct {
	tr   *telemetry.Tracing
	x    *remediate.Executor
	a    *Agent
	mu   sync.Mutex
	open map[string]*openTrace
}

type openTrace struct {
	ctx   context.Context
	root  trace.Span
	steps map[int]trace.Span
}

func (t *remediationTracer) handle(ev remediate.Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ot := t.open[ev.RecordID]
	switch ev.Type {
	case remediate.EventStarted:
		id := ev.Target.Path
		if ev.Target.Kind != "cgroup" {
			id = ev.Target.Kind
		}
		ctx, root, traceID := t.tr.StartRemediation(context.Background(), telemetry.Remediation{ID: ev.RecordID, Rule: ev.Rule,
			Target: id, Namespace: ev.Target.Identity.Namespace, Pod: ev.Target.Identity.Pod,
			Container: ev.Target.Identity.Container, Unit: ev.Target.Identity.Unit, DryRun: ev.DryRun})
		root.SetAttributes(attribute.String("vigil.severity", ev.Severity), attribute.String("vigil.decision", ev.Decision))
		t.open[ev.RecordID] = &openTrace{ctx: ctx, root: root, steps: map[int]trace.Span{}}
		if traceID != "" {
			if err := t.x.SetTraceID(ev.RecordID, traceID); err != nil {
				t.a.log.Warn("tracing: trace id not journaled", "remediation_id", ev.RecordID, "err", err)
			}
		}
	case remediate.EventStep:
		if ot == nil {
			return
		}
		st := ev.Step
		sp := ot.steps[st.Index]
		if sp == nil {
			_, sp = t.tr.StartStep(ot.ctx, st.Index, st.Action)
			ot.steps[st.Index] = sp
		}
		switch ev.Phase {
		case remediate.PhaseIntent:
			return
		case remediate.PhaseResult:
			sp.SetAttributes(attribute.String("vigil.step.result", st.Result), attribute.String("vigil.step.detail", st.Detail),
				attribute.Bool("vigil.dry_run", st.DryRun))
			if st.VerifyExpr != "" && st.Result == "applied" {
				return // ends when its verify holds or times out
			}
		case remediate.PhaseVerify:
			sp.SetAttributes(attribute.Bool("vigil.step.verified", st.Verified), attribute.Bool("vigil.step.verify_timed_out", st.VerifyTimedOut))
		}
		outcome := st.Result
		if st.Verified {
			outcome = "verified"
		} else if st.VerifyTimedOut {
			outcome = "timeout"
		}
		var err error
		if st.Error != "" {
			err = fmt.Errorf("%s", st.Error)
		}
		sp.SetAttributes(attribute.String("vigil.outcome", outcome))
		if err != nil {
			sp.RecordError(err)
			sp.SetStatus(codes.Error, st.Error)
		}
		sp.End(trace.WithTimestamp(ev.Time))
		delete(ot.steps, st.Index)
	case remediate.EventEnded:
		if ot == nil {
			return
		}
		for _, sp := range ot.steps {
			sp.End(trace.WithTimestamp(ev.Time))
		}
		ot.root.SetAttributes(attribute.String("vigil.decision", ev.Decision))
		ot.root.End(trace.WithTimestamp(ev.Time))
		delete(t.open, ev.RecordID)
	}
}

// endAll ends the spans of remediations still open.
func (t *remediationTracer) endAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, ot := range t.open {
		for _, sp := range ot.steps {
			sp.End()
		}
		ot.root.End()
		delete(t.open, id)
	}
}

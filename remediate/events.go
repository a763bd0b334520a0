package remediate

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/remediate/journal"
	"github.com/vigil-agent/vigil/rules"
)

// Event types an Executor emits to its subscribers.
const (
	// EventStarted: a ladder started for an enforce finding (its record is
	// journaled).
	EventStarted = "started"
	// EventStep: a ladder step changed: Phase says how.
	EventStep = "step"
	// EventOutcome: an outcome was measured (Final on the last one).
	EventOutcome = "outcome"
	// EventOOMMiss: a kernel OOM kill no remediation covered was journaled.
	EventOOMMiss = "oom_miss"
	// EventEnded: the ladder stopped stepping (it may still hold a limit
	// until the condition clears; outcomes are measured later).
	EventEnded = "ended"
)

// Step phases of an EventStep.
const (
	// PhaseIntent: the step is about to run (its intent is journaled).
	PhaseIntent = "intent"
	// PhaseResult: the step ran; Step.Result says how ("applied",
	// "dry_run", "error", "refused", "released").
	PhaseResult = "result"
	// PhaseVerify: the step's verify held (Step.Verified) or timed out
	// (Step.VerifyTimedOut).
	PhaseVerify = "verify"
)

// Event is what an Executor tells its subscribers about a journal record as
// it changes. Every event of one record carries the same RecordID, Rule,
// Severity and Target.
type Event struct {
	Type     string
	Time     time.Time
	RecordID string
	// Kind is the record's kind (journal.KindRemediation, KindOOMMiss).
	Kind     string
	Rule     string
	Severity string
	Target   rules.Target
	DryRun   bool
	// Evidence are the signals the rule's condition used.
	Evidence map[string]float64
	Decision string
	// Step and Phase are set on EventStep; Step is a copy.
	Step  *journal.Step
	Phase string
	// Outcome is set on EventOutcome and EventOOMMiss; Final on the last
	// measurement of the record.
	Outcome string
	Final   bool
	// KernelOOMKills are the kernel's reports behind an EventOOMMiss (empty
	// when the miss was seen only in the cgroup's counters).
	KernelOOMKills []collectors.KernelOOMKill
	// OOMKills is how many processes the kernel killed (EventOOMMiss).
	OOMKills uint64
}

// defaultEventBuffer is a subscriber's queue length when Subscribe gets 0.
const defaultEventBuffer = 1024

// subscriber is one consumer of events with its bounded queue.
type subscriber struct {
	name    string
	ch      chan Event
	done    chan struct{}
	dropped atomic.Uint64
}

// eventBus fans events out to subscribers without ever blocking the emitter:
// a full queue drops the event and counts it.
type eventBus struct {
	mu      sync.RWMutex
	subs    []*subscriber
	closed  bool
	dropped *prometheus.CounterVec
	emitted *prometheus.CounterVec
}

func newEventBus() *eventBus {
	return &eventBus{
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vigil_remediation_events_dropped_total",
			Help: "Remediation events a subscriber (webhooks, forward, tracing) lost because its queue was full."}, []string{"subscriber"}),
		emitted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vigil_remediation_events_total",
			Help: "Remediation events queued for a subscriber, by subscriber and type."}, []string{"subscriber", "type"}),
	}
}

// Subscribe has fn called with every event the Executor emits from now on,
// in order, on a goroutine of its own that Close stops after the last event
// (fn may block: the ladders never wait for it). buf bounds the queue
// (0: 1024); when it is full the event is dropped for this subscriber and
// counted in vigil_remediation_events_dropped_total{subscriber=name}.
func (x *Executor) Subscribe(name string, buf int, fn func(Event)) {
	if buf <= 0 {
		buf = defaultEventBuffer
	}
	s := &subscriber{name: name, ch: make(chan Event, buf), done: make(chan struct{})}
	b := x.events
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		close(s.done)
		return
	}
	b.subs = append(b.subs, s)
	go func() {
		defer close(s.done)
		for ev := range s.ch {
			fn(ev)
		}
	}()
}

// EventsDropped returns how many events each subscriber lost.
func (x *Executor) EventsDropped() map[string]uint64 {
	out := map[string]uint64{}
	b := x.events
	b.mu.RLock()
	defer b.mu.RUnlock()
	for _, s := range b.subs {
		out[s.name] += s.dropped.Load()
	}
	return out
}

// emit queues ev for every subscriber without blocking.
func (b *eventBus) emit(ev Event) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return
	}
	for _, s := range b.subs {
		select {
		case s.ch <- ev:
			b.emitted.WithLabelValues(s.name, ev.Type).Inc()
		default:
			s.dropped.Add(1)
			b.dropped.WithLabelValues(s.name).Inc()
		}
	}
}

// has reports whether anyone listens (so that events are not built for
// nobody).
func (b *eventBus) has() bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return len(b.subs) > 0 && !b.closed
}

// close stops accepting events and waits until every subscriber has
// handled what was queued.
func (b *eventBus) close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	subs := b.subs
	for _, s := range subs {
		close(s.ch)
	}
	b.mu.Unlock()
	for _, s := range subs {
		<-s.done
	}
}

// recordEvent builds an event about rec; call with the record's lock held.
func recordEvent(typ string, rec *journal.Record) Event {
	ev := Event{Type: typ, Time: time.Now(), RecordID: rec.ID, Kind: rec.Kind, Rule: rec.Rule, Target: rec.Target,
		DryRun: rec.DryRun, Decision: rec.Decision, Outcome: rec.Outcome}
	if rec.Finding != nil {
		ev.Severity = rec.Finding.Severity
	}
	ev.Evidence = cloneMap(rec.Evidence.Signals)
	return ev
}

// stepEvent builds an EventStep about the last step of rec; call with the
// record's lock held.
func stepEvent(rec *journal.Record, phase string, i int) Event {
	ev := recordEvent(EventStep, rec)
	st := rec.Steps[i]
	st.Params = nil // the rule's, unchanged; receivers have the rule
	ev.Step, ev.Phase = &st, phase
	return ev
}

// SetTraceID stores the trace id of a record's remediation span in its
// journal record (tracing runs off the ladder, so the id comes afterwards).
func (x *Executor) SetTraceID(recordID, traceID string) error {
	x.mu.Lock()
	tr := x.tracked[recordID]
	if tr == nil {
		for _, l := range x.ladders {
			if l.id == recordID {
				tr = l.tr
			}
		}
	}
	x.mu.Unlock()
	if tr == nil {
		rec, err := x.j.Get(recordID)
		if err != nil {
			return err
		}
		tr = &tracked{rec: rec}
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.rec.TraceID = traceID
	return x.j.Put(tr.rec)
}

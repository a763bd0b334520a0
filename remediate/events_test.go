package remediate

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/remediate/journal"
	"github.com/vigil-agent/vigil/rules"
	"github.com/vigil-agent/vigil/test/cgtest"
)

// collector gathers the events of one subscriber.
type eventLog struct {
	mu  sync.Mutex
	evs []Event
}

func (l *eventLog) add(ev Event) {
	l.mu.Lock()
	l.evs = append(l.evs, ev)
	l.mu.Unlock()
}

func (l *eventLog) get() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Event(nil), l.evs...)
}

func describe(evs []Event) []string {
	var out []string
	for _, e := range evs {
		s := e.Type
		if e.Step != nil {
			s += fmt.Sprintf(" %s %d %s %s", e.Phase, e.Step.Index, e.Step.Action, e.Step.Result)
		}
		if e.Type == EventOutcome {
			s += " " + e.Outcome
		}
		out = append(out, s)
	}
	return out
}

// TestV1EventsOfALadder: a real ladder on a v1 cgroup emits started, the
// step's intent and result, ended, the release and the outcome, in order,
// all about the same record; a subscriber that never returns loses events
// (counted) and holds up nothing.
func TestV1EventsOfALadder(t *testing.T) {
	requireV1(t)
	g := cgtest.New(t, "memory", "cpu")
	g.Write(t, "memory", "memory.limit_in_bytes", "256M")
	quota0 := g.Read(t, "cpu", "cpu.cfs_quota_us")
	cgtest.Start(t, g.Allocator(cgtest.AllocSpec{TotalMiB: 32, StepMiB: 4}))
	j := openJournal(t)
	x := newExecutor(t, Config{Safety: acting(g), Resolver: locate(g), Measure: []time.Duration{time.Minute}}, j, nil)
	var log eventLog
	x.Subscribe("test", 0, log.add)
	stuck := make(chan struct{})
	x.Subscribe("stuck", 1, func(Event) { <-stuck })
	t.Cleanup(func() { close(stuck) }) // before the executor closes (cleanups run last first)

	smp := newSampler()
	eventually(t, 10*time.Second, "allocator charged", func() bool { return smp.sample(t, g).Memory.UsageBytes > 16<<20 })
	x.Observe(smp.snap(t, g))
	step := rules.ActionStep{Action: ActionThrottleCPU, Params: map[string]any{"cpus": 0.1}}
	x.Handle([]rules.Finding{finding("events", g, rules.Firing, step)})
	eventually(t, 5*time.Second, "cpu.cfs_quota_us = 10000", func() bool { return g.Read(t, "cpu", "cpu.cfs_quota_us") == "10000" })
	x.Handle([]rules.Finding{finding("events", g, rules.Resolved)})
	eventually(t, 5*time.Second, "cpu.cfs_quota_us restored", func() bool { return g.Read(t, "cpu", "cpu.cfs_quota_us") == quota0 })
	// The release is written to the cgroup before its event goes out: wait
	// for the event, so the outcome below is measured after it.
	eventually(t, 10*time.Second, "the release event", func() bool {
		for _, e := range log.get() {
			if e.Step != nil && e.Step.Action == ActionThrottleCPU+":release" {
				return true
			}
		}
		return false
	})
	eventually(t, 10*time.Second, "outcome measured", func() bool {
		x.Observe(later(smp.snap(t, g), 2*time.Minute))
		r, ok := lookup(j, "events")
		return ok && r.Done
	})
	rec := record(t, j, "events")
	eventually(t, 10*time.Second, "the outcome event", func() bool {
		evs := log.get()
		return len(evs) > 0 && evs[len(evs)-1].Type == EventOutcome
	})
	evs := log.get()
	got := describe(evs)
	want := []string{
		EventStarted,
		EventStep + " intent 0 throttle-cpu ",
		EventStep + " result 0 throttle-cpu applied",
		EventEnded,
		EventStep + " result 1 throttle-cpu:release released",
		EventOutcome + " " + rec.Outcome,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("events:\n got %q\nwant %q", got, want)
	}
	for _, e := range evs {
		if e.RecordID != rec.ID || e.Rule != "events" || e.Target.Path != g.Path() || e.Kind != journal.KindRemediation {
			t.Errorf("event %s about %s/%s/%s/%s, want record %s rule events target %s", e.Type, e.RecordID, e.Rule, e.Target.Path, e.Kind, rec.ID, g.Path())
		}
	}
	if !evs[len(evs)-1].Final {
		t.Errorf("last outcome event not Final")
	}
	if d := x.EventsDropped()["stuck"]; d < uint64(len(want)-2) {
		t.Errorf("stuck subscriber dropped %d events, want >= %d (queue of 1, one in its hands)", d, len(want)-2)
	}
	if d := x.EventsDropped()["test"]; d != 0 {
		t.Errorf("test subscriber dropped %d events", d)
	}
}

// TestV1KernelReportJoinsCounterMiss: a real OOM kill seen first in the
// cgroup's counter and then in the kernel log makes one miss record, which
// gets the kernel's report, and one oom_miss event that carries it.
func TestV1KernelReportJoinsCounterMiss(t *testing.T) {
	requireV1(t)
	g := cgtest.New(t, "memory")
	g.Write(t, "memory", "memory.limit_in_bytes", "32M")
	j := openJournal(t)
	x := newExecutor(t, Config{Safety: acting(g), Resolver: locate(g)}, j, nil)
	x.SetKernelLog(true)
	var log eventLog
	x.Subscribe("test", 0, log.add)
	smp := newSampler()
	x.Observe(smp.snap(t, g))
	cmd := g.Allocator(cgtest.AllocSpec{TotalMiB: 100, StepMiB: 4})
	cgtest.Start(t, cmd)
	_ = cmd.Wait()
	x.Observe(smp.snap(t, g)) // the counter moved
	eventually(t, 5*time.Second, "miss journaled", func() bool {
		recs, _ := j.List(journal.Filter{Kind: journal.KindOOMMiss})
		return len(recs) == 1
	})
	if evs := log.get(); len(evs) != 0 {
		t.Fatalf("miss event sent before the kernel's report could join it: %q", describe(evs))
	}
	// The report as the kernel log reader delivers it.
	snap := smp.snap(t, g)
	snap.KernelOOMKills = []collectors.KernelOOMKill{{Time: time.Now(), Seq: 4242, CgroupPath: g.Path(), OOMMemcg: g.Path(),
		Constraint: "CONSTRAINT_MEMCG", PID: cmd.Process.Pid, Comm: "alloc", AnonRSSBytes: 31 << 20,
		Report: []string{"alloc invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
			fmt.Sprintf("Memory cgroup out of memory: Killed process %d (alloc)", cmd.Process.Pid)}}}
	x.Observe(snap)
	x.Observe(snap) // delivered twice (a restart re-reading): no duplicate
	eventually(t, 5*time.Second, "the oom_miss event", func() bool { return len(log.get()) == 1 })
	recs, err := j.List(journal.Filter{Kind: journal.KindOOMMiss})
	if err != nil || len(recs) != 1 {
		t.Fatalf("miss records = %d (%v), want 1", len(recs), err)
	}
	r := recs[0]
	if len(r.Evidence.KernelOOMKills) != 1 || r.Evidence.KernelOOMKills[0].PID != cmd.Process.Pid || r.Measurements[0].OOMKillsSince < 1 {
		t.Errorf("miss record kernel evidence %+v, kills %d; want the one report of pid %d", r.Evidence.KernelOOMKills, r.Measurements[0].OOMKillsSince, cmd.Process.Pid)
	}
	ev := log.get()[0]
	if ev.Type != EventOOMMiss || ev.RecordID != r.ID || len(ev.KernelOOMKills) != 1 || ev.Target.Path != g.Path() {
		t.Errorf("event %q about %s with %d kernel reports, want oom_miss about %s with 1", ev.Type, ev.RecordID, len(ev.KernelOOMKills), r.ID)
	}
}

// BenchmarkEventEmit is what a ladder pays per event with three
// subscribers (webhooks, forward, tracing) draining their queues.
func BenchmarkEventEmit(b *testing.B) {
	bus := newEventBus()
	x := &Executor{events: bus}
	for _, n := range []string{"webhooks", "forward", "tracing"} {
		x.Subscribe(n, 0, func(Event) {})
	}
	rec := &journal.Record{ID: "r", Kind: journal.KindRemediation, Rule: "leak", Target: rules.Target{Kind: "cgroup", Path: "/a/b"},
		Evidence: journal.Evidence{Signals: map[string]float64{"working_set_bytes": 1, "seconds_to_limit": 2}},
		Steps:    []journal.Step{{Action: ActionThrottleMemory, Result: "applied"}}}
	b.ReportAllocs()
	for b.Loop() {
		bus.emit(stepEvent(rec, PhaseResult, 0))
	}
	b.StopTimer()
	bus.close()
}

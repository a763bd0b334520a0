package remediate

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/vigil-agent/vigil/collectors"
)

// ThrottleMemory is a feedback controller on v2 memory.high, in the spirit of
// senpai: every interval it measures the target's memory stall time and
//
//   - steps memory.high down (toward the working set) while the share of
//     time some task stalled stays under psi_target,
//   - backs off (raises it) when stalls exceed psi_target,
//   - never goes below the floor: working set × (1 + margin), and min_bytes,
//   - never above the ceiling: memory.max less max_margin (so the target is
//     throttled before the kernel OOM-kills it) and the original memory.high.
//
// The original memory.high is restored on Release (the condition cleared,
// the ladder escalated past it, or max_duration passed). A watchdog releases
// at once when memory.pressure full avg10 stays at or above livelock_full
// for livelock_for: a task throttled with nothing left to reclaim can stall
// forever (the KEP-2570 caveat), and then the kernel's OOM killer is the
// better outcome.
//
// Params: interval (1s), psi_target (percent of the interval, 0.2), step
// (0.02), backoff (0.05), margin (0.05), min_bytes (32Mi), max_margin
// (fraction of memory.max, 0.1, at least 16 MiB), livelock_full (90),
// livelock_for (30s), max_duration (10m).
type ThrottleMemory struct {
	mu    sync.Mutex
	loops map[string]*throttleLoop // by remediation id
	wg    sync.WaitGroup
	// notify reports what a controller loop did on its own (watchdog,
	// expiry) for the journal.
	notify func(remediationID, detail string)
}

var (
	_ Action   = (*ThrottleMemory)(nil)
	_ Releaser = (*ThrottleMemory)(nil)
)

type throttleParams struct {
	interval, livelockFor, maxDuration        time.Duration
	psiTarget, step, backoff, margin, maxMarg float64
	livelockFull                              float64
	minBytes                                  uint64
}

func parseThrottleParams(m map[string]any) (throttleParams, error) {
	p := params(m)
	var tp throttleParams
	if err := p.known("interval", "psi_target", "step", "backoff", "margin", "min_bytes", "max_margin", "livelock_full", "livelock_for", "max_duration"); err != nil {
		return tp, err
	}
	var err error
	for _, f := range []struct {
		key string
		dst *float64
		def float64
		lo  float64
		hi  float64
	}{
		{"psi_target", &tp.psiTarget, 0.2, 0.001, 100},
		{"step", &tp.step, 0.02, 0.001, 0.5},
		{"backoff", &tp.backoff, 0.05, 0.001, 1},
		{"margin", &tp.margin, 0.05, 0, 1},
		{"max_margin", &tp.maxMarg, 0.1, 0, 0.9},
		{"livelock_full", &tp.livelockFull, 90, 1, 100},
	} {
		if *f.dst, err = p.float(f.key, f.def); err != nil {
			return tp, err
		}
		if *f.dst < f.lo || *f.dst > f.hi {
			return tp, fmt.Errorf("%s: want %v..%v, got %v", f.key, f.lo, f.hi, *f.dst)
		}
	}
	if tp.interval, err = p.duration("interval", time.Second); err != nil {
		return tp, err
	}
	if tp.interval < 100*time.Millisecond {
		return tp, fmt.Errorf("interval: want at least 100ms, got %s", tp.interval)
	}
	if tp.livelockFor, err = p.duration("livelock_for", 30*time.Second); err != nil {
		return tp, err
	}
	if tp.maxDuration, err = p.duration("max_duration", 10*time.Minute); err != nil {
		return tp, err
	}
	if tp.minBytes, err = p.bytes("min_bytes", 32<<20); err != nil {
		return tp, err
	}
	return tp, nil
}

func validateThrottleMemory(m map[string]any) error {
	_, err := parseThrottleParams(m)
	return err
}

func init() { RegisterValidator(ActionThrottleMemory, validateThrottleMemory) }

// NewThrottleMemory returns the action; notify (may be nil) hears what its
// controller loops do on their own.
func NewThrottleMemory(notify func(remediationID, detail string)) *ThrottleMemory {
	return &ThrottleMemory{loops: map[string]*throttleLoop{}, notify: notify}
}

func (*ThrottleMemory) Name() string { return ActionThrottleMemory }

// bounds computes the floor and ceiling of memory.high for m.
func (tp throttleParams) bounds(m MemoryState, originalHigh uint64) (floor, ceiling uint64) {
	floor = max(tp.minBytes, uint64(float64(m.WorkingSet())*(1+tp.margin)))
	ceiling = originalHigh
	if m.MaxBytes != collectors.Unlimited {
		gap := max(uint64(float64(m.MaxBytes)*tp.maxMarg), 16<<20)
		if gap < m.MaxBytes {
			ceiling = min(ceiling, m.MaxBytes-gap)
		} else {
			ceiling = min(ceiling, m.MaxBytes/2)
		}
	}
	if ceiling == collectors.Unlimited {
		// Nothing bounds the target: start from what it uses now.
		ceiling = max(m.UsageBytes, floor)
	}
	return floor, ceiling
}

// next is one controller step: pressure is the share (percent) of the last
// interval some task stalled on memory.
func (tp throttleParams) next(high uint64, pressure float64, floor, ceiling uint64) uint64 {
	var v float64
	if pressure < tp.psiTarget {
		v = float64(high) * (1 - tp.step*(1-pressure/tp.psiTarget))
	} else {
		v = float64(high) * (1 + tp.backoff)
	}
	out := uint64(v) &^ 4095
	out = max(out, floor)
	out = min(out, ceiling)
	return out
}

func (t *ThrottleMemory) Do(_ context.Context, req Request) (Result, error) {
	if err := needCgroup(req, ActionThrottleMemory); err != nil {
		return Result{}, err
	}
	tp, err := parseThrottleParams(req.Params)
	if err != nil {
		return Result{}, err
	}
	origText, err := req.Cgroup.Get(KnobMemoryHigh)
	if err != nil {
		return Result{}, err // ErrUnsupported on v1: the ladder moves on
	}
	orig, err := parseLimit(origText)
	if err != nil {
		return Result{}, fmt.Errorf("memory.high %q: %w", origText, err)
	}
	m, err := req.Cgroup.Memory()
	if err != nil {
		return Result{}, fmt.Errorf("throttle-memory: %w", err)
	}
	floor, ceiling := tp.bounds(m, orig)
	high := min(max(m.UsageBytes, floor), ceiling)
	detail := fmt.Sprintf("memory.high %s -> %s (working set %s, floor %s, ceiling %s)",
		origText, humanBytes(high), humanBytes(m.WorkingSet()), humanBytes(floor), humanBytes(ceiling))
	if req.DryRun {
		return Result{Detail: "would set " + detail}, nil
	}
	t.mu.Lock()
	_, running := t.loops[req.RemediationID]
	t.mu.Unlock()
	if running {
		return Result{Detail: "already throttling"}, nil
	}
	if _, err := req.Limits.Set(req.RemediationID, req.Cgroup, KnobMemoryHigh, strconv.FormatUint(high, 10)); err != nil {
		return Result{}, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &throttleLoop{req: req, tp: tp, orig: orig, high: high, cancel: cancel, done: make(chan struct{})}
	t.mu.Lock()
	t.loops[req.RemediationID] = l
	t.mu.Unlock()
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		defer close(l.done)
		if reason := l.run(ctx); reason != "" {
			// The loop ended on its own: restore and tell the journal.
			t.mu.Lock()
			delete(t.loops, req.RemediationID)
			t.mu.Unlock()
			msg := reason
			if o, err := req.Limits.Restore(req.Cgroup, KnobMemoryHigh); err != nil {
				msg += "; restore failed: " + err.Error()
			} else {
				msg += "; memory.high restored to " + o
			}
			req.Log.Warn("throttle-memory released on its own", "reason", msg)
			if t.notify != nil {
				t.notify(req.RemediationID, msg)
			}
		}
	}()
	return Result{Detail: detail}, nil
}

// Release stops the controller and restores the original memory.high.
func (t *ThrottleMemory) Release(_ context.Context, req Request) (string, error) {
	t.mu.Lock()
	l := t.loops[req.RemediationID]
	delete(t.loops, req.RemediationID)
	t.mu.Unlock()
	if l != nil {
		l.cancel()
		<-l.done
	}
	if req.Cgroup == nil || !req.Limits.Held(req.Cgroup, KnobMemoryHigh) {
		return "", nil
	}
	o, err := req.Limits.Restore(req.Cgroup, KnobMemoryHigh)
	if err != nil {
		return "", err
	}
	return "memory.high restored to " + o, nil
}

// Close stops every controller loop without restoring (the Executor releases
// first; what is left is restored from the journal at the next start).
func (t *ThrottleMemory) Close() {
	t.mu.Lock()
	for id, l := range t.loops {
		l.cancel()
		delete(t.loops, id)
	}
	t.mu.Unlock()
	t.wg.Wait()
}

type throttleLoop struct {
	req    Request
	tp     throttleParams
	orig   uint64
	high   uint64
	cancel context.CancelFunc
	done   chan struct{}
}

// run adjusts memory.high until ctx ends (returns "") or it must release on
// its own (returns why).
func (l *throttleLoop) run(ctx context.Context) string {
	tick := time.NewTicker(l.tp.interval)
	defer tick.Stop()
	start := time.Now()
	var lastSome uint64
	var lastAt time.Time
	var fullSince time.Time
	if p, err := l.req.Cgroup.Pressure(); err == nil {
		lastSome, lastAt = p.Some.Total, time.Now()
	}
	for {
		select {
		case <-ctx.Done():
			return ""
		case <-tick.C:
		}
		if !l.req.Cgroup.Exists() {
			return "target gone"
		}
		if time.Since(start) > l.tp.maxDuration {
			return fmt.Sprintf("max_duration %s reached", l.tp.maxDuration)
		}
		p, err := l.req.Cgroup.Pressure()
		if err != nil {
			continue
		}
		now := time.Now()
		pressure := 0.0
		if el := now.Sub(lastAt); el > 0 && p.Some.Total >= lastSome {
			pressure = float64(p.Some.Total-lastSome) / float64(el.Microseconds()) * 100
		}
		lastSome, lastAt = p.Some.Total, now
		if p.Full.Avg10 >= l.tp.livelockFull {
			if fullSince.IsZero() {
				fullSince = now
			}
			if now.Sub(fullSince) >= l.tp.livelockFor {
				return fmt.Sprintf("watchdog: memory.pressure full avg10 %.0f%% for %s (livelock)", p.Full.Avg10, now.Sub(fullSince).Round(time.Second))
			}
		} else {
			fullSince = time.Time{}
		}
		m, err := l.req.Cgroup.Memory()
		if err != nil {
			continue
		}
		floor, ceiling := l.tp.bounds(m, l.orig)
		next := l.tp.next(l.high, pressure, floor, ceiling)
		if next != l.high {
			if err := l.req.Cgroup.Set(KnobMemoryHigh, strconv.FormatUint(next, 10)); err != nil {
				l.req.Log.Warn("throttle-memory: set memory.high", "target", l.req.Target.Key(), "err", err)
				continue
			}
			l.high = next
		}
	}
}

package remediate

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/remediate/journal"
	"github.com/vigil-agent/vigil/rules"
)

// Observe feeds the Executor a fresh snapshot: it keeps each cgroup's recent
// samples (evidence for later decisions), evaluates the verify condition of
// every ladder step waiting on one, measures outcomes that are due, and
// journals kernel OOM kills no remediation covered (misses). snap is not
// kept: what is needed is copied.
func (x *Executor) Observe(snap *collectors.Snapshot) {
	now := snap.Time
	if now.IsZero() {
		now = time.Now()
	}
	var hits []oomHit
	x.mu.Lock()
	for i := range snap.Cgroups {
		c := &snap.Cgroups[i]
		seen := x.cgroups[c.Path]
		if seen == nil {
			seen = &cgroupSeen{ring: make([]journal.Sample, 0, x.cfg.History)}
			x.cgroups[c.Path] = seen
		} else if c.Events.OOMKill > seen.latest.Events.OOMKill {
			hits = append(hits, oomHit{c.Path, c.Events.OOMKill - seen.latest.Events.OOMKill})
		}
		seen.latest = *c
		seen.latest.Identity.Labels, seen.latest.Identity.Annotations = nil, nil
		seen.seenSeq = snap.Seq
		smp := sampleOf(now, c)
		if len(seen.ring) < cap(seen.ring) {
			seen.ring = append(seen.ring, smp)
		} else {
			seen.ring[seen.pos] = smp
			seen.pos = (seen.pos + 1) % len(seen.ring)
		}
	}
	if !snap.Partial {
		for p, c := range x.cgroups {
			if c.seenSeq+3 < snap.Seq {
				delete(x.cgroups, p)
			}
		}
	}
	// Verify conditions of ladders waiting on a step; refresh their samples.
	var verifyLadders []*ladder
	for _, l := range x.ladders {
		if c := x.cgroups[l.finding.Target.Path]; c != nil && c.seenSeq == snap.Seq {
			s := c.latest
			l.latest = &s
		}
		if l.running && l.cur != nil && l.cur.Verify != nil && x.verify != nil {
			verifyLadders = append(verifyLadders, l)
		}
		if l.holding && now.Sub(l.holdSince) > x.cfg.HoldMax {
			l.holding = false
			x.wg.Add(1)
			go func(l *ladder) {
				defer x.wg.Done()
				x.releaseHeld(l, fmt.Sprintf("held for %s", x.cfg.HoldMax))
				x.mu.Lock()
				delete(x.ladders, l.key)
				x.mu.Unlock()
			}(l)
		}
	}
	conds := make([]*rules.Condition, len(verifyLadders))
	for i, l := range verifyLadders {
		conds[i] = l.cur.Verify
	}
	x.mu.Unlock()
	for i, l := range verifyLadders {
		ok, _, err := x.verify.Verify(conds[i], snap, l.finding.Target)
		if err != nil {
			x.log.Debug("verify", "remediation_id", l.id, "err", err)
			continue
		}
		x.mu.Lock()
		if l.cur != nil && l.cur.Verify == conds[i] {
			l.verifyOK = ok
			if ok && !l.verifySig {
				l.verifySig = true
				l.verified <- struct{}{}
			}
		}
		x.mu.Unlock()
	}
	x.measure(snap, now)
	x.misses(hits, snap.KernelOOMKills, now)
}

// measure records outcomes that are due.
func (x *Executor) measure(snap *collectors.Snapshot, now time.Time) {
	type due struct {
		tr      *tracked
		present bool
		sample  collectors.CgroupSample
	}
	var work []due
	x.mu.Lock()
	for id, tr := range x.tracked {
		c := x.cgroups[tr.path]
		present := c != nil && c.seenSeq == snap.Seq
		if present && c.latest.Events.OOMKill > tr.lastOOM {
			tr.lastOOM = c.latest.Events.OOMKill
		}
		if snap.Partial && !present {
			continue
		}
		if tr.next >= len(x.cfg.Measure) || now.Sub(tr.start) < x.cfg.Measure[tr.next] {
			continue
		}
		d := due{tr: tr, present: present}
		if present {
			d.sample = c.latest
		}
		work = append(work, d)
		tr.next++
		if tr.next >= len(x.cfg.Measure) {
			delete(x.tracked, id)
		}
	}
	x.mu.Unlock()
	for _, d := range work {
		x.wg.Add(1)
		go func(d due) {
			defer x.wg.Done()
			x.recordMeasurement(d.tr, d.present, &d.sample, now)
		}(d)
	}
}

func (x *Executor) recordMeasurement(tr *tracked, present bool, c *collectors.CgroupSample, now time.Time) {
	x.mu.Lock()
	l := tr.ladder
	terminated, verified, cleared := false, false, false
	if l != nil {
		terminated, cleared = l.terminated, l.isResolved
	}
	x.mu.Unlock()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	rec := tr.rec
	m := journal.Measurement{After: now.Sub(tr.start).Round(time.Second), Time: now, Present: present,
		OOMKillsSince: tr.lastOOM - tr.oomBase}
	if present {
		m.Sample = sampleOf(now, c)
	}
	applied := false
	for _, s := range rec.Steps {
		verified = verified || s.Verified
		applied = applied || s.Result == "applied"
	}
	switch {
	case m.OOMKillsSince > 0:
		m.Outcome = journal.OutcomeOOMKilled
	case rec.Kind == journal.KindShadow:
		m.Outcome = journal.OutcomeShadow
	case rec.Kind == journal.KindRefusal:
		m.Outcome = journal.OutcomeRefused
	case terminated:
		m.Outcome = journal.OutcomeTerminated
	case !applied && rec.DryRun:
		m.Outcome = journal.OutcomeDryRun
	case !applied && len(rec.Steps) > 0 && rec.Steps[len(rec.Steps)-1].Result == "refused":
		m.Outcome = journal.OutcomeRefused
	case !applied:
		m.Outcome = journal.OutcomeFailed
	case !present:
		m.Outcome = journal.OutcomeTargetGone
	case tr.predict:
		m.Outcome = journal.OutcomeOOMAvoided
	case verified || cleared || c.Derived.GrowthBytesPerSecond < tr.growth0/2 || tr.psi0 > 0 && c.Pressure.Some.Avg10 < tr.psi0/2:
		m.Outcome = journal.OutcomeRecovered
	default:
		m.Outcome = journal.OutcomeNoEffect
	}
	rec.Measurements = append(rec.Measurements, m)
	rec.Outcome = m.Outcome
	rec.Done = len(rec.Measurements) >= len(x.cfg.Measure)
	if rec.Done {
		x.metrics.outcomes.WithLabelValues(rec.Outcome).Inc()
	}
	x.put(tr)
	if rec.Kind == journal.KindRemediation && x.events.has() {
		ev := recordEvent(EventOutcome, rec)
		ev.Final = rec.Done
		x.events.emit(ev)
	}
	x.log.Info("remediation outcome", "remediation_id", rec.ID, "target", rec.Target.Key(), "after", m.After, "outcome", m.Outcome)
}

// recover restores the limits a previous run applied and did not restore
// (it was killed, or the node rebooted mid-remediation), journaling each.
func (x *Executor) recover() error {
	applied, err := x.j.Applied()
	if err != nil {
		return err
	}
	for _, a := range applied {
		rec := &journal.Record{ID: uuid.NewString(), Node: x.cfg.Node, Kind: journal.KindRecovery, Time: time.Now(),
			Target: rules.Target{Kind: "cgroup", Path: a.Target}, Done: true, Outcome: journal.OutcomeRestored,
			Decision: fmt.Sprintf("start-up: %s on %s was left at %s by remediation %s; restoring %s", a.Knob, a.Target, a.Applied, a.RemediationID, a.Original)}
		step := journal.Step{Action: "restore", Intent: time.Now(), Params: map[string]any{"knob": a.Knob, "original": a.Original, "applied": a.Applied}}
		cg, err := OpenCgroup(a.Cgroup)
		switch {
		case err != nil:
		case !cg.Exists():
			step.Detail = "cgroup gone: nothing to restore"
		default:
			err = cg.Set(Knob(a.Knob), a.Original)
			step.Detail = fmt.Sprintf("%s %s -> %s", a.Knob, a.Applied, a.Original)
		}
		step.Finished, step.Result = time.Now(), "applied"
		if err != nil {
			step.Result, step.Error = "error", err.Error()
			rec.Outcome = journal.OutcomeFailed
			rec.Errors = []string{err.Error()}
		}
		rec.Steps = []journal.Step{step}
		if perr := x.j.Put(rec); perr != nil {
			return perr
		}
		if err == nil {
			if err := x.j.DeleteApplied(a.Key); err != nil {
				return err
			}
		}
		x.log.Warn("restored a limit left by a previous run", "remediation_id", a.RemediationID, "target", a.Target, "knob", a.Knob, "original", a.Original, "err", err)
	}
	return nil
}

// Run does the Executor's housekeeping (journal retention) until ctx ends.
func (x *Executor) Run(ctx context.Context) error {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		if n, err := x.j.Prune(time.Now()); err != nil {
			x.log.Error("journal prune", "err", err)
		} else if n > 0 {
			x.log.Info("journal pruned", "records", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-x.ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Close stops the ladders, releases every limit they hold (restoring the
// originals) and waits for pending journal writes. What Close cannot
// release is restored by the next start.
func (x *Executor) Close() error {
	x.cancel()
	x.mu.Lock()
	ladders := make([]*ladder, 0, len(x.ladders))
	for _, l := range x.ladders {
		ladders = append(ladders, l)
	}
	x.mu.Unlock()
	x.wg.Wait()
	for _, l := range ladders {
		x.releaseHeld(l, "vigil stopping")
	}
	x.throttle.Close()
	x.events.close()
	return nil
}

// PauseHandler serves the operator's pause switch:
//
//	POST /api/v1/pause    pause remediation
//	POST /api/v1/resume   resume
//	GET  /api/v1/pause    {"paused": bool}
//
// POSTs need "Authorization: Bearer <token>"; with an empty token they are
// always refused.
func (x *Executor) PauseHandler(token string) http.Handler {
	mux := http.NewServeMux()
	auth := func(r *http.Request) bool {
		got := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		return token != "" && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
	}
	status := func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]bool{"paused": x.Paused()})
	}
	mux.HandleFunc("GET /api/v1/pause", func(w http.ResponseWriter, r *http.Request) { status(w) })
	for path, fn := range map[string]func(){"/api/v1/pause": x.Pause, "/api/v1/resume": x.Resume} {
		mux.HandleFunc("POST "+path, func(w http.ResponseWriter, r *http.Request) {
			if !auth(r) {
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			fn()
			status(w)
		})
	}
	return mux
}

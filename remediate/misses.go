package remediate

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/remediate/journal"
	"github.com/vigil-agent/vigil/rules"
)

const (
	// missWindow: OOM kills in one cgroup this close together (seen in its
	// counters or in the kernel log, in either order) make one miss record.
	missWindow = 30 * time.Second
	// missEventWait is how long a miss seen only in the counters waits for
	// the kernel log's report before its event goes out without it.
	missEventWait = 5 * time.Second
)

// oomHit is a cgroup whose OOM kill counter moved since the previous tick.
type oomHit struct {
	path  string
	delta uint64
}

// missed is a recent OOM miss record of one cgroup.
type missed struct {
	tr      *tracked
	created time.Time
	last    time.Time
	counted uint64 // kills seen in the cgroup's counters
	emitted bool
}

// SetKernelLog tells the Executor whether kernel OOM reports arrive in
// snapshots (Snapshot.KernelOOMKills): then the event of a miss seen first
// in a cgroup's counters waits briefly for the report, so that it carries it.
func (x *Executor) SetKernelLog(on bool) {
	x.mu.Lock()
	x.kernelLog = on
	x.mu.Unlock()
}

// misses journals kernel OOM kills that no tracked record covers: cgroups
// whose OOM kill counter moved (hits) and kills read from the kernel log
// (kills). Both views of one kill make one record: a kill of the kernel log
// adds its report to the record of its cgroup's recent miss (or to the
// remediation covering the cgroup) instead of making another. v2
// memory.events counts a kill in every ancestor: only the deepest cgroups
// that moved are recorded.
func (x *Executor) misses(hits []oomHit, kills []collectors.KernelOOMKill, now time.Time) {
	if len(hits) == 0 && len(kills) == 0 && !x.missesPending() {
		return
	}
	// Decide under x.mu; change the records under their own locks after
	// (a ladder holds its record's lock while it takes x.mu).
	type change struct {
		tr      *tracked
		kill    *collectors.KernelOOMKill
		miss    *missed
		counted uint64
	}
	var (
		changes []change
		emit    []*missed
	)
	x.mu.Lock()
	for p, m := range x.missed {
		if !m.emitted && now.Sub(m.created) >= missEventWait {
			m.emitted = true
			emit = append(emit, m)
		}
		if now.Sub(m.last) > missWindow {
			delete(x.missed, p)
		}
	}
	sort.Slice(hits, func(a, b int) bool { return hits[a].path < hits[b].path })
	for i, h := range hits {
		if i+1 < len(hits) && strings.HasPrefix(hits[i+1].path, strings.TrimSuffix(h.path, "/")+"/") {
			continue // an ancestor of a cgroup that moved too
		}
		if x.coveringLocked(h.path) != nil {
			continue
		}
		m := x.missed[h.path]
		if m == nil {
			m = x.newMiss(h.path, now)
			if !x.kernelLog {
				m.emitted = true
				emit = append(emit, m)
			}
		}
		m.counted += h.delta
		m.last = now
		changes = append(changes, change{tr: m.tr, miss: m, counted: m.counted})
	}
	for i := range kills {
		k := kills[i]
		k.Report = append([]string(nil), k.Report...)
		path := k.CgroupPath
		if path == "" {
			path = "/"
		}
		if tr := x.coveringLocked(path); tr != nil {
			changes = append(changes, change{tr: tr, kill: &k})
			continue
		}
		m := x.missed[path]
		if m == nil {
			m = x.newMiss(path, now)
		}
		m.last = now
		changes = append(changes, change{tr: m.tr, kill: &k, miss: m, counted: m.counted})
		if !m.emitted {
			m.emitted = true
			emit = append(emit, m)
		}
	}
	x.mu.Unlock()
	var puts []*tracked
	seen := map[*tracked]bool{}
	for _, c := range changes {
		c.tr.mu.Lock()
		if c.kill != nil {
			c.tr.rec.Evidence.KernelOOMKills = appendKill(c.tr.rec.Evidence.KernelOOMKills, *c.kill)
		}
		if c.miss != nil {
			countMiss(c.tr.rec, c.counted)
		}
		c.tr.mu.Unlock()
		if !seen[c.tr] {
			seen[c.tr] = true
			puts = append(puts, c.tr)
		}
	}
	// An event goes out once its record is written, so that a consumer
	// reading the journal finds it.
	evs := map[*tracked][]Event{}
	for _, m := range emit {
		m.tr.mu.Lock()
		ev := recordEvent(EventOOMMiss, m.tr.rec)
		ev.Final = true
		ev.OOMKills = m.tr.rec.Measurements[0].OOMKillsSince
		ev.KernelOOMKills = append([]collectors.KernelOOMKill(nil), m.tr.rec.Evidence.KernelOOMKills...)
		m.tr.mu.Unlock()
		if !seen[m.tr] {
			seen[m.tr] = true
			puts = append(puts, m.tr)
		}
		evs[m.tr] = append(evs[m.tr], ev)
	}
	for _, tr := range puts {
		x.wg.Add(1)
		go func(tr *tracked, evs []Event) {
			defer x.wg.Done()
			tr.mu.Lock()
			x.put(tr)
			tr.mu.Unlock()
			for _, ev := range evs {
				x.events.emit(ev)
			}
		}(tr, evs[tr])
	}
}

// missesPending reports whether a miss still waits for its event.
func (x *Executor) missesPending() bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.missed) > 0
}

// coveringLocked returns the tracked record (a remediation, a refusal or a
// shadow finding being measured) of path, or nil. x.mu is held.
func (x *Executor) coveringLocked(path string) *tracked {
	for _, tr := range x.tracked {
		if tr.path == path {
			return tr
		}
	}
	return nil
}

// newMiss makes the miss record of path. x.mu is held.
func (x *Executor) newMiss(path string, now time.Time) *missed {
	target := rules.Target{Kind: "cgroup", Path: path}
	var samples []journal.Sample
	m := journal.Measurement{Time: now, Outcome: journal.OutcomeOOMKilled}
	if c := x.cgroups[path]; c != nil {
		target.Identity = c.latest.Identity
		samples = c.samples()
		m.Present, m.Sample = true, sampleOf(now, &c.latest)
	}
	rec := &journal.Record{ID: uuid.NewString(), Node: x.cfg.Node, Kind: journal.KindOOMMiss, Time: now, Target: target,
		Evidence: journal.Evidence{Samples: samples}, Outcome: journal.OutcomeOOMKilled, Done: true,
		Measurements: []journal.Measurement{m}}
	ms := &missed{tr: &tracked{rec: rec, path: path}, created: now, last: now}
	x.missed[path] = ms
	x.metrics.outcomes.WithLabelValues(journal.OutcomeOOMKilled).Inc()
	x.log.Warn("kernel OOM kill not prevented", "remediation_id", rec.ID, "target", target.Key())
	return ms
}

// countMiss updates a miss record's count and decision from its counters
// and kernel reports. The record's lock is held.
func countMiss(rec *journal.Record, counted uint64) {
	n := counted
	if k := uint64(len(rec.Evidence.KernelOOMKills)); k > n {
		n = k
	}
	rec.Measurements[0].OOMKillsSince = n
	rec.Decision = fmt.Sprintf("kernel OOM-killed %d process(es) in %s; no remediation covered it", n, rec.Target.Path)
	if ks := rec.Evidence.KernelOOMKills; len(ks) > 0 {
		var who []string
		for _, k := range ks {
			who = append(who, fmt.Sprintf("%s (pid %d, anon-rss %s, %s)", k.Comm, k.PID, humanBytes(k.AnonRSSBytes), k.Constraint))
		}
		rec.Decision += ": " + strings.Join(who, ", ")
	}
}

// appendKill adds k unless a kill of the same kernel log record is there.
func appendKill(ks []collectors.KernelOOMKill, k collectors.KernelOOMKill) []collectors.KernelOOMKill {
	for _, o := range ks {
		if o.Seq == k.Seq && o.PID == k.PID {
			return ks
		}
	}
	return append(ks, k)
}

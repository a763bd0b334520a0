package remediate

import (
	"errors"
	"fmt"
	"time"

	"github.com/vigil-agent/vigil/remediate/journal"
)

// Limits is the one door through which actions change a cgroup setting they
// will later restore. The original value is written to the journal (and
// fsync'd) before the first write, so that a vigil killed at any moment
// restores it on its next start (Executor.Recover).
type Limits struct {
	j   *journal.Journal
	now func() time.Time
	// intent, when set, is called with the first limit instead of
	// PutApplied: it writes the step's intent and the limit in one
	// transaction (the Executor's fast path for limit-only actions).
	intent func(a *journal.AppliedLimit) error
}

// withIntent returns a view of l whose first recorded limit is written
// together with the step's intent by flush.
func (l *Limits) withIntent(flush func(a *journal.AppliedLimit) error) *Limits {
	return &Limits{j: l.j, now: l.now, intent: flush}
}

func limitKey(loc Location, k Knob) string {
	p, ok := loc.Paths[""]
	if !ok {
		p = loc.Paths["memory"]
	}
	return p + "|" + string(k)
}

// Set records the original of k (first time only) and writes value. It
// returns the original.
func (l *Limits) Set(remediationID string, cg Cgroup, k Knob, value string) (string, error) {
	key := limitKey(cg.Location(), k)
	a, err := l.j.GetApplied(key)
	if errors.Is(err, journal.ErrNotFound) {
		orig, gerr := cg.Get(k)
		if gerr != nil {
			return "", gerr
		}
		a = journal.AppliedLimit{Key: key, RemediationID: remediationID, Target: cg.Location().Paths[""] + cg.Location().Paths["memory"],
			Cgroup: cg.Location(), Knob: string(k), Original: orig, Applied: value, Time: l.now()}
		if l.intent != nil {
			flush := l.intent
			l.intent = nil
			if err := flush(&a); err != nil {
				return "", err
			}
		} else if err := l.j.PutApplied(a); err != nil {
			return "", err
		}
	} else if err != nil {
		return "", err
	}
	if err := cg.Set(k, value); err != nil {
		return a.Original, err
	}
	return a.Original, nil
}

// Held reports whether vigil holds k on cg (set and not restored).
func (l *Limits) Held(cg Cgroup, k Knob) bool {
	_, err := l.j.GetApplied(limitKey(cg.Location(), k))
	return err == nil
}

// Restore writes back the original of k and forgets it. A cgroup that is
// gone needs no restoring.
func (l *Limits) Restore(cg Cgroup, k Knob) (string, error) {
	key := limitKey(cg.Location(), k)
	a, err := l.j.GetApplied(key)
	if errors.Is(err, journal.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if cg.Exists() {
		if err := cg.Set(k, a.Original); err != nil {
			return "", fmt.Errorf("restore %s: %w", key, err)
		}
	}
	return a.Original, l.j.DeleteApplied(key)
}

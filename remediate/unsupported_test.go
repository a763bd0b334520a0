package remediate

import (
	"strings"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/rules"
	"github.com/vigil-agent/vigil/test/cgtest"
)

// TestV1LadderSkipsUnsupportedKnob: on cgroup v1 there is no memory.high,
// so throttle-memory is journaled as skipped with the reason and the
// ladder goes straight on to the next step, as for any skipped step; it
// neither counts as applied nor waits for a verify.
func TestV1LadderSkipsUnsupportedKnob(t *testing.T) {
	requireV1(t)
	g := cgtest.New(t, "memory", "cpu")
	cgtest.Start(t, g.Command("sleep", "600"))
	j := openJournal(t)
	x := newExecutor(t, Config{Safety: acting(g), Resolver: locate(g), Measure: []time.Duration{time.Minute}}, j, nil)
	x.Observe(newSampler().snap(t, g))
	x.Handle([]rules.Finding{finding("unsupported", g, rules.Firing,
		rules.ActionStep{Action: ActionThrottleMemory}, rules.ActionStep{Action: ActionThrottleCPU})})
	eventually(t, 5*time.Second, "throttle-cpu applied after the skipped throttle-memory", func() bool {
		return g.Read(t, "cpu", "cpu.cfs_quota_us") == "10000"
	})
	eventually(t, 5*time.Second, "both steps journaled", func() bool {
		r, ok := lookup(j, "unsupported")
		return ok && len(r.Steps) == 2 && r.Steps[1].Result != ""
	})
	r := record(t, j, "unsupported")
	if s := r.Steps[0]; s.Result != "skipped" || s.Error != "" || !strings.Contains(s.Detail, "not supported on this cgroup version") {
		t.Errorf("throttle-memory step = %+v, want skipped with the reason", s)
	}
	if s := r.Steps[1]; s.Result != "applied" {
		t.Errorf("throttle-cpu step = %+v, want applied", s)
	}
	if len(r.Errors) != 0 {
		t.Errorf("record errors %v, want none", r.Errors)
	}
}

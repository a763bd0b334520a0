package remediate

import (
	"testing"
	"time"

	"github.com/vigil-agent/vigil/remediate/journal"
	"github.com/vigil-agent/vigil/rules"
	"github.com/vigil-agent/vigil/test/cgtest"
	vmtest "github.com/vigil-agent/vigil/test/vm"
)

// TestProtectedDescendantRefusesAncestor: a workload group that holds a
// protected child is opted in; freezing or killing the group would freeze or
// kill the protected child too, so the ladder is refused with
// protected_descendant and nothing is written, while the same ladder on a
// sibling group without a protected child runs.
func TestProtectedDescendantRefusesAncestor(t *testing.T) { testProtectedDescendant(t) }

// TestV2ProtectedDescendantRefusesAncestor is the same on cgroup v2.
func TestV2ProtectedDescendantRefusesAncestor(t *testing.T) {
	vmtest.RequireGuest(t)
	testProtectedDescendant(t)
}

func testProtectedDescendant(t *testing.T) {
	ctrls := []string{"memory", "freezer"}
	if cgtest.Version() == 2 {
		ctrls = nil
	}
	holder := cgtest.New(t, ctrls...)
	critical := holder.Child(t, "critical")
	plain := cgtest.New(t, ctrls...)
	crit := critical.Command("sleep", "600")
	cgtest.Start(t, crit)
	cgtest.Start(t, plain.Command("sleep", "600"))

	s := acting(holder, plain)
	s.Protected = []string{critical.Path()}
	j := openJournal(t)
	x := newExecutor(t, Config{Safety: s, Resolver: locate(holder, plain), Measure: []time.Duration{time.Minute}}, j, nil)
	smp := newSampler()
	x.Observe(smp.snap(t, holder, plain))
	x.Handle([]rules.Finding{
		finding("holder", holder, rules.Firing, rules.ActionStep{Action: ActionFreeze}),
		finding("plain", plain, rules.Firing, rules.ActionStep{Action: ActionFreeze}),
	})
	eventually(t, 5*time.Second, "both journaled", func() bool {
		_, a := lookup(j, "holder")
		p, b := lookup(j, "plain")
		return a && b && len(p.Steps) == 1 && p.Steps[0].Result != ""
	})
	if r := record(t, j, "holder"); r.Kind != journal.KindRefusal || r.Reason != RefusedProtectedBelow || len(r.Steps) != 0 {
		t.Errorf("holder record: kind %s reason %q steps %+v, want a %s refusal without steps", r.Kind, r.Reason, r.Steps, RefusedProtectedBelow)
	}
	if r := record(t, j, "plain"); r.Kind != journal.KindRemediation || r.Steps[0].Result != "applied" {
		t.Errorf("plain record: kind %s steps %+v, want freeze applied", r.Kind, r.Steps)
	}
	if frozen(t, critical) || frozen(t, holder) {
		t.Errorf("the protected child or its holder is frozen")
	}
	if !frozen(t, plain) {
		t.Errorf("the plain group was not frozen")
	}
}

func frozen(t *testing.T, g *cgtest.Group) bool {
	t.Helper()
	if g.Version == 2 {
		return g.Read(t, "", "cgroup.freeze") == "1"
	}
	return g.Read(t, "freezer", "freezer.state") != "THAWED"
}

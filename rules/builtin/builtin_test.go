package builtin

import (
	"strings"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/remediate"
	"github.com/vigil-agent/vigil/rules"
	"github.com/vigil-agent/vigil/rules/ruletest"
)

// TestShippedRules loads every shipped rule file and runs its rule test: a
// rule that fails to compile, or stops catching its incident, fails CI.
func TestShippedRules(t *testing.T) {
	set, err := Load(rules.LoadOptions{})
	if err != nil {
		t.Fatalf("shipped rules do not load: %v", err)
	}
	tested := map[string]bool{}
	for _, name := range Tests() {
		t.Run(name, func(t *testing.T) {
			res, err := ruletest.RunFile(FS, name, rules.LoadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if res.Failed() {
				t.Errorf("\n%s", res)
			}
		})
		tested[strings.TrimSuffix(name, "_test.yaml")+".yaml"] = true
	}
	for file := range Files() {
		if !tested[strings.TrimPrefix(file, Prefix)] {
			t.Errorf("%s has no rule test", file)
		}
	}
	// Rules that act must be opt-in.
	for _, r := range set.Rules {
		if len(r.Actions) > 0 && !r.Selector.OptIn {
			t.Errorf("rule %s has actions but does not require opt-in", r.Name)
		}
	}
}

// kubernetesActions are registered by the Kubernetes integration when it is
// built in; remediate's own validators cover the rest.
var kubernetesActions = []string{"evict", "restart-container", "scale-out"}

// TestShippedRulesPassActionValidation loads the shipped rules with the
// remediation layer's parameter validators, as the agent does.
func TestShippedRulesPassActionValidation(t *testing.T) {
	validators := remediate.Validators()
	for _, name := range kubernetesActions {
		if _, ok := validators[name]; !ok {
			validators[name] = nil // name known, parameters unchecked here
		}
	}
	if _, err := Load(rules.LoadOptions{Actions: validators}); err != nil {
		t.Fatal(err)
	}
}

// TestShippedLaddersKeepFreezeShort checks the shape a freeze step needs in
// a shipped ladder: a frozen allocator stops growing, so a freeze must be a
// short pause with a headroom verify, and no thaw may come between it and
// the signal that ends the workload (thawing first lets the allocator run
// into the kernel OOM killer).
func TestShippedLaddersKeepFreezeShort(t *testing.T) {
	set, err := Load(rules.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	freezes := 0
	for _, r := range set.Rules {
		for i, st := range r.Actions {
			if st.Action != remediate.ActionFreeze {
				continue
			}
			freezes++
			if st.Timeout <= 0 || st.Timeout > 15*time.Second {
				t.Errorf("%s step %d freeze: timeout %s, want a short pause (0 < timeout <= 15s)", r.Name, i, st.Timeout)
			}
			if !strings.Contains(st.VerifyExpr, "limit_bytes <") {
				t.Errorf("%s step %d freeze: verify %q must ask for headroom under the limit", r.Name, i, st.VerifyExpr)
			}
			for _, next := range r.Actions[i+1:] {
				if next.Action == remediate.ActionThaw {
					t.Errorf("%s: thaw after freeze (step %d) before the workload is signalled", r.Name, i)
				}
				if next.Action == remediate.ActionSignal || next.Action == remediate.ActionKillCgroup {
					break
				}
			}
		}
	}
	if freezes == 0 {
		t.Fatal("no shipped ladder freezes: update this test")
	}
}

package k8s

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vigil-agent/vigil/remediate"
	"github.com/vigil-agent/vigil/remediate/journal"
	"github.com/vigil-agent/vigil/rules"
	"github.com/vigil-agent/vigil/test/k8snode"
)

// TestCordonNodeFinding runs node-level findings through the executor
// against a real API server: a cordon step cordons the Node object only
// when cordon is registered (kubernetes.cordon) and dry-run is off; a
// ladder without a node-scoped action is still refused (no cgroup), and the
// node's rate limit holds.
func TestCordonNodeFinding(t *testing.T) {
	api := k8snode.StartAPI(t)
	ctx := context.Background()
	tests := []struct {
		name       string
		cordon     bool // kubernetes.cordon: the action is registered
		dryRun     bool
		ladder     []string
		wantKind   string
		wantReason string // refusal reason
		wantStep   string // result of the cordon step
		wantCordon bool
	}{
		{"cordons the node", true, false, []string{ActionCordon}, journal.KindRemediation, "", "applied", true},
		{"dry-run leaves the node schedulable", true, true, []string{ActionCordon}, journal.KindRemediation, "", "dry_run", false},
		{"off by default: no action of the ladder", false, false, []string{ActionCordon}, journal.KindRefusal, remediate.RefusedUnknownAction, "", false},
		{"a cgroup action on the node is refused", true, false, []string{ActionRestartContainer}, journal.KindRefusal, remediate.RefusedNoCgroup, "", false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nodeName := fmt.Sprintf("node-cordon-%d", i)
			if _, err := api.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = api.Client.CoreV1().Nodes().Delete(context.Background(), nodeName, metav1.DeleteOptions{}) })
			j, err := journal.Open(filepath.Join(t.TempDir(), "journal.db"), journal.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { j.Close() })
			x, err := remediate.New(remediate.Config{Node: nodeName, Safety: remediate.SafetyConfig{DryRun: tt.dryRun,
				OptIn:     []string{"label:vigil.dev/remediate=true"},
				PerTarget: remediate.Rate{Every: time.Hour, Burst: 1}}}, j, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { x.Close() })
			newKube(t, api.Client, Config{NodeName: nodeName, EnableCordon: tt.cordon}).Register(x)

			steps := make([]rules.ActionStep, len(tt.ladder))
			for k, a := range tt.ladder {
				steps[k] = rules.ActionStep{Action: a}
			}
			f := rules.Finding{Rule: "node-memory-pressure", Severity: "critical", Mode: rules.Enforce, State: rules.Firing,
				Target: rules.Target{Kind: "node"}, Time: time.Now(), Since: time.Now(), Actions: steps}
			x.Handle([]rules.Finding{f})
			rec := waitRecord(t, j, func(r *journal.Record) bool {
				return r.Kind == journal.KindRefusal || len(r.Steps) > 0 && !r.Steps[0].Finished.IsZero()
			})
			if rec.Kind != tt.wantKind || rec.Reason != tt.wantReason {
				t.Errorf("record kind %s reason %q, want %s %q (%s)", rec.Kind, rec.Reason, tt.wantKind, tt.wantReason, rec.Decision)
			}
			if tt.wantStep != "" {
				if len(rec.Steps) != 1 || rec.Steps[0].Action != ActionCordon || rec.Steps[0].Result != tt.wantStep {
					t.Errorf("steps = %+v, want one cordon step %s", rec.Steps, tt.wantStep)
				}
			}
			n, err := api.Client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if n.Spec.Unschedulable != tt.wantCordon {
				t.Errorf("node unschedulable = %v, want %v", n.Spec.Unschedulable, tt.wantCordon)
			}
			if tt.wantKind != journal.KindRemediation {
				return
			}
			// The node is one target with its own rate limit (burst 1): a
			// second node-level remediation is refused.
			f.Rule = "node-memory-pressure-again"
			x.Handle([]rules.Finding{f})
			again := waitRecord(t, j, func(r *journal.Record) bool { return r.Finding != nil && r.Finding.Rule == f.Rule })
			if again.Kind != journal.KindRefusal || again.Reason != remediate.RefusedRateTarget {
				t.Errorf("second node remediation: kind %s reason %q, want a %s refusal", again.Kind, again.Reason, remediate.RefusedRateTarget)
			}
		})
	}
}

// waitRecord waits for a journal record that ok accepts.
func waitRecord(t *testing.T, j *journal.Journal, ok func(*journal.Record) bool) *journal.Record {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		recs, err := j.List(journal.Filter{Target: rules.NodeTarget, Limit: -1})
		if err != nil {
			t.Fatal(err)
		}
		for i := range recs {
			if ok(&recs[i]) {
				return &recs[i]
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no matching journal record for the node after 20s (%d records: %+v)", len(recs), recs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

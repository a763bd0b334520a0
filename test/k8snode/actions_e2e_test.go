package k8snode

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/remediate"
	k8sact "github.com/vigil-agent/vigil/remediate/k8s"
	"github.com/vigil-agent/vigil/rules"
)

func actionNamed(t *testing.T, k *k8sact.Kube, name string) remediate.Action {
	t.Helper()
	for _, a := range k.Actions() {
		if a.Name() == name {
			return a
		}
	}
	t.Fatalf("no action %s", name)
	return nil
}

func podRequest(p *corev1.Pod, id string) remediate.Request {
	return remediate.Request{RemediationID: id, Rule: "node-test",
		Target: rules.Target{Kind: "cgroup", Path: "/kubepods/pod" + string(p.UID),
			Identity: collectors.Identity{Kind: "pod", Namespace: p.Namespace, Pod: p.Name, PodUID: string(p.UID)}}}
}

// TestNodeScaleOutAndEvict (heavy, with controllers): two agents racing
// scale a real Deployment once and the new replica runs; eviction is
// refused (429) while the disruption controller's PDB allows nothing, and
// works once it does.
func TestNodeScaleOutAndEvict(t *testing.T) {
	RequireHeavy(t)
	n := StartNode(t, true)
	ctx := context.Background()
	n.Kubectl(t, "", "create", "namespace", "shop")
	n.Kubectl(t, "", "annotate", "namespace", "shop", "vigil.dev/remediate=true")
	labels := map[string]string{"app": "web"}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", Annotations: map[string]string{"vigil.dev/max-replicas": "2"}},
		Spec: appsv1.DeploymentSpec{Replicas: ptrInt32(1), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{HostNetwork: true, TerminationGracePeriodSeconds: ptrInt64(1),
					Containers: []corev1.Container{{Name: "app", Image: AppImage, ImagePullPolicy: corev1.PullNever, Args: []string{"sleep"}}}}}}}
	if _, err := n.Client.AppsV1().Deployments("shop").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	running := func(want int) ([]corev1.Pod, error) {
		pods, err := n.Client.CoreV1().Pods("shop").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return nil, err
		}
		var out []corev1.Pod
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
				out = append(out, p)
			}
		}
		if len(out) != want {
			return out, fmt.Errorf("%d running pods, want %d", len(out), want)
		}
		return out, nil
	}
	var pods []corev1.Pod
	if err := waitFor(90*time.Second, func() (err error) { pods, err = running(1); return err }); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		k, err := k8sact.New(n.Client, k8sact.Config{NodeName: fmt.Sprintf("agent-%d", i), ScaleCooldown: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		a := actionNamed(t, k, k8sact.ActionScaleOut)
		wg.Add(1)
		go func() { defer wg.Done(); _, errs[i] = a.Do(ctx, podRequest(&pods[0], fmt.Sprintf("rem-%d", i))) }()
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) {
		t.Fatalf("racing scale-outs: %v, want exactly one success", errs)
	}
	// The loser finds the other's Lease (cooldown) or, when the winner
	// was already done, the Deployment at its cap of 2: either way it does
	// not scale again.
	for _, err := range errs {
		if err != nil && !errors.Is(err, k8sact.ErrCooldown) && !errors.Is(err, k8sact.ErrAtCap) {
			t.Errorf("loser: %v, want ErrCooldown or ErrAtCap", err)
		}
	}
	if err := waitFor(90*time.Second, func() (err error) { pods, err = running(2); return err }); err != nil {
		t.Fatalf("new replica: %v", err)
	}
	t.Logf("scaled once: 2 replicas running (%s, %s)", pods[0].Name, pods[1].Name)

	// A PDB that tolerates no disruption, status from the real disruption controller.
	_, err := n.Client.PolicyV1().PodDisruptionBudgets("shop").Create(ctx, &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: ptrIntStr(intstr.FromInt32(2)), Selector: &metav1.LabelSelector{MatchLabels: labels}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := waitFor(60*time.Second, func() error {
		pdb, err := n.Client.PolicyV1().PodDisruptionBudgets("shop").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if pdb.Status.ObservedGeneration < pdb.Generation || pdb.Status.CurrentHealthy != 2 {
			return fmt.Errorf("pdb status %+v", pdb.Status)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	k, err := k8sact.New(n.Client, k8sact.Config{NodeName: NodeName})
	if err != nil {
		t.Fatal(err)
	}
	evict := actionNamed(t, k, k8sact.ActionEvict)
	if _, err := evict.Do(ctx, podRequest(&pods[0], "rem-evict-blocked")); !errors.Is(err, k8sact.ErrEvictionBlocked) {
		t.Fatalf("evict under the PDB: %v, want ErrEvictionBlocked", err)
	}
	n.Kubectl(t, "", "patch", "pdb", "web", "-n", "shop", "--type=merge", "-p", `{"spec":{"minAvailable":1}}`)
	if err := waitFor(60*time.Second, func() error {
		pdb, err := n.Client.PolicyV1().PodDisruptionBudgets("shop").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if pdb.Status.ObservedGeneration < pdb.Generation || pdb.Status.DisruptionsAllowed < 1 {
			return fmt.Errorf("pdb status %+v", pdb.Status)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := evict.Do(ctx, podRequest(&pods[0], "rem-evict")); err != nil {
		t.Fatalf("evict once the PDB allows one disruption: %v", err)
	}
	evs, err := n.Client.CoreV1().Events("shop").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + pods[0].Name + ",reason=VigilRemediation"})
	if err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, e := range evs.Items {
		msgs = append(msgs, e.Type+": "+e.Message)
	}
	t.Logf("events on %s:\n%s", pods[0].Name, strings.Join(msgs, "\n"))
	if len(evs.Items) < 2 {
		t.Errorf("want a Warning for the 429 and a Normal for the eviction, got %d events", len(evs.Items))
	}
}

func ptrInt32(v int32) *int32                            { return &v }
func ptrIntStr(v intstr.IntOrString) *intstr.IntOrString { return &v }

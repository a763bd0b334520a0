package k8s

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/remediate"
	"github.com/vigil-agent/vigil/rules"
	"github.com/vigil-agent/vigil/test/k8snode"
)

func ptr[T any](v T) *T { return &v }

const node = "node-a"

func TestPolicyFor(t *testing.T) {
	tests := []struct {
		name    string
		pod, ns map[string]string
		want    Policy
	}{
		{"default is observe-only", nil, nil, Policy{}},
		{"namespace opts in", nil, map[string]string{AnnotationRemediate: "true"}, Policy{OptedIn: true, Why: "namespace annotation vigil.dev/remediate=true"}},
		{"pod opts out of an opted-in namespace", map[string]string{AnnotationRemediate: "false"}, map[string]string{AnnotationRemediate: "true"},
			Policy{Protected: true, Why: "pod annotation vigil.dev/remediate=false"}},
		{"protect wins", map[string]string{AnnotationRemediate: "true", AnnotationProtect: "true"}, nil,
			Policy{OptedIn: true, Protected: true, Why: "pod annotation vigil.dev/protect=true"}},
		{"victim prefer", map[string]string{AnnotationRemediate: "True", AnnotationVictim: "prefer"}, nil,
			Policy{OptedIn: true, Victim: "prefer", Why: "pod annotation vigil.dev/remediate=True"}},
		{"victim avoid protects", map[string]string{AnnotationVictim: "avoid"}, map[string]string{AnnotationRemediate: "true"},
			Policy{OptedIn: true, Protected: true, Victim: "avoid", Why: "pod annotation vigil.dev/victim=avoid"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := PolicyFor(tt.pod, tt.ns); got != tt.want {
				t.Errorf("PolicyFor = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestValidators(t *testing.T) {
	tests := []struct {
		action  string
		params  map[string]any
		wantErr bool
	}{
		{ActionEvict, nil, false},
		{ActionEvict, map[string]any{"grace": "10s"}, false},
		{ActionEvict, map[string]any{"grace": "soon"}, true},
		{ActionEvict, map[string]any{"force": true}, true},
		{ActionRestartContainer, map[string]any{"timeout": "2s"}, false},
		{ActionScaleOut, map[string]any{"by": 2, "cooldown": "10m"}, false},
		{ActionScaleOut, map[string]any{"by": 0}, true},
		{ActionScaleOut, map[string]any{"by": 1.5}, true},
		{ActionCordon, nil, false},
	}
	v := remediate.Validators()
	for _, tt := range tests {
		fn, ok := v[tt.action]
		if !ok {
			t.Fatalf("no validator registered for %s", tt.action)
		}
		if err := fn(tt.params); (err != nil) != tt.wantErr {
			t.Errorf("%s %v: err %v, wantErr %v", tt.action, tt.params, err, tt.wantErr)
		}
	}
}

// fixture is one light apiserver shared by the subtests of a test.
type fixture struct {
	api *k8snode.API
	cs  kubernetes.Interface
}

func (f *fixture) namespace(t *testing.T, name string, ann map[string]string) {
	t.Helper()
	f.api.Namespace(t, name)
	if ann != nil {
		ns, err := f.cs.CoreV1().Namespaces().Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ns.Annotations = ann
		if _, err := f.cs.CoreV1().Namespaces().Update(context.Background(), ns, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// pod creates a running, ready pod on node with its status set by hand.
func (f *fixture) pod(t *testing.T, ns, name string, labels, ann map[string]string, owner *metav1.OwnerReference) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels, Annotations: ann},
		Spec: corev1.PodSpec{NodeName: node, AutomountServiceAccountToken: ptr(false),
			Containers: []corev1.Container{{Name: "app", Image: "k8s.local/app:v1"}}}}
	if owner != nil {
		p.OwnerReferences = []metav1.OwnerReference{*owner}
	}
	p, err := f.cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s/%s: %v", ns, name, err)
	}
	p.Status.Phase = corev1.PodRunning
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", Ready: true, ContainerID: "containerd://" + strings.Repeat("c", 64),
		Image: "k8s.local/app:v1", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}}}
	p, err = f.cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("pod status %s/%s: %v", ns, name, err)
	}
	return p
}

func request(p *corev1.Pod, id string) remediate.Request {
	return remediate.Request{RemediationID: id, Rule: "test-rule",
		Target: rules.Target{Kind: "cgroup", Path: "/kubepods/burstable/pod" + string(p.UID) + "/" + strings.Repeat("c", 64),
			Identity: collectors.Identity{Kind: "container", Namespace: p.Namespace, Pod: p.Name, PodUID: string(p.UID),
				Container: "app", ContainerID: strings.Repeat("c", 64)}}}
}

func newKube(t *testing.T, cs kubernetes.Interface, cfg Config) *Kube {
	t.Helper()
	if cfg.NodeName == "" {
		cfg.NodeName = node
	}
	k, err := New(cs, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func deleting(t *testing.T, cs kubernetes.Interface, p *corev1.Pod) bool {
	t.Helper()
	got, err := cs.CoreV1().Pods(p.Namespace).Get(context.Background(), p.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return true
	}
	if err != nil {
		t.Fatal(err)
	}
	return got.DeletionTimestamp != nil
}

// events returns the vigil Events on pod p.
func events(t *testing.T, cs kubernetes.Interface, p *corev1.Pod) []corev1.Event {
	t.Helper()
	list, err := cs.CoreV1().Events(p.Namespace).List(context.Background(), metav1.ListOptions{
		FieldSelector: fields.Set{"involvedObject.name": p.Name, "reason": EventReason}.String()})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func TestKubernetesActions(t *testing.T) {
	api := k8snode.StartAPI(t)
	f := &fixture{api: api, cs: api.Client}
	ctx := context.Background()
	f.namespace(t, "apps", map[string]string{AnnotationRemediate: "true"})
	f.namespace(t, "quiet", nil)

	t.Run("evict", func(t *testing.T) {
		k := newKube(t, f.cs, Config{})
		free := f.pod(t, "apps", "free", map[string]string{"app": "free"}, nil, nil)
		res, err := (&Evict{k: k}).Do(ctx, request(free, "rem-evict-1"))
		if err != nil {
			t.Fatalf("evict: %v", err)
		}
		if !res.Terminated || !strings.Contains(res.Detail, "evicted apps/free") {
			t.Errorf("result = %+v", res)
		}
		if !deleting(t, f.cs, free) {
			t.Error("pod not deleted after eviction")
		}
		evs := events(t, f.cs, free)
		if len(evs) != 1 || evs[0].Annotations["vigil.dev/remediation-id"] != "rem-evict-1" || evs[0].Action != ActionEvict ||
			!strings.Contains(evs[0].Message, "rem-evict-1") || evs[0].Source.Host != node {
			t.Errorf("events = %+v, want one VigilRemediation event naming the remediation", evs)
		}
	})

	t.Run("evict blocked by a PodDisruptionBudget", func(t *testing.T) {
		k := newKube(t, f.cs, Config{})
		guarded := f.pod(t, "apps", "guarded", map[string]string{"app": "guarded"}, nil, nil)
		pdb, err := f.cs.PolicyV1().PodDisruptionBudgets("apps").Create(ctx, &policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Name: "guarded"},
			Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr(intstr.FromInt32(1)),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "guarded"}}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// No disruption controller here: set what it would.
		setPDB := func(allowed int32) {
			pdb, err = f.cs.PolicyV1().PodDisruptionBudgets("apps").Get(ctx, "guarded", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			pdb.Status = policyv1.PodDisruptionBudgetStatus{ObservedGeneration: pdb.Generation, DisruptionsAllowed: allowed,
				CurrentHealthy: 1 + allowed, DesiredHealthy: 1, ExpectedPods: 1 + allowed}
			if pdb, err = f.cs.PolicyV1().PodDisruptionBudgets("apps").UpdateStatus(ctx, pdb, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		setPDB(0)
		_, err = (&Evict{k: k}).Do(ctx, request(guarded, "rem-pdb-1"))
		if !errors.Is(err, ErrEvictionBlocked) {
			t.Fatalf("evict under a blocking PDB: err = %v, want ErrEvictionBlocked", err)
		}
		if deleting(t, f.cs, guarded) {
			t.Fatal("pod deleted despite the PDB")
		}
		evs := events(t, f.cs, guarded)
		if len(evs) != 1 || evs[0].Type != corev1.EventTypeWarning || !strings.Contains(evs[0].Message, "429") {
			t.Errorf("events = %+v, want one Warning saying 429", evs)
		}
		setPDB(1)
		if _, err := (&Evict{k: k}).Do(ctx, request(guarded, "rem-pdb-2")); err != nil {
			t.Fatalf("evict once the PDB allows it: %v", err)
		}
		if !deleting(t, f.cs, guarded) {
			t.Error("pod not deleted once the PDB allowed it")
		}
	})

	t.Run("opt-in and protect", func(t *testing.T) {
		k := newKube(t, f.cs, Config{})
		quiet := f.pod(t, "quiet", "bystander", nil, nil, nil)
		if _, err := (&Evict{k: k}).Do(ctx, request(quiet, "rem-q")); !errors.Is(err, ErrNotOptedIn) {
			t.Errorf("evict in a namespace without opt-in: err = %v, want ErrNotOptedIn", err)
		}
		prot := f.pod(t, "apps", "precious", nil, map[string]string{AnnotationProtect: "true"}, nil)
		if _, err := (&Evict{k: k}).Do(ctx, request(prot, "rem-p")); !errors.Is(err, ErrProtected) {
			t.Errorf("evict a protected pod: err = %v, want ErrProtected", err)
		}
		if deleting(t, f.cs, quiet) || deleting(t, f.cs, prot) {
			t.Error("a refused eviction deleted a pod")
		}
		stale := request(quiet, "rem-s")
		stale.Target.Identity.PodUID = "00000000-0000-0000-0000-000000000000"
		if _, err := (&Evict{k: k}).Do(ctx, stale); !errors.Is(err, ErrNoPod) {
			t.Errorf("evict with a stale pod UID: err = %v, want ErrNoPod", err)
		}
		dry := request(f.pod(t, "apps", "dry", nil, nil, nil), "rem-d")
		dry.DryRun = true
		res, err := (&Evict{k: k}).Do(ctx, dry)
		if err != nil || !strings.HasPrefix(res.Detail, "would evict") {
			t.Errorf("dry-run evict = %+v, %v", res, err)
		}
		if deleting(t, f.cs, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "dry"}}) {
			t.Error("dry-run eviction deleted the pod")
		}
	})

	t.Run("restart-container falls back to deleting the pod", func(t *testing.T) {
		sock := t.TempDir() + "/no-such-runtime.sock"
		p := f.pod(t, "apps", "stuck", nil, nil, nil)
		k := newKube(t, f.cs, Config{CRIEndpoint: "unix://" + sock})
		if _, err := (&RestartContainer{k: k}).Do(ctx, request(p, "rem-r1")); err == nil || !strings.Contains(err.Error(), "StopContainer") {
			t.Fatalf("restart without a runtime and without fallback: err = %v", err)
		}
		if deleting(t, f.cs, p) {
			t.Fatal("pod deleted without DeletePodFallback")
		}
		k = newKube(t, f.cs, Config{CRIEndpoint: "unix://" + sock, DeletePodFallback: true})
		res, err := (&RestartContainer{k: k}).Do(ctx, request(p, "rem-r2"))
		if err != nil || !res.Terminated || !strings.Contains(res.Detail, "deleted pod apps/stuck") {
			t.Fatalf("restart with fallback = %+v, %v", res, err)
		}
		if !deleting(t, f.cs, p) {
			t.Error("fallback did not delete the pod")
		}
		if evs := events(t, f.cs, p); len(evs) != 2 {
			t.Errorf("got %d events, want 2 (failure, fallback)", len(evs))
		}
	})

	t.Run("scale-out", func(t *testing.T) { testScaleOut(t, f) })
	t.Run("scale-out of a StatefulSet", func(t *testing.T) { testScaleOutStatefulSet(t, f) })
	t.Run("scale-out while the Deployment changes under it", func(t *testing.T) { testScaleOutConflict(t, f) })
	t.Run("rbac", func(t *testing.T) { testRBAC(t, f) })
}

// deployment creates a Deployment, a ReplicaSet it controls and one pod of
// it, as the controllers would.
func deployment(t *testing.T, f *fixture, ns, name string, replicas int32, ann map[string]string) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	labels := map[string]string{"app": name}
	tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "k8s.local/app:v1"}}}}
	d, err := f.cs.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann},
		Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rsLabels := map[string]string{"app": name, "pod-template-hash": "5f7c9"}
	tmpl.Labels = rsLabels
	rs, err := f.cs.AppsV1().ReplicaSets(ns).Create(ctx, &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: name + "-5f7c9", Labels: rsLabels,
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: d.Name, UID: d.UID, Controller: ptr(true)}}},
		Spec: appsv1.ReplicaSetSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: rsLabels}, Template: tmpl}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return f.pod(t, ns, name+"-5f7c9-x1", rsLabels, nil,
		&metav1.OwnerReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: ptr(true)})
}

func replicas(t *testing.T, f *fixture, ns, name string) int32 {
	t.Helper()
	s, err := f.cs.AppsV1().Deployments(ns).GetScale(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s.Spec.Replicas
}

// clock is a settable clock shared by racing nodes.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func testScaleOut(t *testing.T, f *fixture) {
	ctx := context.Background()
	clk := &clock{t: time.Now()}
	pod := deployment(t, f, "apps", "web", 2, map[string]string{AnnotationMaxReplicas: "4"})
	// Five nodes see the same leak at once: exactly one scales.
	if won := raceScaleOut(t, f, clk, pod, "node", 5); won != 1 {
		t.Errorf("%d nodes scaled, want exactly 1", won)
	}
	if got := replicas(t, f, "apps", "web"); got != 3 {
		t.Errorf("replicas = %d, want 3", got)
	}
	lease, err := f.cs.CoordinationV1().Leases("apps").Get(ctx, "vigil-scale-deployment-web", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("lease: %v", err)
	}
	if lease.Spec.HolderIdentity == nil || !strings.HasPrefix(*lease.Spec.HolderIdentity, "node-") || *lease.Spec.LeaseDurationSeconds != 60 {
		t.Errorf("lease spec = %+v", lease.Spec)
	}
	if evs := events(t, f.cs, pod); len(evs) != 1 || !strings.Contains(evs[0].Message, "from 2 to 3") {
		t.Errorf("events = %+v, want one naming 2 -> 3", evs)
	}

	k := newKube(t, f.cs, Config{NodeName: "node-late", ScaleCooldown: time.Minute, Now: clk.now})
	// Within the cooldown nobody scales.
	clk.add(30 * time.Second)
	if _, err := (&ScaleOut{k: k}).Do(ctx, request(pod, "rem-scale-cool")); !errors.Is(err, ErrCooldown) {
		t.Errorf("within cooldown: err = %v, want ErrCooldown", err)
	}
	// After it, one more replica, up to the annotation's cap of 4.
	clk.add(31 * time.Second)
	if _, err := (&ScaleOut{k: k}).Do(ctx, request(pod, "rem-scale-2")); err != nil {
		t.Fatalf("after cooldown: %v", err)
	}
	if got := replicas(t, f, "apps", "web"); got != 4 {
		t.Errorf("replicas = %d, want 4", got)
	}
	clk.add(61 * time.Second)
	if _, err := (&ScaleOut{k: k}).Do(ctx, request(pod, "rem-scale-3")); !errors.Is(err, ErrAtCap) {
		t.Errorf("at the annotation cap: err = %v, want ErrAtCap", err)
	}
	// The global cap applies without an annotation.
	other := deployment(t, f, "apps", "api", 1, nil)
	kc := newKube(t, f.cs, Config{NodeName: "node-cap", MaxReplicas: 2, ScaleCooldown: time.Second, Now: clk.now})
	if _, err := (&ScaleOut{k: kc}).Do(ctx, remediateWith(request(other, "rem-g1"), map[string]any{"by": 5})); err != nil {
		t.Fatal(err)
	}
	if got := replicas(t, f, "apps", "api"); got != 2 {
		t.Errorf("replicas = %d, want the global cap 2", got)
	}
	clk.add(2 * time.Second)
	if _, err := (&ScaleOut{k: kc}).Do(ctx, request(other, "rem-g2")); !errors.Is(err, ErrAtCap) {
		t.Errorf("at the global cap: err = %v, want ErrAtCap", err)
	}
}

// testScaleOutStatefulSet: a StatefulSet's pod (owned directly, no
// ReplicaSet) is scaled through the StatefulSet's scale subresource, with
// the same Lease coordination, cap and cooldown.
func testScaleOutStatefulSet(t *testing.T, f *fixture) {
	ctx := context.Background()
	clk := &clock{t: time.Now()}
	labels := map[string]string{"app": "db"}
	one := int32(1)
	sts, err := f.cs.AppsV1().StatefulSets("apps").Create(ctx, &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db",
		Annotations: map[string]string{AnnotationMaxReplicas: "2"}},
		Spec: appsv1.StatefulSetSpec{Replicas: &one, ServiceName: "db", Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "db", Image: "k8s.local/app:v1"}}}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod := f.pod(t, "apps", "db-0", labels, nil,
		&metav1.OwnerReference{APIVersion: "apps/v1", Kind: "StatefulSet", Name: sts.Name, UID: sts.UID, Controller: ptr(true)})
	stsReplicas := func() int32 {
		t.Helper()
		s, err := f.cs.AppsV1().StatefulSets("apps").GetScale(ctx, "db", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return s.Spec.Replicas
	}
	if won := raceScaleOut(t, f, clk, pod, "sts-node", 3); won != 1 || stsReplicas() != 2 {
		t.Errorf("%d nodes scaled the StatefulSet to %d replicas, want 1 node and 2 replicas", won, stsReplicas())
	}
	if _, err := f.cs.CoordinationV1().Leases("apps").Get(ctx, "vigil-scale-statefulset-db", metav1.GetOptions{}); err != nil {
		t.Errorf("lease of the StatefulSet: %v", err)
	}
	clk.add(61 * time.Second)
	k := newKube(t, f.cs, Config{NodeName: "sts-node-late", ScaleCooldown: time.Minute, Now: clk.now})
	if _, err := (&ScaleOut{k: k}).Do(ctx, request(pod, "rem-sts-cap")); !errors.Is(err, ErrAtCap) {
		t.Errorf("at the StatefulSet's annotation cap: err = %v, want ErrAtCap", err)
	}
}

// raceScaleOut has n agents (nodes <prefix>-<i>) scale out pod's workload
// at once and returns how many did; the others must see ErrCooldown.
func raceScaleOut(t *testing.T, f *fixture, clk *clock, pod *corev1.Pod, prefix string, n int) (won int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		k := newKube(t, f.cs, Config{NodeName: fmt.Sprintf("%s-%d", prefix, i), ScaleCooldown: time.Minute, Now: clk.now})
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = (&ScaleOut{k: k}).Do(context.Background(), request(pod, fmt.Sprintf("rem-%s-%d", prefix, i)))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, ErrCooldown):
			t.Errorf("%s-%d: err = %v, want nil or ErrCooldown", prefix, i, err)
		}
	}
	return won
}

func remediateWith(r remediate.Request, params map[string]any) remediate.Request {
	r.Params = params
	return r
}

// testRBAC runs the agent's API calls as its ServiceAccount bound to the
// shipped ClusterRole, through impersonation.
func testRBAC(t *testing.T, f *fixture) {
	ctx := context.Background()
	f.namespace(t, "vigil", nil)
	if _, err := f.cs.CoreV1().ServiceAccounts("vigil").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "vigil"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dec := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme.Scheme, scheme.Scheme, json.SerializerOptions{Yaml: true, Strict: true})
	for _, file := range []string{"clusterrole.yaml", "clusterrolebinding.yaml"} {
		data, err := os.ReadFile("../../deploy/" + file)
		if err != nil {
			t.Fatal(err)
		}
		obj, _, err := dec.Decode(data, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		switch o := obj.(type) {
		case *rbacv1.ClusterRole:
			_, err = f.cs.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRoleBinding:
			_, err = f.cs.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
	}
	sa, err := kubernetes.NewForConfig(f.api.Impersonate("system:serviceaccount:vigil:vigil", "system:serviceaccounts", "system:serviceaccounts:vigil", "system:authenticated"))
	if err != nil {
		t.Fatal(err)
	}
	f.namespace(t, "rbac", map[string]string{AnnotationRemediate: "true"})
	// Allowed: everything the agent does.
	sel := fields.OneTermEqualSelector("spec.nodeName", node).String()
	if _, err := sa.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: sel}); err != nil {
		t.Errorf("list pods on the node: %v", err)
	}
	w, err := sa.CoreV1().Pods("").Watch(ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		t.Errorf("watch pods on the node: %v", err)
	} else {
		w.Stop()
	}
	k := newKube(t, sa, Config{NodeName: node, ScaleCooldown: time.Minute, DeletePodFallback: true, CRIEndpoint: "unix://" + t.TempDir() + "/none.sock"})
	victim := f.pod(t, "rbac", "victim", nil, nil, nil)
	if _, err := (&Evict{k: k}).Do(ctx, request(victim, "rem-rbac-evict")); err != nil {
		t.Errorf("evict as the ServiceAccount: %v", err)
	}
	restart := f.pod(t, "rbac", "restart", nil, nil, nil)
	if _, err := (&RestartContainer{k: k}).Do(ctx, request(restart, "rem-rbac-restart")); err != nil {
		t.Errorf("restart-container (fallback delete) as the ServiceAccount: %v", err)
	}
	pod := deployment(t, f, "rbac", "svc", 1, nil)
	if _, err := (&ScaleOut{k: k}).Do(ctx, request(pod, "rem-rbac-scale")); err != nil {
		t.Errorf("scale-out as the ServiceAccount: %v", err)
	}
	if got := replicas(t, f, "rbac", "svc"); got != 2 {
		t.Errorf("replicas = %d, want 2", got)
	}
	// The Lease update path (renewal after the cooldown) is allowed too.
	k.cfg.Now = func() time.Time { return time.Now().Add(2 * time.Minute) }
	if _, err := (&ScaleOut{k: k}).Do(ctx, request(pod, "rem-rbac-scale-2")); err != nil {
		t.Errorf("second scale-out (lease update) as the ServiceAccount: %v", err)
	}
	if n := len(events(t, f.cs, victim)); n != 1 {
		t.Errorf("eviction events posted as the ServiceAccount: %d, want 1", n)
	}
	// Denied: what the agent does not need.
	denied := []struct {
		what string
		call func() error
	}{
		{"delete deployments", func() error {
			return sa.AppsV1().Deployments("rbac").Delete(ctx, "svc", metav1.DeleteOptions{})
		}},
		{"create pods", func() error {
			_, err := sa.CoreV1().Pods("rbac").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "x"},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "x", Image: "x"}}}}, metav1.CreateOptions{})
			return err
		}},
		{"list secrets", func() error { _, err := sa.CoreV1().Secrets("rbac").List(ctx, metav1.ListOptions{}); return err }},
		{"update deployments", func() error {
			d, err := f.cs.AppsV1().Deployments("rbac").Get(ctx, "svc", metav1.GetOptions{})
			if err != nil {
				return err
			}
			_, err = sa.AppsV1().Deployments("rbac").Update(ctx, d, metav1.UpdateOptions{})
			return err
		}},
		{"cordon (patch nodes) without rbac-cordon.yaml", func() error {
			_, err := (&Cordon{k: k}).Do(ctx, remediate.Request{Target: rules.Target{Kind: "node"}})
			return err
		}},
		{"delete leases", func() error {
			return sa.CoordinationV1().Leases("rbac").Delete(ctx, "vigil-scale-deployment-svc", metav1.DeleteOptions{})
		}},
	}
	for _, d := range denied {
		if err := d.call(); !apierrors.IsForbidden(errors.Unwrap(err)) && !apierrors.IsForbidden(err) {
			t.Errorf("%s: err = %v, want Forbidden", d.what, err)
		}
	}
}

// interloper changes a Deployment through the admin client just before
// each of the first n scale updates a client sends reaches the apiserver,
// the way the deployment controller's status writes and an HPA do on a
// live cluster.
type interloper struct {
	next   http.RoundTripper
	n      int
	change func()
}

func (i *interloper) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/scale") && i.n > 0 {
		i.n--
		i.change()
	}
	return i.next.RoundTrip(r)
}

// testScaleOutConflict: the scale read and the scale write are two
// requests; whatever changes the Deployment between them makes the write
// conflict. vigil holds the Lease then, so it reads again and scales,
// adding its replicas to the count it finds, within the cap.
func testScaleOutConflict(t *testing.T, f *fixture) {
	ctx := context.Background()
	clk := &clock{t: time.Now()}
	pod := deployment(t, f, "apps", "busy", 1, map[string]string{AnnotationMaxReplicas: "5"})
	deployments := f.cs.AppsV1().Deployments("apps")
	touch := func(mutate func(*appsv1.Deployment)) func() {
		return func() {
			d, err := deployments.Get(ctx, "busy", metav1.GetOptions{})
			if err != nil {
				t.Error(err)
				return
			}
			mutate(d)
			if _, err := deployments.Update(ctx, d, metav1.UpdateOptions{}); err != nil {
				t.Error(err)
			}
		}
	}
	kubeWith := func(il *interloper) *Kube {
		cfg := rest.CopyConfig(f.api.Config)
		cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { il.next = rt; return il }
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return newKube(t, cs, Config{NodeName: "node-busy", ScaleCooldown: time.Minute, Now: clk.now})
	}

	// Three metadata writes in a row: three conflicts, then the scale lands.
	n := 0
	k := kubeWith(&interloper{n: 3, change: touch(func(d *appsv1.Deployment) {
		n++
		d.Annotations["example.com/touched"] = fmt.Sprint(n)
	})})
	res, err := (&ScaleOut{k: k}).Do(ctx, request(pod, "rem-busy-1"))
	if err != nil {
		t.Fatalf("scale-out under metadata writes: %v", err)
	}
	if got := replicas(t, f, "apps", "busy"); got != 2 || !strings.Contains(res.Detail, "from 1 to 2") {
		t.Errorf("replicas = %d, detail %q; want 2, from 1 to 2", got, res.Detail)
	}

	// Someone else scales to 4 in between: vigil adds its one to theirs.
	clk.add(61 * time.Second)
	k = kubeWith(&interloper{n: 1, change: touch(func(d *appsv1.Deployment) { d.Spec.Replicas = ptr(int32(4)) })})
	res, err = (&ScaleOut{k: k}).Do(ctx, request(pod, "rem-busy-2"))
	if err != nil {
		t.Fatalf("scale-out after another scaled: %v", err)
	}
	if got := replicas(t, f, "apps", "busy"); got != 5 || !strings.Contains(res.Detail, "from 4 to 5") {
		t.Errorf("replicas = %d, detail %q; want 5, from 4 to 5", got, res.Detail)
	}

	// Someone else scales to the cap in between: vigil stops at the cap.
	clk.add(61 * time.Second)
	touch(func(d *appsv1.Deployment) { d.Spec.Replicas = ptr(int32(4)) })()
	k = kubeWith(&interloper{n: 1, change: touch(func(d *appsv1.Deployment) { d.Spec.Replicas = ptr(int32(5)) })})
	if _, err := (&ScaleOut{k: k}).Do(ctx, request(pod, "rem-busy-3")); !errors.Is(err, ErrAtCap) {
		t.Errorf("another scaled to the cap meanwhile: err = %v, want ErrAtCap", err)
	}
	if got := replicas(t, f, "apps", "busy"); got != 5 {
		t.Errorf("replicas = %d, want the cap 5", got)
	}
}

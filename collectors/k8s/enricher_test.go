package k8s

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/collectors/identity"
	"github.com/vigil-agent/vigil/test/k8snode"
	"github.com/vigil-agent/vigil/test/testenv"
)

const (
	thisNode  = "node-a"
	otherNode = "node-b"
)

func ptr[T any](v T) *T { return &v }

// newPod creates a pod bound to node and sets its container statuses by
// hand (there is no kubelet in the light variant).
func newPod(t *testing.T, cs kubernetes.Interface, ns, name, node string, cids map[string]string, mutate func(*corev1.Pod)) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       corev1.PodSpec{NodeName: node, AutomountServiceAccountToken: ptr(false)},
	}
	for _, c := range []string{"app", "sidecar"} {
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: c, Image: "k8s.local/app:v1",
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("32Mi")}}})
	}
	if mutate != nil {
		mutate(pod)
	}
	created, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s/%s: %v", ns, name, err)
	}
	created.Status.Phase = corev1.PodRunning
	for cname, cid := range cids {
		created.Status.ContainerStatuses = append(created.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: cname, ContainerID: "containerd://" + cid, Image: "k8s.local/app:v1", Ready: true,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}})
	}
	updated, err := cs.CoreV1().Pods(ns).UpdateStatus(ctx, created, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("update status %s/%s: %v", ns, name, err)
	}
	return updated
}

func startEnricher(t *testing.T, cs kubernetes.Interface, cfg Config) (*Enricher, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	e, err := NewEnricher(cs, cfg, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return e, reg
}

func TestEnricherAgainstAPIServer(t *testing.T) {
	api := k8snode.StartAPI(t)
	cs := api.Client
	api.Namespace(t, "shop")
	const (
		cidApp     = "1111111111111111111111111111111111111111111111111111111111111111"
		cidSidecar = "2222222222222222222222222222222222222222222222222222222222222222"
		cidOther   = "3333333333333333333333333333333333333333333333333333333333333333"
	)
	web := newPod(t, cs, "shop", "web-7d9f8b6c5-abcde", thisNode, map[string]string{"app": cidApp, "sidecar": cidSidecar}, func(p *corev1.Pod) {
		p.Labels = map[string]string{"app": "web", "pod-template-hash": "7d9f8b6c5", "team": "payments", "vigil.dev/tier": "gold"}
		p.Annotations = map[string]string{"vigil.dev/remediate": "true", "kubectl.kubernetes.io/last-applied-configuration": "{}", "owner-email": "a@b"}
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-7d9f8b6c5", UID: "rs-uid", Controller: ptr(true)}}
	})
	db := newPod(t, cs, "shop", "db-0", thisNode, map[string]string{"app": "4444444444444444444444444444444444444444444444444444444444444444"}, func(p *corev1.Pod) {
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "db", UID: "sts-uid", Controller: ptr(true)}}
	})
	other := newPod(t, cs, "shop", "elsewhere", otherNode, map[string]string{"app": cidOther}, nil)

	e, reg := startEnricher(t, cs, Config{NodeName: thisNode, AnnotationKeys: []string{"owner-email"}, ProbeInterval: 200 * time.Millisecond})
	select {
	case <-e.Synced():
	case <-time.After(20 * time.Second):
		t.Fatal("informer did not sync")
	}
	testenv.Eventually(t, 20*time.Second, "ready", e.Ready)
	if got := testutil.ToFloat64(e.apiUp); got != 1 {
		t.Errorf("vigil_kubernetes_api_up = %v, want 1", got)
	}

	webLabels := map[string]string{"app": "web", "vigil.dev/tier": "gold"}
	webAnn := map[string]string{"vigil.dev/remediate": "true", "owner-email": "a@b"}
	tests := []struct {
		name string
		path string
		// want is the path's identity with these Kubernetes fields set.
		namespace, pod, container, owner string
		labels, annotations              map[string]string
	}{
		{"container of a Deployment pod", "/kubepods/burstable/pod" + string(web.UID) + "/" + cidApp,
			"shop", web.Name, "app", "Deployment/web", webLabels, webAnn},
		{"sidecar, systemd driver naming", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + strings.ReplaceAll(string(web.UID), "-", "_") + ".slice/cri-containerd-" + cidSidecar + ".scope",
			"shop", web.Name, "sidecar", "Deployment/web", webLabels, webAnn},
		{"pod level of a StatefulSet pod", "/kubepods/burstable/pod" + string(db.UID),
			"shop", "db-0", "", "StatefulSet/db", nil, nil},
		{"pod on another node is not seen", "/kubepods/besteffort/pod" + string(other.UID) + "/" + cidOther,
			"", "", "", "", nil, nil},
		{"unknown pod keeps its UID", "/kubepods/pod0000-unknown/" + cidApp,
			"", "", "", "", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := identity.FromPath(tt.path)
			if got.PodUID == "" {
				t.Fatalf("identity.FromPath(%s) has no pod UID", tt.path)
			}
			want := got
			want.Namespace, want.Pod, want.Container, want.Owner = tt.namespace, tt.pod, tt.container, tt.owner
			want.Labels, want.Annotations = tt.labels, tt.annotations
			if tt.pod != "" && want.QoS == "" {
				want.QoS = "burstable"
			}
			e.Enrich(&got)
			if !equalIdentity(got, want) {
				t.Errorf("Enrich(%s)\n got %+v\nwant %+v", tt.path, got, want)
			}
		})
	}

	// Deleting the pod removes its identity.
	if err := cs.CoreV1().Pods("shop").Delete(context.Background(), "db-0", metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "db-0 forgotten", func() bool {
		id := collectors.Identity{PodUID: string(db.UID)}
		e.Enrich(&id)
		return id.Pod == ""
	})
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP vigil_kubernetes_pods Pods on this node known from the Kubernetes API.
# TYPE vigil_kubernetes_pods gauge
vigil_kubernetes_pods 1
`), "vigil_kubernetes_pods"); err != nil {
		t.Error(err)
	}
}

func equalIdentity(a, b collectors.Identity) bool {
	return reflect.DeepEqual(a, b)
}

func TestEnricherDegradesWhenAPIUnreachable(t *testing.T) {
	// Nothing listens on port 1: every request fails at once.
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: "https://127.0.0.1:1", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	e, _ := startEnricher(t, cs, Config{NodeName: thisNode, ProbeInterval: 100 * time.Millisecond})
	testenv.Eventually(t, 20*time.Second, "a probe failure", func() bool { return strings.Contains(e.Reason(), "127.0.0.1:1") })
	if e.Ready() {
		t.Error("Ready() = true with no API server")
	}
	if got := testutil.ToFloat64(e.apiUp); got != 0 {
		t.Errorf("vigil_kubernetes_api_up = %v, want 0", got)
	}
	if r := e.Reason(); !strings.Contains(r, "UIDs only") || !strings.Contains(r, "127.0.0.1:1") {
		t.Errorf("Reason() = %q, want it to say identities are UIDs only and name the server", r)
	}
	id := identity.FromPath("/kubepods/burstable/pod1234-abcd/" + strings.Repeat("a", 64))
	want := id
	e.Enrich(&id)
	if !equalIdentity(id, want) {
		t.Errorf("Enrich changed an identity without API data: %+v", id)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		cfg     Config
		wantErr bool
	}{
		{Config{NodeName: "n1"}, false},
		{Config{}, true},
	}
	for _, tt := range tests {
		if err := tt.cfg.Validate(); (err != nil) != tt.wantErr {
			t.Errorf("Validate(%+v) = %v, wantErr %v", tt.cfg, err, tt.wantErr)
		}
	}
}

func TestOwnerAndFilter(t *testing.T) {
	tests := []struct {
		name   string
		labels map[string]string
		ref    *metav1.OwnerReference
		want   string
	}{
		{"bare pod", nil, nil, ""},
		{"deployment", map[string]string{"pod-template-hash": "abc12"}, &metav1.OwnerReference{Kind: "ReplicaSet", Name: "web-abc12", Controller: ptr(true)}, "Deployment/web"},
		{"bare replicaset", nil, &metav1.OwnerReference{Kind: "ReplicaSet", Name: "rs1", Controller: ptr(true)}, "ReplicaSet/rs1"},
		{"daemonset", nil, &metav1.OwnerReference{Kind: "DaemonSet", Name: "vigil", Controller: ptr(true)}, "DaemonSet/vigil"},
		{"non-controller ref", nil, &metav1.OwnerReference{Kind: "ConfigMap", Name: "x"}, ""},
	}
	for _, tt := range tests {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: tt.labels}}
		if tt.ref != nil {
			p.OwnerReferences = []metav1.OwnerReference{*tt.ref}
		}
		if got := Owner(p); got != tt.want {
			t.Errorf("%s: Owner = %q, want %q", tt.name, got, tt.want)
		}
	}
	if got := filterKeys(map[string]string{"a": "1", "b": "2"}, nil); got != nil {
		t.Errorf("filterKeys with nothing allowed = %v, want nil", got)
	}
	if got := ContainerID("containerd://abc"); got != "abc" {
		t.Errorf("ContainerID = %q", got)
	}
}

package k8snode

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

func TestStartAPI(t *testing.T) {
	api := StartAPI(t)
	ctx := context.Background()
	v, err := api.Client.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != Version {
		t.Errorf("server version %s, want %s", v.GitVersion, Version)
	}
	api.Namespace(t, "harness")
	if _, err := api.Client.CoreV1().ServiceAccounts("harness").Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Errorf("default ServiceAccount: %v", err)
	}
	// RBAC is on: an impersonated user without bindings is denied.
	nobody, err := kubernetes.NewForConfig(api.Impersonate("nobody"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nobody.CoreV1().Pods("harness").List(ctx, metav1.ListOptions{}); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Errorf("list pods as an unbound user: err = %v, want forbidden", err)
	}
	if out := api.Kubectl(t, "", "get", "ns", "harness", "-o", "name"); strings.TrimSpace(out) != "namespace/harness" {
		t.Errorf("kubectl get ns = %q", out)
	}
}

// TestNodeRunsPod is heavy (a full node, ~30 s): run it alone with
// go test ./test/k8snode -run TestNode -v. Skipped with -short.
func TestNodeRunsPod(t *testing.T) {
	RequireHeavy(t)
	n := StartNode(t, false)
	ctx := context.Background()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "first", Namespace: "default"},
		Spec: corev1.PodSpec{NodeName: NodeName, HostNetwork: true, TerminationGracePeriodSeconds: ptrInt64(2),
			Containers: []corev1.Container{{Name: "app", Image: AppImage, ImagePullPolicy: corev1.PullNever, Args: []string{"sleep"},
				Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("32Mi")}}}}}}
	pod, err := n.Client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var cid string
	if err := waitFor(90*time.Second, func() error {
		p, err := n.Client.CoreV1().Pods("default").Get(ctx, "first", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodRunning || len(p.Status.ContainerStatuses) == 0 {
			return errPhase(p)
		}
		cid = strings.TrimPrefix(p.Status.ContainerStatuses[0].ContainerID, "containerd://")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	cg := filepath.Join("/sys/fs/cgroup/memory/kubepods/burstable", "pod"+string(pod.UID), cid, "memory.limit_in_bytes")
	b, err := os.ReadFile(cg)
	if err != nil {
		t.Fatalf("container cgroup: %v", err)
	}
	if got := strings.TrimSpace(string(b)); got != "33554432" {
		t.Errorf("%s = %s, want 33554432", cg, got)
	}
}

type phaseError struct{ phase corev1.PodPhase }

func (e phaseError) Error() string { return "pod phase " + string(e.phase) }

func errPhase(p *corev1.Pod) error { return phaseError{p.Status.Phase} }

package k8snode

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/vigil-agent/vigil/deploy/image/oci"
)

const vigilPort = 19847

// TestNodeVigilDaemonSet is the end-to-end proof, heavy (~2-3 min): deploy/
// applied with kubectl apply -k on a real node runs vigil as a DaemonSet
// from a locally built image; vigil is ready and names the node's pods; a
// leaking opted-in pod is restarted through the CRI before the kernel OOM
// kill, while the same pod without the opt-in is OOM-killed.
//
//	go test ./test/k8snode -run TestNodeVigilDaemonSet -v -timeout 20m
func TestNodeVigilDaemonSet(t *testing.T) {
	RequireHeavy(t)
	n := StartNode(t, true)
	ctx := context.Background()
	work := t.TempDir()

	// The image, from the static binary, no base image.
	bin := filepath.Join(work, "vigil")
	BuildStatic(t, "github.com/vigil-agent/vigil", bin)
	tarPath := filepath.Join(work, "vigil.tar")
	if _, err := oci.WriteFile(tarPath, oci.Image{Name: "k8s.local/vigil:dev", Entrypoint: []string{"/vigil"},
		Files: []oci.File{{Src: bin, Dest: "/vigil", Mode: 0o755}}}); err != nil {
		t.Fatal(err)
	}
	n.ImportImage(t, tarPath)

	// An overlay a user of this node would write: host network on
	// loopback, this node's containerd socket and API server, acting on.
	overlay := filepath.Join(work, "overlay")
	journal := filepath.Join(work, "journal")
	for _, d := range []string{overlay, journal} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	deployDir, err := filepath.Abs("../../deploy")
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(overlay, deployDir)
	if err != nil {
		t.Fatal(err)
	}
	apiPort := strings.TrimPrefix(n.URL, "https://127.0.0.1:")
	files := map[string]string{
		"kustomization.yaml": fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - %s
configMapGenerator:
  - name: vigil-config
    namespace: vigil
    behavior: merge
    files:
      - config.yaml
patches:
  - target: {kind: DaemonSet, name: vigil}
    patch: |-
      - op: add
        path: /spec/template/spec/hostNetwork
        value: true
      - op: replace
        path: /spec/template/spec/containers/0/ports/0/containerPort
        value: %d
      - op: replace
        path: /spec/template/spec/containers/0/imagePullPolicy
        value: Never
      - op: add
        path: /spec/template/spec/containers/0/env/-
        value: {name: KUBERNETES_SERVICE_HOST, value: "127.0.0.1"}
      - op: add
        path: /spec/template/spec/containers/0/env/-
        value: {name: KUBERNETES_SERVICE_PORT, value: "%s"}
      - op: replace
        path: /spec/template/spec/volumes/3/hostPath/path
        value: %s
      - op: replace
        path: /spec/template/spec/volumes/4/hostPath/path
        value: %s
`, rel, vigilPort, apiPort, n.ContainerdSocket, journal),
		"config.yaml": fmt.Sprintf(`listen: 127.0.0.1:%d
host_root: /host
tick: 1s
discovery_interval: 2s
log:
  level: info
  format: json
rules:
  dirs: [/etc/vigil/rules]
  builtin: false
remediation:
  dry_run: false
  opt_in:
    - label:vigil.dev/remediate=true
  protected:
    - namespace:kube-system
    - namespace:vigil
  per_target: {every: 10s, burst: 3}
  journal:
    path: /var/lib/vigil/journal.db
kubernetes:
  enabled: true
  cri_endpoint: unix:///host/run/containerd/containerd.sock
`, vigilPort),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(overlay, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The volumes patched by index must be the socket and the journal.
	rendered := n.Kubectl(t, "", "kustomize", overlay)
	for _, want := range []string{"path: " + n.ContainerdSocket, "path: " + journal, "hostNetwork: true"} {
		if !strings.Contains(rendered, want) {
			t.Fatalf("kustomize output lacks %q:\n%s", want, rendered)
		}
	}
	t0 := time.Now()
	n.Kubectl(t, "", "apply", "-k", overlay)
	t.Cleanup(func() {
		_ = n.Client.CoreV1().Namespaces().Delete(context.Background(), "vigil", metav1.DeleteOptions{})
	})
	var vigilPod string
	if err := waitFor(180*time.Second, func() error {
		pods, err := n.Client.CoreV1().Pods("vigil").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=vigil"})
		if err != nil {
			return err
		}
		for _, p := range pods.Items {
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					vigilPod = p.Name
					return nil
				}
			}
		}
		return fmt.Errorf("no ready vigil pod yet (%d pods)", len(pods.Items))
	}); err != nil {
		t.Logf("vigil logs:\n%s", n.tryKubectl("logs", "-n", "vigil", "-l", "app.kubernetes.io/name=vigil", "--tail=60"))
		t.Fatal(err)
	}
	t.Logf("DaemonSet pod %s ready %.1fs after apply", vigilPod, time.Since(t0).Seconds())
	base := fmt.Sprintf("http://127.0.0.1:%d", vigilPort)
	if body, code := get(t, base+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz = %d %s", code, body)
	}

	// Two leaking pods, 128 MiB limit, 2 MiB/s: one opted in, one not.
	n.Kubectl(t, "", "create", "namespace", "leak")
	if err := waitFor(30*time.Second, func() error {
		_, err := n.Client.CoreV1().ServiceAccounts("leak").Get(ctx, "default", metav1.GetOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	hog := func(name string, ann map[string]string) {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "leak", Annotations: ann},
			Spec: corev1.PodSpec{NodeName: NodeName, HostNetwork: true, TerminationGracePeriodSeconds: ptrInt64(2),
				Containers: []corev1.Container{{Name: "hog", Image: AppImage, ImagePullPolicy: corev1.PullNever, Args: []string{"hog", "400", "2", "1000"},
					Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("32Mi")},
						Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")}}}}}}
		if _, err := n.Client.CoreV1().Pods("leak").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	hog("hog-vigil", map[string]string{"vigil.dev/remediate": "true"})
	hog("hog-control", nil)

	// vigil names the pods (identity from its informer).
	tNamed := time.Now()
	if err := waitFor(60*time.Second, func() error {
		body, code := get(t, base+"/api/v1/snapshot")
		if code != http.StatusOK {
			return fmt.Errorf("snapshot: %d", code)
		}
		for _, want := range []string{`"pod":"hog-vigil"`, `"namespace":"leak"`, `"container":"hog"`} {
			if !strings.Contains(body, want) {
				return fmt.Errorf("snapshot lacks %s", want)
			}
		}
		return nil
	}); err != nil {
		body, _ := get(t, base+"/api/v1/snapshot")
		var kube []string
		for _, part := range strings.Split(body, `"path":`) {
			if strings.HasPrefix(part, `"/kubepods`) {
				kube = append(kube, part[:min(len(part), 400)])
			}
		}
		t.Logf("snapshot: %d bytes, kubepods cgroups:\n%s", len(body), strings.Join(kube, "\n"))
		t.Logf("vigil logs:\n%s", n.tryKubectl("logs", "-n", "vigil", vigilPod, "--tail=60"))
		readyz, _ := get(t, base+"/readyz")
		t.Logf("/readyz: %s", readyz)
		t.Logf("pods:\n%s", n.tryKubectl("get", "pods", "-A", "-o", "wide"))
		if strings.Contains(readyz, "max_cgroups") || strings.Contains(readyz, "fd_limit") {
			// Discovery keeps what it tracks: at the cap, pod cgroups
			// created later are never sampled, so never named.
			t.Fatalf("%v: vigil's cgroup cap was reached (the host has more memory cgroups than vigil may track with its RLIMIT_NOFILE), so the new pods' cgroups are untracked", err)
		}
		t.Fatal(err)
	}
	t.Logf("vigil named leak/hog-vigil/hog %.1fs after the pods were created", time.Since(tNamed).Seconds())
	for _, line := range strings.Split(n.tryKubectl("logs", "-n", "vigil", vigilPod), "\n") {
		if strings.Contains(line, "max_cgroups") || strings.Contains(line, "pod informer") || strings.Contains(line, "kubernetes API") {
			t.Logf("vigil: %s", line)
		}
	}

	restarted := func(name string) (*corev1.ContainerStateTerminated, int32) {
		p, err := n.Client.CoreV1().Pods("leak").Get(ctx, name, metav1.GetOptions{})
		if err != nil || len(p.Status.ContainerStatuses) == 0 {
			return nil, 0
		}
		cs := p.Status.ContainerStatuses[0]
		return cs.LastTerminationState.Terminated, cs.RestartCount
	}
	if err := waitFor(150*time.Second, func() error {
		v, _ := restarted("hog-vigil")
		c, _ := restarted("hog-control")
		if v == nil || c == nil {
			return fmt.Errorf("not both restarted yet (vigil %v, control %v)", v != nil, c != nil)
		}
		return nil
	}); err != nil {
		t.Logf("vigil logs:\n%s", n.tryKubectl("logs", "-n", "vigil", vigilPod, "--tail=80"))
		t.Fatal(err)
	}
	v, vcount := restarted("hog-vigil")
	c, _ := restarted("hog-control")
	t.Logf("opted in: restartCount=%d last=%s/%d; control: last=%s/%d", vcount, v.Reason, v.ExitCode, c.Reason, c.ExitCode)
	if v.Reason == "OOMKilled" {
		t.Errorf("opted-in pod was OOM-killed (exit %d): vigil did not act first", v.ExitCode)
	}
	if c.Reason != "OOMKilled" {
		t.Errorf("control pod's last state = %s, want OOMKilled", c.Reason)
	}
	evs, err := n.Client.CoreV1().Events("leak").List(ctx, metav1.ListOptions{
		FieldSelector: fields.Set{"involvedObject.name": "hog-vigil", "reason": "VigilRemediation"}.String()})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs.Items) == 0 || !strings.Contains(evs.Items[0].Message, "restart-container") {
		t.Errorf("no VigilRemediation restart-container Event on hog-vigil: %+v", evs.Items)
	} else {
		t.Logf("event: %s", evs.Items[0].Message)
	}
	// The journal (on the hostPath) records the remediation with the pod's name.
	body, code := get(t, base+"/api/v1/remediations")
	var records struct {
		Remediations []struct {
			ID     string `json:"id"`
			Target struct {
				Identity struct{ Namespace, Pod, Container string } `json:"identity"`
			} `json:"target"`
			Steps []struct{ Action, Result string } `json:"steps"`
		} `json:"remediations"`
	}
	if err := json.Unmarshal([]byte(body), &records); err != nil || code != http.StatusOK {
		t.Fatalf("journal: %d %v", code, err)
	}
	// The ladder is gentle first: the CPU throttle ran before the restart.
	found := false
	for _, r := range records.Remediations {
		id := r.Target.Identity
		throttled := false
		for _, st := range r.Steps {
			if st.Action == "throttle-cpu" && st.Result == "applied" {
				throttled = true
			}
			if id.Namespace == "leak" && id.Pod == "hog-vigil" && id.Container == "hog" && st.Action == "restart-container" && st.Result == "applied" {
				if !throttled {
					t.Errorf("remediation %s restarted leak/hog-vigil/hog without throttling first: %+v", r.ID, r.Steps)
				}
				found = true
				t.Logf("journal: remediation %s on leak/hog-vigil/hog: %+v", r.ID, r.Steps)
			}
		}
	}
	if !found {
		t.Errorf("journal has no applied restart-container step for leak/hog-vigil/hog (%d records)", len(records.Remediations))
	}
}

func (n *Node) tryKubectl(args ...string) string {
	out, _ := execCommand(n.Bins.Kubectl, append([]string{"--kubeconfig", n.Kubeconfig}, args...)...)
	return out
}

func get(t *testing.T, url string) (string, int) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return err.Error(), 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode
}

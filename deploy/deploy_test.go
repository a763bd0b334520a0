// Package deploy holds vigil's Kubernetes manifests and systemd unit; its
// tests load every shipped file with the real API types and loaders.
package deploy

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/vigil-agent/vigil/agent/config"
	"github.com/vigil-agent/vigil/remediate"
	_ "github.com/vigil-agent/vigil/remediate/k8s" // registers the Kubernetes action validators
	"github.com/vigil-agent/vigil/rules"
	"github.com/vigil-agent/vigil/rules/ruletest"
	"github.com/vigil-agent/vigil/test/k8snode"
)

// manifests are the Kubernetes objects shipped here (not kustomization,
// config or rules, which have their own loaders).
var manifests = []string{"namespace.yaml", "serviceaccount.yaml", "clusterrole.yaml", "clusterrolebinding.yaml",
	"rbac-cordon.yaml", "service.yaml", "daemonset.yaml"}

// decodeStrict decodes every YAML document of data with the API types;
// unknown or duplicate fields fail.
func decodeStrict(t *testing.T, name string, data []byte) []runtime.Object {
	t.Helper()
	s := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme.Scheme, scheme.Scheme, json.SerializerOptions{Yaml: true, Strict: true})
	r := utilyaml.NewYAMLReader(bufioReader(data))
	var objs []runtime.Object
	for {
		doc, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, gvk, err := s.Decode(doc, nil, nil)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if gvk.Kind == "" {
			t.Errorf("%s: document without kind", name)
		}
		objs = append(objs, obj)
	}
	return objs
}

func stripComments(b []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(b, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(l), []byte("#")) {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

func TestManifestsStrict(t *testing.T) {
	all := map[string][]runtime.Object{}
	for _, f := range manifests {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all[f] = decodeStrict(t, f, data)
		if len(all[f]) == 0 {
			t.Errorf("%s: no objects", f)
		}
	}
	// Strictness itself: an unknown field must fail.
	bad := []byte("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: x}\nnotAField: 1\n")
	s := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme.Scheme, scheme.Scheme, json.SerializerOptions{Yaml: true, Strict: true})
	if _, _, err := s.Decode(bad, nil, nil); err == nil {
		t.Error("strict decoding accepted an unknown field")
	}

	ds, ok := all["daemonset.yaml"][0].(*appsv1.DaemonSet)
	if !ok {
		t.Fatalf("daemonset.yaml: got %T", all["daemonset.yaml"][0])
	}
	spec := ds.Spec.Template.Spec
	c := spec.Containers[0]
	checks := []struct {
		what string
		ok   bool
	}{
		{"priorityClassName system-node-critical", spec.PriorityClassName == "system-node-critical"},
		{"tolerates every taint", len(spec.Tolerations) == 1 && spec.Tolerations[0].Operator == corev1.TolerationOpExists && spec.Tolerations[0].Key == ""},
		{"serviceAccountName vigil", spec.ServiceAccountName == "vigil"},
		{"liveness /healthz", c.LivenessProbe != nil && c.LivenessProbe.HTTPGet != nil && c.LivenessProbe.HTTPGet.Path == "/healthz"},
		{"readiness /readyz", c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil && c.ReadinessProbe.HTTPGet.Path == "/readyz"},
		{"memory request and limit", !c.Resources.Requests.Memory().IsZero() && !c.Resources.Limits.Memory().IsZero()},
		{"cpu request", !c.Resources.Requests.Cpu().IsZero()},
		{"capabilities dropped", c.SecurityContext != nil && c.SecurityContext.Capabilities != nil && len(c.SecurityContext.Capabilities.Drop) == 1 && c.SecurityContext.Capabilities.Drop[0] == "ALL"},
		{"not privileged", c.SecurityContext.Privileged != nil && !*c.SecurityContext.Privileged},
		{"read-only root filesystem", c.SecurityContext.ReadOnlyRootFilesystem != nil && *c.SecurityContext.ReadOnlyRootFilesystem},
		{"NODE_NAME from the downward API", hasNodeName(c.Env)},
	}
	for _, ck := range checks {
		if !ck.ok {
			t.Errorf("daemonset: want %s", ck.what)
		}
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m
	}
	hostPaths := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	for _, want := range []struct {
		volume, hostPath string
		readOnly         bool
	}{{"proc", "/proc", true}, {"sys", "/sys", true}, {"cgroup", "/sys/fs/cgroup", false}, {"journal", "/var/lib/vigil", false}} {
		if hostPaths[want.volume] != want.hostPath {
			t.Errorf("daemonset: volume %s hostPath = %q, want %q", want.volume, hostPaths[want.volume], want.hostPath)
		}
		if m, ok := mounts[want.volume]; !ok || m.ReadOnly != want.readOnly {
			t.Errorf("daemonset: mount of %s readOnly = %v (mounted %v), want %v", want.volume, m.ReadOnly, ok, want.readOnly)
		}
	}

	crb := all["clusterrolebinding.yaml"][0].(*rbacv1.ClusterRoleBinding)
	if crb.RoleRef.Name != "vigil" || crb.Subjects[0].Name != spec.ServiceAccountName {
		t.Errorf("clusterrolebinding binds %s to %v, want vigil to the DaemonSet's ServiceAccount", crb.RoleRef.Name, crb.Subjects)
	}
}

func hasNodeName(env []corev1.EnvVar) bool {
	for _, e := range env {
		if e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName" {
			return true
		}
	}
	return false
}

func TestShippedConfigs(t *testing.T) {
	for _, f := range []string{"config.yaml", "systemd/vigil.yaml"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := config.Parse(f, data); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	data, err := os.ReadFile("rules-kubernetes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	set, err := rules.Load(map[string][]byte{"rules-kubernetes.yaml": data}, rules.LoadOptions{Actions: remediate.Validators()})
	if err != nil {
		t.Fatalf("rules-kubernetes.yaml: %v", err)
	}
	if set == nil {
		t.Fatal("rules-kubernetes.yaml: no rule set")
	}
	res, err := ruletest.RunFile(os.DirFS("."), "rules-kubernetes_test.yaml", rules.LoadOptions{Actions: remediate.Validators()})
	if err != nil {
		t.Fatalf("rules-kubernetes_test.yaml: %v", err)
	}
	if res.Failed() {
		t.Errorf("rules-kubernetes_test.yaml:\n%s", res)
	}
	unit, err := os.ReadFile("systemd/vigil.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"[Service]", "ExecStart=/usr/local/bin/vigil run --config=/etc/vigil/config.yaml", "[Install]"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("vigil.service: missing %q", want)
		}
	}
}

type kustomization struct {
	APIVersion         string   `json:"apiVersion"`
	Kind               string   `json:"kind"`
	Namespace          string   `json:"namespace"`
	Resources          []string `json:"resources"`
	ConfigMapGenerator []struct {
		Name  string   `json:"name"`
		Files []string `json:"files"`
	} `json:"configMapGenerator"`
	Images []struct {
		Name    string `json:"name"`
		NewTag  string `json:"newTag"`
		NewName string `json:"newName"`
	} `json:"images"`
}

func TestKustomization(t *testing.T) {
	data, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := sigsyaml.UnmarshalStrict(data, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	for _, r := range k.Resources {
		if _, err := os.Stat(r); err != nil {
			t.Errorf("kustomization resource: %v", err)
		}
	}
	for _, g := range k.ConfigMapGenerator {
		for _, f := range g.Files {
			if _, err := os.Stat(f); err != nil {
				t.Errorf("configMapGenerator %s: %v", g.Name, err)
			}
		}
	}
	t.Run("kubectl kustomize", func(t *testing.T) {
		bins, ok := k8snode.Cached()
		if !ok {
			t.Skip("Kubernetes binaries not built yet (run go test ./test/k8snode once)")
		}
		dir, _ := filepath.Abs(".")
		out, err := exec.Command(bins.Kubectl, "kustomize", dir).Output()
		if err != nil {
			t.Fatalf("kubectl kustomize: %v", err)
		}
		objs := decodeStrict(t, "kustomize output", out)
		kinds := map[string]int{}
		for _, o := range objs {
			kinds[o.GetObjectKind().GroupVersionKind().Kind]++
			if cm, ok := o.(*corev1.ConfigMap); ok {
				if _, err := config.Parse("configmap config.yaml", []byte(cm.Data["config.yaml"])); err != nil {
					t.Errorf("generated ConfigMap %s: %v", cm.Name, err)
				}
			}
			if ds, ok := o.(*appsv1.DaemonSet); ok {
				if ds.Namespace != "vigil" {
					t.Errorf("DaemonSet namespace = %q", ds.Namespace)
				}
				found := false
				for _, v := range ds.Spec.Template.Spec.Volumes {
					found = found || (v.ConfigMap != nil && strings.HasPrefix(v.ConfigMap.Name, "vigil-config-"))
				}
				if !found {
					t.Error("DaemonSet does not reference the generated (hashed) vigil-config ConfigMap")
				}
			}
		}
		for _, kind := range []string{"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Service", "DaemonSet"} {
			if kinds[kind] != 1 {
				t.Errorf("kustomize output has %d %s, want 1", kinds[kind], kind)
			}
		}
	})
}

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }

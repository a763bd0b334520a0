package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	k8sident "github.com/vigil-agent/vigil/collectors/k8s"
	k8sact "github.com/vigil-agent/vigil/remediate/k8s"
)

// KubernetesConfig is the kubernetes section of vigil's configuration. Until
// it is part of config.Config it is read from the environment
// (KubernetesConfigFromEnv); the DaemonSet sets NODE_NAME from the downward
// API, which turns the section on.
type KubernetesConfig struct {
	// Enabled turns the pod informer and the Kubernetes actions on.
	Enabled bool `yaml:"enabled" json:"enabled"`
	// NodeName is this node (downward API spec.nodeName).
	NodeName string `yaml:"node_name" json:"node_name"`
	// Kubeconfig is a kubeconfig file; empty means in-cluster.
	Kubeconfig string `yaml:"kubeconfig" json:"kubeconfig"`
	// CRIEndpoint is the container runtime socket for restart-container.
	CRIEndpoint string `yaml:"cri_endpoint" json:"cri_endpoint"`
	// LabelKeys and AnnotationKeys are copied to identities besides the
	// vigil.dev/ ones; nil label keys mean k8s.DefaultLabelKeys.
	LabelKeys      []string `yaml:"label_keys" json:"label_keys"`
	AnnotationKeys []string `yaml:"annotation_keys" json:"annotation_keys"`
	// DeletePodFallback deletes the pod when a CRI stop fails.
	DeletePodFallback bool `yaml:"delete_pod_fallback" json:"delete_pod_fallback"`
	// MaxReplicas caps scale-out cluster-wide (0: 10).
	MaxReplicas int32 `yaml:"max_replicas" json:"max_replicas"`
	// ScaleCooldown is the minimum time between scale-outs of a workload.
	ScaleCooldown time.Duration `yaml:"scale_cooldown" json:"scale_cooldown"`
	// Cordon registers the cordon action (needs deploy/rbac-cordon.yaml).
	Cordon bool `yaml:"cordon" json:"cordon"`
}

// KubernetesConfigFromEnv reads the section from the environment: NODE_NAME
// (enables it), VIGIL_KUBECONFIG, VIGIL_CRI_ENDPOINT,
// VIGIL_K8S_LABEL_KEYS and VIGIL_K8S_ANNOTATION_KEYS (comma-separated),
// VIGIL_K8S_DELETE_POD_FALLBACK, VIGIL_K8S_MAX_REPLICAS,
// VIGIL_K8S_SCALE_COOLDOWN, VIGIL_K8S_CORDON.
func KubernetesConfigFromEnv(hostRoot string, getenv func(string) string) (KubernetesConfig, error) {
	c := KubernetesConfig{NodeName: getenv("NODE_NAME"), Kubeconfig: getenv("VIGIL_KUBECONFIG"), CRIEndpoint: getenv("VIGIL_CRI_ENDPOINT")}
	c.Enabled = c.NodeName != ""
	if c.CRIEndpoint == "" {
		c.CRIEndpoint = "unix://" + filepath.Join(hostRoot, "run/containerd/containerd.sock")
	}
	list := func(k string) []string {
		v := strings.TrimSpace(getenv(k))
		if v == "" {
			return nil
		}
		return strings.Split(v, ",")
	}
	c.LabelKeys, c.AnnotationKeys = list("VIGIL_K8S_LABEL_KEYS"), list("VIGIL_K8S_ANNOTATION_KEYS")
	var err error
	boolean := func(k string) bool {
		v := getenv(k)
		if v == "" {
			return false
		}
		b, e := strconv.ParseBool(v)
		if e != nil && err == nil {
			err = fmt.Errorf("%s: want true or false, got %q", k, v)
		}
		return b
	}
	c.DeletePodFallback, c.Cordon = boolean("VIGIL_K8S_DELETE_POD_FALLBACK"), boolean("VIGIL_K8S_CORDON")
	if v := getenv("VIGIL_K8S_MAX_REPLICAS"); v != "" {
		n, e := strconv.ParseInt(v, 10, 32)
		if e != nil || n < 0 {
			return c, fmt.Errorf("VIGIL_K8S_MAX_REPLICAS: want a replica count, got %q", v)
		}
		c.MaxReplicas = int32(n)
	}
	if v := getenv("VIGIL_K8S_SCALE_COOLDOWN"); v != "" {
		d, e := time.ParseDuration(v)
		if e != nil || d < 0 {
			return c, fmt.Errorf("VIGIL_K8S_SCALE_COOLDOWN: want a duration, got %q", v)
		}
		c.ScaleCooldown = d
	}
	return c, err
}

// Kubernetes is the running Kubernetes integration: the Enricher and the
// actions.
type Kubernetes struct {
	Enricher *k8sident.Enricher
	Actions  *k8sact.Kube
}

// NewKubernetes builds the client, the Enricher and the actions of c. It
// starts nothing.
func NewKubernetes(a *Agent, c KubernetesConfig) (*Kubernetes, error) {
	var rc *rest.Config
	var err error
	if c.Kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	rc.UserAgent = "vigil/" + a.info.Version
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	e, err := k8sident.NewEnricher(cs, k8sident.Config{NodeName: c.NodeName, LabelKeys: c.LabelKeys, AnnotationKeys: c.AnnotationKeys},
		a.Registry(), a.log)
	if err != nil {
		return nil, err
	}
	acts, err := k8sact.New(cs, k8sact.Config{NodeName: c.NodeName, CRIEndpoint: c.CRIEndpoint, DeletePodFallback: c.DeletePodFallback,
		MaxReplicas: c.MaxReplicas, ScaleCooldown: c.ScaleCooldown, EnableCordon: c.Cordon, Log: a.log})
	if err != nil {
		return nil, err
	}
	return &Kubernetes{Enricher: e, Actions: acts}, nil
}

// setupKubernetes wires the integration into a starting agent: enrich every
// snapshot, register the actions with the executor, run the informer, and
// report an unreachable API server as degraded on /readyz (observation and
// local actions go on).
func setupKubernetes(a *Agent) error {
	c, err := KubernetesConfigFromEnv(a.Config().HostRoot, os.Getenv)
	if err != nil {
		return err
	}
	if !c.Enabled {
		return nil
	}
	k, err := NewKubernetes(a, c)
	if err != nil {
		return err
	}
	a.AddEnricher(k.Enricher.EnrichSnapshot)
	if a.pipeline.executor != nil {
		k.Actions.Register(a.pipeline.executor)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); k.Enricher.Run(ctx) }()
	go func() {
		defer wg.Done()
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			a.SetDegraded("kubernetes_api", k.Enricher.Reason())
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	a.OnStop(func() { cancel(); wg.Wait() })
	a.log.Info("kubernetes integration on", "node", c.NodeName, "cri", c.CRIEndpoint)
	return nil
}

func init() {
	registerExtension(&Extension{Name: "kubernetes", Setup: setupKubernetes})
}

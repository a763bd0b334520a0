package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vigil-agent/vigil/agent/config"
	k8sident "github.com/vigil-agent/vigil/collectors/k8s"
	k8sact "github.com/vigil-agent/vigil/remediate/k8s"
)

// Environment variables that override the kubernetes section: the
// DaemonSet sets NODE_NAME from the downward API (spec.nodeName), which
// the shipped ConfigMap cannot know; VIGIL_KUBECONFIG points a vigil run
// outside the cluster at a kubeconfig.
const (
	envNodeName   = "NODE_NAME"
	envKubeconfig = "VIGIL_KUBECONFIG"
)

// kubernetesSettings resolves the kubernetes section of the config file:
// NODE_NAME and VIGIL_KUBECONFIG override node_name and kubeconfig when
// set, and an empty cri_endpoint is containerd's socket under hostRoot.
// Whether the integration runs is the file's choice (enabled); an enabled
// section must end with a node name.
func kubernetesSettings(c config.Kubernetes, hostRoot string, getenv func(string) string) (config.Kubernetes, error) {
	if v := strings.TrimSpace(getenv(envNodeName)); v != "" {
		c.NodeName = v
	}
	if v := getenv(envKubeconfig); v != "" {
		c.Kubeconfig = v
	}
	if c.CRIEndpoint == "" {
		c.CRIEndpoint = "unix://" + filepath.Join(hostRoot, "run/containerd/containerd.sock")
	}
	if c.Enabled && c.NodeName == "" {
		return c, fmt.Errorf("kubernetes: node_name is empty and %s is not set (set it from the downward API's spec.nodeName)", envNodeName)
	}
	return c, nil
}

// Kubernetes is the running Kubernetes integration: the Enricher and the
// actions.
type Kubernetes struct {
	Enricher *k8sident.Enricher
	Actions  *k8sact.Kube
}

// NewKubernetes builds the client, the Enricher and the actions of c. It
// starts nothing.
func NewKubernetes(a *Agent, c config.Kubernetes) (*Kubernetes, error) {
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

// setupKubernetes wires the integration into a starting agent when the
// config file's kubernetes section enables it (read once at start; a
// reload does not change it): enrich every snapshot, register the actions
// with the executor, run the informer, and report an unreachable API
// server as degraded on /readyz (observation and local actions go on).
func setupKubernetes(a *Agent) error {
	cfg := a.Config()
	if !cfg.Kubernetes.Enabled {
		return nil
	}
	c, err := kubernetesSettings(cfg.Kubernetes, cfg.HostRoot, os.Getenv)
	if err != nil {
		return err
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

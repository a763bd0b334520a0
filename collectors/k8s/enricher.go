// Package k8s joins the cgroups vigil samples to the pods the kubelet runs
// on this node: a pod informer restricted to the node (field selector
// spec.nodeName) fills namespace, pod, container, owner, QoS and a bounded
// set of labels and annotations into collectors.Identity by pod UID and
// container ID. When the API server cannot be reached, identities keep
// their UIDs, Ready reports why, and vigil_kubernetes_api_up is 0:
// observation and local actions go on.
package k8s

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/vigil-agent/vigil/collectors"
)

// AnnotationPrefix is the prefix of every vigil annotation and label
// (vigil.dev/remediate, vigil.dev/protect, ...): keys under it are always
// kept on identities.
const AnnotationPrefix = "vigil.dev/"

// Config configures an Enricher.
type Config struct {
	// NodeName is this node's name (downward API NODE_NAME or --node-name).
	NodeName string
	// LabelKeys and AnnotationKeys are the keys copied to identities in
	// addition to those under AnnotationPrefix; everything else is dropped
	// so metric and journal cardinality stays bounded.
	LabelKeys      []string
	AnnotationKeys []string
	// Resync is the informer resync period (0: none).
	Resync time.Duration
	// ProbeInterval is how often the API server's /readyz is probed for
	// vigil_kubernetes_api_up (default 10s).
	ProbeInterval time.Duration
}

// DefaultLabelKeys are the label keys kept when Config.LabelKeys is nil.
var DefaultLabelKeys = []string{"app", "app.kubernetes.io/name", "app.kubernetes.io/instance"}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if c.NodeName == "" {
		return errors.New("kubernetes: node name is empty (set NODE_NAME from the downward API or --node-name)")
	}
	return nil
}

// podInfo is what Enrich copies: computed once per pod change so Enrich
// only does map lookups.
type podInfo struct {
	namespace, name, owner, qos string
	labels, annotations         map[string]string
	// containers maps container ID (without the runtime:// prefix) to
	// container name.
	containers map[string]string
}

// Enricher fills Kubernetes identity from a node-local pod informer.
type Enricher struct {
	cfg    Config
	client kubernetes.Interface
	log    *slog.Logger

	mu     sync.RWMutex
	pods   map[string]*podInfo // by pod UID
	synced bool
	apiErr string // last API error, "" when the API answered

	apiUp   prometheus.Gauge
	podsNum prometheus.Gauge
	ready   chan struct{}
}

// NewEnricher builds an Enricher; Run starts it. reg may be nil.
func NewEnricher(client kubernetes.Interface, cfg Config, reg prometheus.Registerer, log *slog.Logger) (*Enricher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if client == nil {
		return nil, errors.New("kubernetes: nil client")
	}
	if cfg.LabelKeys == nil {
		cfg.LabelKeys = DefaultLabelKeys
	}
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = 10 * time.Second
	}
	if log == nil {
		log = slog.Default()
	}
	e := &Enricher{cfg: cfg, client: client, log: log.With("component", "kubernetes"), pods: map[string]*podInfo{},
		ready: make(chan struct{}),
		apiUp: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vigil_kubernetes_api_up",
			Help: "1 when the Kubernetes API server answered the last probe and the pod informer is synced, else 0 (identities then carry UIDs only)."}),
		podsNum: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vigil_kubernetes_pods",
			Help: "Pods on this node known from the Kubernetes API."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{e.apiUp, e.podsNum} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("kubernetes: register metrics: %w", err)
			}
		}
	}
	return e, nil
}

// Run watches this node's pods and probes the API server until ctx ends.
func (e *Enricher) Run(ctx context.Context) {
	node := e.cfg.NodeName
	factory := informers.NewSharedInformerFactoryWithOptions(e.client, e.cfg.Resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", node).String()
		}))
	inf := factory.Core().V1().Pods().Informer()
	_ = inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		e.setAPIError(fmt.Sprintf("pod watch: %v", err))
	})
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { e.upsert(obj) },
		UpdateFunc: func(_, obj any) { e.upsert(obj) },
		DeleteFunc: func(obj any) { e.remove(obj) },
	})
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
			e.mu.Lock()
			e.synced = true
			e.mu.Unlock()
			e.log.Info("pod informer synced", "node", node, "pods", e.podCount())
			close(e.ready)
			e.updateUp()
		}
	}()
	e.probe(ctx)
	t := time.NewTicker(e.cfg.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-t.C:
			e.probe(ctx)
		}
	}
}

// Synced is closed once the informer has listed this node's pods.
func (e *Enricher) Synced() <-chan struct{} { return e.ready }

func (e *Enricher) probe(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := e.client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(pctx)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		e.setAPIError(fmt.Sprintf("probe /readyz: %v", err))
		return
	}
	e.mu.Lock()
	was := e.apiErr
	e.apiErr = ""
	e.mu.Unlock()
	if was != "" {
		e.log.Info("kubernetes API reachable")
	}
	e.updateUp()
}

func (e *Enricher) setAPIError(msg string) {
	e.mu.Lock()
	was := e.apiErr
	e.apiErr = msg
	e.mu.Unlock()
	if was == "" {
		e.log.Warn("kubernetes API unreachable: identities degrade to UIDs", "err", msg)
	}
	e.updateUp()
}

func (e *Enricher) updateUp() {
	if e.Ready() {
		e.apiUp.Set(1)
	} else {
		e.apiUp.Set(0)
	}
}

// Ready is true when the informer has synced and the API server answered
// the last probe.
func (e *Enricher) Ready() bool { return e.Reason() == "" }

// Reason says why the Enricher is not ready ("" when ready).
func (e *Enricher) Reason() string {
	e.mu.RLock()
	defer e.mu.RUnlock()
	switch {
	case e.apiErr != "" && !e.synced:
		return "kubernetes API unreachable, pod identities are UIDs only: " + e.apiErr
	case e.apiErr != "":
		return "kubernetes API unreachable, pod identities may be stale: " + e.apiErr
	case !e.synced:
		return "pod informer not synced yet"
	}
	return ""
}

func (e *Enricher) podCount() int {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return len(e.pods)
}

// Enrich fills the Kubernetes fields of id from the pod with id.PodUID and
// its container with id.ContainerID. Unknown pods leave id unchanged (it
// keeps its UIDs). The label and annotation maps are shared between calls
// and must not be modified.
func (e *Enricher) Enrich(id *collectors.Identity) {
	if id == nil || id.PodUID == "" {
		return
	}
	e.mu.RLock()
	p := e.pods[id.PodUID]
	e.mu.RUnlock()
	if p == nil {
		return
	}
	id.Namespace, id.Pod, id.Owner = p.namespace, p.name, p.owner
	id.Labels, id.Annotations = p.labels, p.annotations
	if id.QoS == "" {
		id.QoS = p.qos
	}
	if id.ContainerID != "" {
		id.Container = p.containers[id.ContainerID]
	}
}

// EnrichSnapshot enriches every cgroup sample of snap.
func (e *Enricher) EnrichSnapshot(snap *collectors.Snapshot) {
	if snap == nil {
		return
	}
	for i := range snap.Cgroups {
		e.Enrich(&snap.Cgroups[i].Identity)
	}
}

func (e *Enricher) upsert(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	info := e.info(pod)
	e.mu.Lock()
	e.pods[string(pod.UID)] = info
	n := len(e.pods)
	e.mu.Unlock()
	e.podsNum.Set(float64(n))
}

func (e *Enricher) remove(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	e.mu.Lock()
	delete(e.pods, string(pod.UID))
	n := len(e.pods)
	e.mu.Unlock()
	e.podsNum.Set(float64(n))
}

func (e *Enricher) info(pod *corev1.Pod) *podInfo {
	p := &podInfo{namespace: pod.Namespace, name: pod.Name, owner: Owner(pod),
		qos:         strings.ToLower(string(pod.Status.QOSClass)),
		labels:      filterKeys(pod.Labels, e.cfg.LabelKeys),
		annotations: filterKeys(pod.Annotations, e.cfg.AnnotationKeys),
		containers:  map[string]string{}}
	for _, list := range [][]corev1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses, pod.Status.EphemeralContainerStatuses} {
		for _, cs := range list {
			if id := ContainerID(cs.ContainerID); id != "" {
				p.containers[id] = cs.Name
			}
			// The previous instance's cgroup may still be sampled.
			if t := cs.LastTerminationState.Terminated; t != nil {
				if id := ContainerID(t.ContainerID); id != "" {
					p.containers[id] = cs.Name
				}
			}
		}
	}
	return p
}

// ContainerID strips the runtime prefix (containerd://) from a container
// status ID, giving the ID the cgroup path carries.
func ContainerID(statusID string) string {
	if _, id, ok := strings.Cut(statusID, "://"); ok {
		return id
	}
	return statusID
}

// Owner names the workload that owns pod: Deployment/<name> for pods of a
// Deployment's ReplicaSet (the ReplicaSet is named <deployment>-<pod-template-hash>),
// else <Kind>/<name> of the controller reference, or "" for bare pods.
func Owner(pod *corev1.Pod) string {
	ref := metav1.GetControllerOf(pod)
	if ref == nil {
		return ""
	}
	if ref.Kind == "ReplicaSet" {
		if h := pod.Labels["pod-template-hash"]; h != "" && strings.HasSuffix(ref.Name, "-"+h) {
			return "Deployment/" + strings.TrimSuffix(ref.Name, "-"+h)
		}
	}
	return ref.Kind + "/" + ref.Name
}

// filterKeys keeps the keys under AnnotationPrefix and those in allow; nil
// when nothing is kept.
func filterKeys(m map[string]string, allow []string) map[string]string {
	var out map[string]string
	for k, v := range m {
		keep := strings.HasPrefix(k, AnnotationPrefix)
		for _, a := range allow {
			keep = keep || k == a
		}
		if keep {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}

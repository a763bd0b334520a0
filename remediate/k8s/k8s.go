// Package k8s adds vigil's Kubernetes actions to remediate: evict (the
// Eviction API, which honours PodDisruptionBudgets), restart-container (CRI
// StopContainer so the kubelet restarts it), scale-out (the scale
// subresource, coordinated cluster-wide by a Lease per workload) and an
// optional cordon. Every remediation posts an Event on the pod. Pods and
// namespaces opt in and out through annotations under vigil.dev/; the
// default is observe-only.
package k8s

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/vigil-agent/vigil/remediate"
)

// Action names.
const (
	ActionEvict            = "evict"
	ActionRestartContainer = "restart-container"
	ActionScaleOut         = "scale-out"
	ActionCordon           = "cordon"
)

// Annotations (on pods or their namespaces; a pod's own value wins).
const (
	// AnnotationRemediate "true" opts a pod or namespace into Kubernetes
	// actions, "false" opts it out.
	AnnotationRemediate = "vigil.dev/remediate"
	// AnnotationProtect "true" means never act on it.
	AnnotationProtect = "vigil.dev/protect"
	// AnnotationVictim "prefer" or "avoid" orders pods as victims; an
	// "avoid" pod is not evicted or restarted.
	AnnotationVictim = "vigil.dev/victim"
	// AnnotationMaxReplicas caps scale-out (on the workload or its pods).
	AnnotationMaxReplicas = "vigil.dev/max-replicas"
)

// EventReason is the reason of the Events vigil posts.
const EventReason = "VigilRemediation"

// Errors callers and the journal branch on.
var (
	// ErrEvictionBlocked: the Eviction API answered 429 (a
	// PodDisruptionBudget allows no disruption now). The ladder journals it
	// and moves on; nothing retries it in a loop.
	ErrEvictionBlocked = errors.New("eviction blocked by a PodDisruptionBudget (429 Too Many Requests)")
	// ErrNotOptedIn: neither the pod nor its namespace has vigil.dev/remediate=true.
	ErrNotOptedIn = errors.New("pod not opted in (annotation vigil.dev/remediate=true on the pod or its namespace)")
	// ErrProtected: vigil.dev/protect=true, vigil.dev/remediate=false or
	// vigil.dev/victim=avoid.
	ErrProtected = errors.New("pod protected by annotation")
	// ErrNoPod: the target has no known pod (not a pod cgroup, or the API
	// server was unreachable when it was identified).
	ErrNoPod = errors.New("target has no known pod")
	// ErrCooldown: the workload was scaled within the cooldown, by this
	// node or another one (the Lease says who).
	ErrCooldown = errors.New("scale-out in cooldown")
	// ErrAtCap: the workload is at its replica cap.
	ErrAtCap = errors.New("workload at its replica cap")
)

// Config configures the Kubernetes actions.
type Config struct {
	// NodeName is this node (Lease holder identity, Event source host).
	NodeName string
	// CRIEndpoint is the container runtime socket
	// (unix:///run/containerd/containerd.sock).
	CRIEndpoint string
	// DeletePodFallback deletes the pod when the CRI stop fails.
	DeletePodFallback bool
	// MaxReplicas is the global scale-out cap (default 10).
	MaxReplicas int32
	// ScaleCooldown is the minimum time between two scale-outs of one
	// workload, cluster-wide (default 5m).
	ScaleCooldown time.Duration
	// EnableCordon registers the cordon action (off by default).
	EnableCordon bool
	// RequireOptIn refuses pods without vigil.dev/remediate=true (default
	// true through New; set AllowWithoutOptIn to drop it).
	AllowWithoutOptIn bool
	Log               *slog.Logger
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if c.NodeName == "" {
		return errors.New("kubernetes actions: node name is empty")
	}
	if c.MaxReplicas < 0 {
		return fmt.Errorf("kubernetes actions: max_replicas %d < 0", c.MaxReplicas)
	}
	if c.ScaleCooldown < 0 {
		return fmt.Errorf("kubernetes actions: scale_cooldown %s < 0", c.ScaleCooldown)
	}
	return nil
}

// Kube holds what the actions share: the client and the config.
type Kube struct {
	cfg    Config
	client kubernetes.Interface
	log    *slog.Logger
}

// New builds the actions' shared state.
func New(client kubernetes.Interface, cfg Config) (*Kube, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if client == nil {
		return nil, errors.New("kubernetes actions: nil client")
	}
	if cfg.MaxReplicas == 0 {
		cfg.MaxReplicas = 10
	}
	if cfg.ScaleCooldown == 0 {
		cfg.ScaleCooldown = 5 * time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Kube{cfg: cfg, client: client, log: cfg.Log}, nil
}

// Actions returns the actions to register, by config.
func (k *Kube) Actions() []remediate.Action {
	acts := []remediate.Action{&Evict{k: k}, &RestartContainer{k: k}, &ScaleOut{k: k}}
	if k.cfg.EnableCordon {
		acts = append(acts, &Cordon{k: k})
	}
	return acts
}

// Registrar is where actions go (remediate.Executor).
type Registrar interface{ Register(remediate.Action) }

// Register adds the actions to x.
func (k *Kube) Register(x Registrar) {
	for _, a := range k.Actions() {
		x.Register(a)
	}
}

func init() {
	remediate.RegisterValidator(ActionEvict, validateEvict)
	remediate.RegisterValidator(ActionRestartContainer, validateRestart)
	remediate.RegisterValidator(ActionScaleOut, validateScaleOut)
	remediate.RegisterValidator(ActionCordon, validateNone)
}

// Policy is what the annotations of a pod and its namespace say.
type Policy struct {
	OptedIn   bool
	Protected bool
	// Victim is "prefer", "avoid" or "".
	Victim string
	// Why names the annotation that decided.
	Why string
}

// PolicyFor reads the vigil.dev/ annotations of pod and its namespace; the
// pod's own value wins.
func PolicyFor(pod, ns map[string]string) Policy {
	get := func(key string) (string, string) {
		if v, ok := pod[key]; ok {
			return strings.ToLower(strings.TrimSpace(v)), "pod annotation " + key + "=" + v
		}
		if v, ok := ns[key]; ok {
			return strings.ToLower(strings.TrimSpace(v)), "namespace annotation " + key + "=" + v
		}
		return "", ""
	}
	var p Policy
	if v, why := get(AnnotationProtect); v == "true" {
		p.Protected, p.Why = true, why
	}
	v, why := get(AnnotationRemediate)
	switch v {
	case "true":
		p.OptedIn = true
		if p.Why == "" {
			p.Why = why
		}
	case "false":
		if !p.Protected {
			p.Protected, p.Why = true, why
		}
	}
	if v, why := get(AnnotationVictim); v == "prefer" || v == "avoid" {
		p.Victim = v
		if v == "avoid" && !p.Protected {
			p.Protected, p.Why = true, why
		}
	}
	return p
}

// podFor fetches the target's pod and checks it is still the same pod and
// that its annotations allow acting on it.
func (k *Kube) podFor(ctx context.Context, req remediate.Request, action string) (*corev1.Pod, error) {
	id := req.Target.Identity
	if id.Namespace == "" || id.Pod == "" {
		return nil, fmt.Errorf("%s: %w: %s (pod uid %q)", action, ErrNoPod, req.Target.Key(), id.PodUID)
	}
	pod, err := k.client.CoreV1().Pods(id.Namespace).Get(ctx, id.Pod, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("%s: get pod %s/%s: %w", action, id.Namespace, id.Pod, err)
	}
	if id.PodUID != "" && string(pod.UID) != id.PodUID {
		return nil, fmt.Errorf("%s: %w: pod %s/%s now has uid %s, not %s", action, ErrNoPod, id.Namespace, id.Pod, pod.UID, id.PodUID)
	}
	if err := k.allowed(ctx, pod, action); err != nil {
		return nil, err
	}
	return pod, nil
}

func (k *Kube) allowed(ctx context.Context, pod *corev1.Pod, action string) error {
	var nsAnn map[string]string
	ns, err := k.client.CoreV1().Namespaces().Get(ctx, pod.Namespace, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("%s: get namespace %s: %w", action, pod.Namespace, err)
	}
	if err == nil {
		nsAnn = ns.Annotations
	}
	p := PolicyFor(pod.Annotations, nsAnn)
	if p.Protected {
		return fmt.Errorf("%s: %w: %s (%s)", action, ErrProtected, podName(pod), p.Why)
	}
	if !p.OptedIn && !k.cfg.AllowWithoutOptIn {
		return fmt.Errorf("%s: %w: %s", action, ErrNotOptedIn, podName(pod))
	}
	return nil
}

func podName(p *corev1.Pod) string { return p.Namespace + "/" + p.Name }

// event posts a Kubernetes Event on the pod so kubectl describe pod shows
// the remediation. Failures are logged: an Event is evidence, not the act.
func (k *Kube) event(ctx context.Context, pod *corev1.Pod, req remediate.Request, action, outcome string, actErr error) {
	typ := corev1.EventTypeNormal
	msg := fmt.Sprintf("vigil %s: %s (rule %s, remediation %s)", action, outcome, req.Rule, req.RemediationID)
	if actErr != nil {
		typ = corev1.EventTypeWarning
		msg = fmt.Sprintf("vigil %s failed: %v (rule %s, remediation %s)", action, actErr, req.Rule, req.RemediationID)
	}
	if len(msg) > 1000 {
		msg = msg[:1000]
	}
	now := metav1.NewTime(k.cfg.Now())
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{GenerateName: pod.Name + ".vigil-", Namespace: pod.Namespace,
			Annotations: map[string]string{"vigil.dev/remediation-id": req.RemediationID, "vigil.dev/action": action, "vigil.dev/rule": req.Rule}},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID, ResourceVersion: pod.ResourceVersion},
		Reason:         EventReason,
		Message:        msg,
		Type:           typ,
		Source:         corev1.EventSource{Component: "vigil", Host: k.cfg.NodeName},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
		ReportingController: "vigil.dev/agent", ReportingInstance: "vigil-" + k.cfg.NodeName,
		Action: action,
	}
	// The pod's context may be gone (eviction); post on a fresh one.
	ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := k.client.CoreV1().Events(pod.Namespace).Create(ectx, ev, metav1.CreateOptions{}); err != nil {
		k.log.Warn("post event", "pod", podName(pod), "action", action, "remediation_id", req.RemediationID, "err", err)
	}
}

// params helpers (remediate's are unexported).

func knownParams(m map[string]any, names ...string) error {
	for key := range m {
		ok := false
		for _, n := range names {
			ok = ok || key == n
		}
		if !ok {
			return fmt.Errorf("unknown parameter %q (want one of %s)", key, strings.Join(names, ", "))
		}
	}
	return nil
}

func intParam(m map[string]any, key string, def int64) (int64, error) {
	v, ok := m[key]
	if !ok {
		return def, nil
	}
	switch x := v.(type) {
	case int:
		return int64(x), nil
	case int64:
		return x, nil
	case uint64:
		return int64(x), nil
	case float64:
		if x != float64(int64(x)) {
			return 0, fmt.Errorf("%s: want an integer, got %v", key, x)
		}
		return int64(x), nil
	case string:
		n, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: want an integer, got %q", key, x)
		}
		return n, nil
	}
	return 0, fmt.Errorf("%s: want an integer, got %T", key, v)
}

func durationParam(m map[string]any, key string, def time.Duration) (time.Duration, error) {
	v, ok := m[key]
	if !ok {
		return def, nil
	}
	if s, ok := v.(string); ok {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return 0, fmt.Errorf("%s: want a duration like 30s, got %q", key, s)
		}
		return d, nil
	}
	n, err := intParam(m, key, 0)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s: want a duration like 30s, got %v", key, v)
	}
	return time.Duration(n) * time.Second, nil
}

func boolParam(m map[string]any, key string, def bool) (bool, error) {
	v, ok := m[key]
	if !ok {
		return def, nil
	}
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("%s: want true or false, got %T", key, v)
	}
	return b, nil
}

func validateNone(m map[string]any) error { return knownParams(m) }

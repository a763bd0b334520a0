package k8s

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vigil-agent/vigil/remediate"
	"github.com/vigil-agent/vigil/rules"
)

// Evict evicts the target's pod through the Eviction API, so
// PodDisruptionBudgets are honoured. A 429 is returned as
// ErrEvictionBlocked: the ladder journals it and moves on.
//
// Params: grace (termination grace period, default the pod's).
type Evict struct{ k *Kube }

var _ remediate.Action = (*Evict)(nil)

func validateEvict(m map[string]any) error {
	if err := knownParams(m, "grace"); err != nil {
		return err
	}
	_, err := durationParam(m, "grace", 0)
	return err
}

func (*Evict) Name() string { return ActionEvict }

func (a *Evict) Do(ctx context.Context, req remediate.Request) (remediate.Result, error) {
	if err := validateEvict(req.Params); err != nil {
		return remediate.Result{}, err
	}
	pod, err := a.k.podFor(ctx, req, ActionEvict)
	if err != nil {
		return remediate.Result{}, err
	}
	ev := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace},
		DeleteOptions: &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &pod.UID}}}
	if _, ok := req.Params["grace"]; ok {
		g, _ := durationParam(req.Params, "grace", 0)
		secs := int64(g / time.Second)
		ev.DeleteOptions.GracePeriodSeconds = &secs
	}
	if req.DryRun {
		ev.DeleteOptions.DryRun = []string{metav1.DryRunAll}
	}
	err = a.k.client.CoreV1().Pods(pod.Namespace).EvictV1(ctx, ev)
	switch {
	case apierrors.IsTooManyRequests(err):
		err = fmt.Errorf("evict %s: %w: %v", podName(pod), ErrEvictionBlocked, err)
	case err != nil:
		err = fmt.Errorf("evict %s: %w", podName(pod), err)
	}
	if req.DryRun {
		if err != nil {
			return remediate.Result{}, err
		}
		return remediate.Result{Detail: "would evict " + podName(pod) + " (server dry-run admitted it)"}, nil
	}
	a.k.event(ctx, pod, req, ActionEvict, "evicted pod "+podName(pod), err)
	if err != nil {
		return remediate.Result{}, err
	}
	return remediate.Result{Detail: "evicted " + podName(pod), Terminated: true}, nil
}

// RestartContainer stops the target's container through the CRI so the
// kubelet restarts it (restartCount grows, the reason is not OOMKilled).
// It needs only the container ID, so it works while the API server is
// unreachable; the Event is then skipped. With DeletePodFallback, a failed
// CRI stop deletes the pod instead.
//
// Params: timeout (SIGTERM grace before SIGKILL, default 5s).
type RestartContainer struct{ k *Kube }

var _ remediate.Action = (*RestartContainer)(nil)

func validateRestart(m map[string]any) error {
	if err := knownParams(m, "timeout"); err != nil {
		return err
	}
	_, err := durationParam(m, "timeout", 0)
	return err
}

func (*RestartContainer) Name() string { return ActionRestartContainer }

func (a *RestartContainer) Do(ctx context.Context, req remediate.Request) (remediate.Result, error) {
	if err := validateRestart(req.Params); err != nil {
		return remediate.Result{}, err
	}
	id := req.Target.Identity
	if id.ContainerID == "" {
		return remediate.Result{}, fmt.Errorf("%s: target %s is not a container", ActionRestartContainer, req.Target.Key())
	}
	timeout, _ := durationParam(req.Params, "timeout", 5*time.Second)
	// With the API reachable, annotations decide; without it only the
	// container ID is known and the executor's safety config decides.
	var pod *corev1.Pod
	if id.Namespace != "" && id.Pod != "" {
		p, err := a.k.podFor(ctx, req, ActionRestartContainer)
		if err != nil && (errors.Is(err, ErrProtected) || errors.Is(err, ErrNotOptedIn) || errors.Is(err, ErrNoPod)) {
			return remediate.Result{}, err
		}
		pod = p
	} else if !a.k.cfg.AllowWithoutOptIn {
		return remediate.Result{}, fmt.Errorf("%s: %w: pod of container %s unknown, cannot read its opt-in", ActionRestartContainer, ErrNoPod, short(id.ContainerID))
	}
	what := fmt.Sprintf("container %s (%s)", id.Container, short(id.ContainerID))
	if pod != nil {
		what = fmt.Sprintf("container %s of %s (%s)", id.Container, podName(pod), short(id.ContainerID))
	}
	if req.DryRun {
		return remediate.Result{Detail: "would stop " + what + " through the CRI so the kubelet restarts it"}, nil
	}
	err := a.stop(ctx, id.ContainerID, timeout)
	if err == nil {
		if pod != nil {
			a.k.event(ctx, pod, req, ActionRestartContainer, "stopped "+what+" through the CRI; the kubelet restarts it", nil)
		}
		return remediate.Result{Detail: "stopped " + what + " through the CRI; the kubelet restarts it"}, nil
	}
	if !a.k.cfg.DeletePodFallback || pod == nil {
		if pod != nil {
			a.k.event(ctx, pod, req, ActionRestartContainer, "", err)
		}
		return remediate.Result{}, err
	}
	derr := a.k.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &pod.UID}})
	if derr != nil {
		derr = fmt.Errorf("%w; fallback delete pod %s: %w", err, podName(pod), derr)
		a.k.event(ctx, pod, req, ActionRestartContainer, "", derr)
		return remediate.Result{}, derr
	}
	detail := fmt.Sprintf("CRI stop failed (%v); deleted pod %s instead", err, podName(pod))
	a.k.event(ctx, pod, req, ActionRestartContainer, detail, nil)
	return remediate.Result{Detail: detail, Terminated: true}, nil
}

func (a *RestartContainer) stop(ctx context.Context, containerID string, timeout time.Duration) error {
	ep := a.k.cfg.CRIEndpoint
	if ep == "" {
		return fmt.Errorf("%s: no CRI endpoint configured", ActionRestartContainer)
	}
	if !strings.Contains(ep, "://") {
		ep = "unix://" + ep
	}
	conn, err := grpc.NewClient(ep, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("%s: CRI %s: %w", ActionRestartContainer, ep, err)
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, timeout+10*time.Second)
	defer cancel()
	_, err = runtimeapi.NewRuntimeServiceClient(conn).StopContainer(cctx, &runtimeapi.StopContainerRequest{
		ContainerId: containerID, Timeout: int64(timeout / time.Second)})
	if err != nil {
		return fmt.Errorf("%s: CRI StopContainer %s on %s: %w", ActionRestartContainer, short(containerID), ep, err)
	}
	return nil
}

func short(id string) string {
	if len(id) > 13 {
		return id[:13]
	}
	return id
}

// ScaleOut adds replicas to the Deployment or StatefulSet that owns the
// target's pod, through the scale subresource. A Lease per workload
// (coordination.k8s.io, named vigil-scale-<kind>-<name>) makes the many
// nodes that see the same leak scale once per cooldown: only the node that
// takes the Lease scales.
//
// Params: by (replicas to add, default 1), cooldown (default the config's).
type ScaleOut struct{ k *Kube }

var _ remediate.Action = (*ScaleOut)(nil)

func validateScaleOut(m map[string]any) error {
	if err := knownParams(m, "by", "cooldown"); err != nil {
		return err
	}
	by, err := intParam(m, "by", 1)
	if err != nil {
		return err
	}
	if by < 1 || by > 100 {
		return fmt.Errorf("by: want 1..100, got %d", by)
	}
	_, err = durationParam(m, "cooldown", 0)
	return err
}

func (*ScaleOut) Name() string { return ActionScaleOut }

// Workload is a scalable owner of a pod.
type Workload struct {
	Kind, Namespace, Name string
	Annotations           map[string]string
}

func (w Workload) String() string { return w.Kind + "/" + w.Namespace + "/" + w.Name }

// workloadOf finds the Deployment (through its ReplicaSet) or StatefulSet
// controlling pod.
func (k *Kube) workloadOf(ctx context.Context, pod *corev1.Pod) (Workload, error) {
	ref := metav1.GetControllerOf(pod)
	if ref == nil {
		return Workload{}, fmt.Errorf("pod %s has no controller to scale", podName(pod))
	}
	apps := k.client.AppsV1()
	switch ref.Kind {
	case "ReplicaSet":
		rs, err := apps.ReplicaSets(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return Workload{}, fmt.Errorf("get replicaset %s/%s: %w", pod.Namespace, ref.Name, err)
		}
		dref := metav1.GetControllerOf(rs)
		if dref == nil || dref.Kind != "Deployment" {
			return Workload{}, fmt.Errorf("replicaset %s/%s has no Deployment to scale", pod.Namespace, ref.Name)
		}
		d, err := apps.Deployments(pod.Namespace).Get(ctx, dref.Name, metav1.GetOptions{})
		if err != nil {
			return Workload{}, fmt.Errorf("get deployment %s/%s: %w", pod.Namespace, dref.Name, err)
		}
		return Workload{Kind: "Deployment", Namespace: d.Namespace, Name: d.Name, Annotations: d.Annotations}, nil
	case "StatefulSet":
		s, err := apps.StatefulSets(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return Workload{}, fmt.Errorf("get statefulset %s/%s: %w", pod.Namespace, ref.Name, err)
		}
		return Workload{Kind: "StatefulSet", Namespace: s.Namespace, Name: s.Name, Annotations: s.Annotations}, nil
	}
	return Workload{}, fmt.Errorf("pod %s is controlled by a %s, which vigil does not scale", podName(pod), ref.Kind)
}

func (a *ScaleOut) Do(ctx context.Context, req remediate.Request) (remediate.Result, error) {
	if err := validateScaleOut(req.Params); err != nil {
		return remediate.Result{}, err
	}
	pod, err := a.k.podFor(ctx, req, ActionScaleOut)
	if err != nil {
		return remediate.Result{}, err
	}
	w, err := a.k.workloadOf(ctx, pod)
	if err != nil {
		return remediate.Result{}, fmt.Errorf("%s: %w", ActionScaleOut, err)
	}
	by, _ := intParam(req.Params, "by", 1)
	cooldown, _ := durationParam(req.Params, "cooldown", a.k.cfg.ScaleCooldown)
	res, err := a.k.Scale(ctx, w, pod.Annotations, int32(by), cooldown, req.DryRun)
	if !req.DryRun && !errors.Is(err, ErrCooldown) {
		a.k.event(ctx, pod, req, ActionScaleOut, res, err)
	}
	if err != nil {
		return remediate.Result{}, err
	}
	return remediate.Result{Detail: res}, nil
}

// LeaseName is the name of the Lease that coordinates scale-outs of w.
func LeaseName(w Workload) string {
	name := "vigil-scale-" + strings.ToLower(w.Kind) + "-" + w.Name
	if len(name) > 253 {
		name = name[:253]
	}
	return name
}

// Scale adds by replicas to w, capped by vigil.dev/max-replicas (on the
// workload, else on the pod) and the global cap, unless the workload's
// Lease shows a scale-out within cooldown. It returns a readable account.
func (k *Kube) Scale(ctx context.Context, w Workload, podAnn map[string]string, by int32, cooldown time.Duration, dryRun bool) (string, error) {
	limit := k.cfg.MaxReplicas
	for _, ann := range []map[string]string{w.Annotations, podAnn} {
		if v, ok := ann[AnnotationMaxReplicas]; ok {
			n, err := intParam(map[string]any{"v": v}, "v", 0)
			if err != nil || n < 0 {
				return "", fmt.Errorf("%s: %s: annotation %s=%q is not a replica count", ActionScaleOut, w, AnnotationMaxReplicas, v)
			}
			limit = min(limit, int32(n))
			break
		}
	}
	scales := k.scaler(w)
	sc, err := scales.get(ctx)
	if err != nil {
		return "", fmt.Errorf("%s: get scale of %s: %w", ActionScaleOut, w, err)
	}
	cur := sc.Spec.Replicas
	want := min(cur+by, limit)
	if want <= cur {
		return "", fmt.Errorf("%s: %s: %w (%d replicas, cap %d)", ActionScaleOut, w, ErrAtCap, cur, limit)
	}
	if dryRun {
		return fmt.Sprintf("would scale %s from %d to %d replicas (cap %d)", w, cur, want, limit), nil
	}
	if err := k.takeLease(ctx, w, cooldown, cur, want); err != nil {
		return "", err
	}
	// The Deployment's controllers update its status all the time, and each
	// update moves the resourceVersion the scale was read at: a conflict
	// means "read again", not "someone else scaled". The Lease is ours, so
	// re-read, re-apply by within the cap and try again.
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		sc.Spec.Replicas = want
		_, err := scales.update(ctx, sc)
		if !apierrors.IsConflict(err) {
			return err
		}
		fresh, gerr := scales.get(ctx)
		if gerr != nil {
			return gerr
		}
		if fresh.Spec.Replicas != cur {
			// Someone else changed the count meanwhile: add by to theirs.
			cur = fresh.Spec.Replicas
			want = min(cur+by, limit)
			if want <= cur {
				return fmt.Errorf("%w (%d replicas, cap %d)", ErrAtCap, cur, limit)
			}
		}
		sc = fresh
		return err
	})
	if errors.Is(err, ErrAtCap) {
		return "", fmt.Errorf("%s: %s: %w", ActionScaleOut, w, err)
	}
	if err != nil {
		return "", fmt.Errorf("%s: update scale of %s to %d: %w", ActionScaleOut, w, want, err)
	}
	return fmt.Sprintf("scaled %s from %d to %d replicas (cap %d, cooldown %s)", w, cur, want, limit, cooldown), nil
}

type scaler struct {
	get    func(context.Context) (*autoscalingScale, error)
	update func(context.Context, *autoscalingScale) (*autoscalingScale, error)
}

func (k *Kube) scaler(w Workload) scaler {
	apps := k.client.AppsV1()
	if w.Kind == "StatefulSet" {
		c := apps.StatefulSets(w.Namespace)
		return scaler{
			get: func(ctx context.Context) (*autoscalingScale, error) {
				return c.GetScale(ctx, w.Name, metav1.GetOptions{})
			},
			update: func(ctx context.Context, s *autoscalingScale) (*autoscalingScale, error) {
				return c.UpdateScale(ctx, w.Name, s, metav1.UpdateOptions{})
			},
		}
	}
	c := apps.Deployments(w.Namespace)
	return scaler{
		get: func(ctx context.Context) (*autoscalingScale, error) {
			return c.GetScale(ctx, w.Name, metav1.GetOptions{})
		},
		update: func(ctx context.Context, s *autoscalingScale) (*autoscalingScale, error) {
			return c.UpdateScale(ctx, w.Name, s, metav1.UpdateOptions{})
		},
	}
}

// takeLease claims the workload's scale Lease for cooldown. Creating it, or
// updating an expired one at the resourceVersion read, is atomic on the API
// server: of many nodes racing, exactly one wins; the others get
// ErrCooldown naming the holder.
func (k *Kube) takeLease(ctx context.Context, w Workload, cooldown time.Duration, from, to int32) error {
	leases := k.client.CoordinationV1().Leases(w.Namespace)
	name := LeaseName(w)
	now := metav1.NewMicroTime(k.cfg.Now())
	secs := int32(max(cooldown/time.Second, 1))
	holder := k.cfg.NodeName
	ann := map[string]string{"vigil.dev/workload": w.Kind + "/" + w.Name, "vigil.dev/scaled": fmt.Sprintf("%d->%d", from, to)}
	spec := coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &secs, AcquireTime: &now, RenewTime: &now}
	l, err := leases.Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: w.Namespace, Annotations: ann}, Spec: spec}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("%s: %s: %w: another node took lease %s first", ActionScaleOut, w, ErrCooldown, name)
		}
		if err != nil {
			return fmt.Errorf("%s: create lease %s/%s: %w", ActionScaleOut, w.Namespace, name, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("%s: get lease %s/%s: %w", ActionScaleOut, w.Namespace, name, err)
	}
	if l.Spec.RenewTime != nil && l.Spec.LeaseDurationSeconds != nil {
		until := l.Spec.RenewTime.Add(time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second)
		if k.cfg.Now().Before(until) {
			who := ""
			if l.Spec.HolderIdentity != nil {
				who = *l.Spec.HolderIdentity
			}
			return fmt.Errorf("%s: %s: %w: scaled by %s at %s, next allowed after %s", ActionScaleOut, w, ErrCooldown,
				who, l.Spec.RenewTime.UTC().Format(time.RFC3339), until.UTC().Format(time.RFC3339))
		}
	}
	l.Spec = spec
	l.Annotations = ann
	if _, err := leases.Update(ctx, l, metav1.UpdateOptions{}); err != nil {
		if apierrors.IsConflict(err) {
			return fmt.Errorf("%s: %s: %w: another node renewed lease %s first", ActionScaleOut, w, ErrCooldown, name)
		}
		return fmt.Errorf("%s: update lease %s/%s: %w", ActionScaleOut, w.Namespace, name, err)
	}
	return nil
}

// Cordon marks this node unschedulable under repeated node-level pressure.
// It is registered only when Config.EnableCordon is set.
type Cordon struct{ k *Kube }

var (
	_ remediate.Action     = (*Cordon)(nil)
	_ remediate.NodeScoped = (*Cordon)(nil)
)

func (*Cordon) Name() string { return ActionCordon }

// NodeScoped tells the executor that cordon acts on the node, so it runs on
// node-level findings (remediate.NodeScoped).
func (*Cordon) NodeScoped() bool { return true }

func (a *Cordon) Do(ctx context.Context, req remediate.Request) (remediate.Result, error) {
	if req.Target.Kind != "node" && req.Target.Key() != rules.NodeTarget {
		return remediate.Result{}, fmt.Errorf("%s: target %s is not the node", ActionCordon, req.Target.Key())
	}
	node := a.k.cfg.NodeName
	if req.DryRun {
		return remediate.Result{Detail: "would cordon node " + node}, nil
	}
	patch := []byte(`{"spec":{"unschedulable":true}}`)
	if _, err := a.k.client.CoreV1().Nodes().Patch(ctx, node, types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return remediate.Result{}, fmt.Errorf("%s: node %s: %w", ActionCordon, node, err)
	}
	return remediate.Result{Detail: "cordoned node " + node}, nil
}

type autoscalingScale = autoscalingv1.Scale

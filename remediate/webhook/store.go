package webhook

import (
	"maps"
	"sort"
	"sync"
	"time"

	"github.com/vigil-agent/vigil/collectors"
)

// StoreOptions bound how long alerts stay visible.
type StoreOptions struct {
	// ResolvedRetention keeps a resolved alert in Active for this long after
	// it resolved, so that rules see the resolution (0 = 5 minutes).
	ResolvedRetention time.Duration
	// FiringTTL drops a firing alert that was neither re-delivered nor
	// resolved for this long, in case the resolved notification was lost
	// (0 = 6 hours; Alertmanager re-sends every repeat_interval, 4 h by
	// default).
	FiringTTL time.Duration
	// DedupeWindow is how long a delivery key (fingerprint, status, startsAt)
	// is remembered to recognise a repeated delivery (0 = 24 hours).
	DedupeWindow time.Duration
	// MaxAlerts bounds the alerts held (0 = 10000): a sender cannot grow
	// the agent's memory without bound; alerts past the cap are dropped
	// (counted as neither accepted nor duplicate) until others expire.
	MaxAlerts int
}

// AlertStore holds the external alerts received through the inbound webhook.
// It is safe for concurrent use: the handler writes, the agent reads once per
// tick with Active.
type AlertStore struct {
	opts StoreOptions

	mu     sync.Mutex
	alerts map[string]*storedAlert // by fingerprint
	seen   map[deliveryKey]time.Time
}

type storedAlert struct {
	alert      collectors.Alert
	endsAt     time.Time
	resolvedAt time.Time // zero while firing
	lastSeen   time.Time
}

// deliveryKey identifies one notification of one alert: Alertmanager repeats
// exactly this on a retry or a repeat_interval re-send.
type deliveryKey struct {
	fingerprint, status string
	startsAt            int64
}

// NewAlertStore returns an empty store.
func NewAlertStore(opts StoreOptions) *AlertStore {
	if opts.ResolvedRetention <= 0 {
		opts.ResolvedRetention = 5 * time.Minute
	}
	if opts.FiringTTL <= 0 {
		opts.FiringTTL = 6 * time.Hour
	}
	if opts.DedupeWindow <= 0 {
		opts.DedupeWindow = 24 * time.Hour
	}
	if opts.MaxAlerts <= 0 {
		opts.MaxAlerts = 10000
	}
	return &AlertStore{opts: opts, alerts: map[string]*storedAlert{}, seen: map[deliveryKey]time.Time{}}
}

// apply records the alerts of one delivery and reports how many were new
// notifications and how many repeated one already applied. Applying the same
// delivery twice leaves the store as applying it once.
func (s *AlertStore) apply(alerts []amAlert, now time.Time) (accepted, duplicates int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(now)
	for i := range alerts {
		a := &alerts[i]
		key := deliveryKey{a.Fingerprint, a.Status, a.StartsAt.UnixNano()}
		cur := s.alerts[a.Fingerprint]
		if cur == nil && len(s.alerts) >= s.opts.MaxAlerts {
			continue // full: a new alert is dropped, known ones still update
		}
		if _, known := s.seen[key]; !known && len(s.seen) >= 4*s.opts.MaxAlerts {
			continue
		}
		if _, dup := s.seen[key]; dup {
			duplicates++
			s.seen[key] = now
			if cur != nil && a.Status == "firing" && cur.resolvedAt.IsZero() {
				cur.lastSeen = now
			}
			continue
		}
		s.seen[key] = now
		accepted++
		sameEpisode := cur != nil && cur.alert.StartsAt.Equal(a.StartsAt)
		if a.Status == "firing" && sameEpisode && !cur.resolvedAt.IsZero() {
			// A late firing notification of an episode already resolved.
			continue
		}
		st := &storedAlert{alert: toAlert(a), endsAt: a.EndsAt, lastSeen: now}
		if a.Status == "resolved" {
			st.resolvedAt = now
		}
		s.alerts[a.Fingerprint] = st
	}
	return accepted, duplicates
}

// Active returns the alerts firing at now, and those resolved less than
// ResolvedRetention ago (Status "resolved"), sorted by fingerprint. Target is
// the alert's "cgroup" label when it has one; Match maps the other identity
// labels. The result is the caller's to keep.
func (s *AlertStore) Active(now time.Time) []collectors.Alert {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(now)
	out := make([]collectors.Alert, 0, len(s.alerts))
	for _, st := range s.alerts {
		a := st.alert
		a.Labels = maps.Clone(a.Labels)
		a.Annotations = maps.Clone(a.Annotations)
		if !st.resolvedAt.IsZero() {
			a.Status = "resolved"
		}
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Fingerprint < out[j].Fingerprint })
	return out
}

// pruneLocked resolves firing alerts whose endsAt passed or that went stale,
// and forgets resolved alerts and delivery keys past their retention.
func (s *AlertStore) pruneLocked(now time.Time) {
	for fp, st := range s.alerts {
		if st.resolvedAt.IsZero() {
			switch {
			case !st.endsAt.IsZero() && st.endsAt.Before(now):
				st.resolvedAt = st.endsAt
			case now.Sub(st.lastSeen) > s.opts.FiringTTL:
				st.resolvedAt = now
			}
		}
		if !st.resolvedAt.IsZero() && now.Sub(st.resolvedAt) > s.opts.ResolvedRetention {
			delete(s.alerts, fp)
		}
	}
	for k, at := range s.seen {
		if now.Sub(at) > s.opts.DedupeWindow {
			delete(s.seen, k)
		}
	}
}

func toAlert(a *amAlert) collectors.Alert {
	return collectors.Alert{
		Name:        a.Labels["alertname"],
		Fingerprint: a.Fingerprint,
		Status:      a.Status,
		Labels:      maps.Clone(a.Labels),
		Annotations: maps.Clone(a.Annotations),
		StartsAt:    a.StartsAt,
		Target:      a.Labels["cgroup"],
	}
}

// nodeLabels name the node an alert is about, as Kubernetes (node) and
// node_exporter (nodename) label it.
var nodeLabels = []string{"node", "nodename"}

// Match keeps the alerts that concern this node and maps each to a cgroup by
// its labels, in order of precedence: cgroup (a path), container_id, pod_uid,
// namespace+pod (the pod's own cgroup, not a container's), unit. An alert
// with none of these labels is node-wide (Target ""). Alertmanager may send
// cluster-wide alerts to every node, so an alert is left out when its node
// or nodename label names another node than node (when node is not empty),
// or when its labels name a workload that is not on this node.
func Match(alerts []collectors.Alert, cgroups []collectors.CgroupSample, node string) []collectors.Alert {
	out := make([]collectors.Alert, 0, len(alerts))
	for _, a := range alerts {
		if node != "" && !forNode(a.Labels, node) {
			continue
		}
		target, targeted := matchTarget(a.Labels, cgroups)
		if targeted && target == "" {
			continue
		}
		a.Target = target
		out = append(out, a)
	}
	return out
}

func forNode(labels map[string]string, node string) bool {
	for _, l := range nodeLabels {
		if v := labels[l]; v != "" && v != node {
			return false
		}
	}
	return true
}

func matchTarget(labels map[string]string, cgroups []collectors.CgroupSample) (target string, targeted bool) {
	if p := labels["cgroup"]; p != "" {
		for i := range cgroups {
			if cgroups[i].Path == p {
				return p, true
			}
		}
		return "", true
	}
	find := func(match func(id *collectors.Identity) bool) string {
		best := ""
		for i := range cgroups {
			id := &cgroups[i].Identity
			if !match(id) {
				continue
			}
			// Prefer the pod's own cgroup over its containers'.
			if best == "" || id.Kind == "pod" {
				best = cgroups[i].Path
			}
		}
		return best
	}
	switch {
	case labels["container_id"] != "":
		want := labels["container_id"]
		return find(func(id *collectors.Identity) bool { return id.ContainerID == want }), true
	case labels["pod_uid"] != "":
		want := labels["pod_uid"]
		return find(func(id *collectors.Identity) bool { return id.PodUID == want && id.ContainerID == "" }), true
	case labels["namespace"] != "" && labels["pod"] != "":
		ns, pod := labels["namespace"], labels["pod"]
		return find(func(id *collectors.Identity) bool {
			return id.Namespace == ns && id.Pod == pod && id.ContainerID == ""
		}), true
	case labels["unit"] != "":
		want := labels["unit"]
		return find(func(id *collectors.Identity) bool { return id.Unit == want }), true
	}
	return "", false
}

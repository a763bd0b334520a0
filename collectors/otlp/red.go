package otlp

import (
	"math"
	"sort"
	"time"
)

// ServiceRED is the request rate, error ratio and latency of one service on
// this node over the sliding window: the signals a rule can combine with
// memory ("restart when the error ratio is over 50% while memory is at the
// limit").
type ServiceRED struct {
	// Service is the resource's service.name ("unknown_service" if unset).
	Service string `json:"service"`
	// Workload identity from the k8s.* resource attributes, when the
	// application sets them (OTel SDK or the collector's k8sattributes).
	Namespace string `json:"namespace,omitempty"`
	Pod       string `json:"pod,omitempty"`
	PodUID    string `json:"pod_uid,omitempty"`
	Container string `json:"container,omitempty"`
	// ContainerID and PID are the container.id and process.pid resource
	// attributes (OTel SDK resource detectors), which join the service to
	// its cgroup when the k8s.* ones are absent.
	ContainerID string `json:"container_id,omitempty"`
	PID         int64  `json:"pid,omitempty"`

	Requests uint64 `json:"requests"`
	Errors   uint64 `json:"errors"`
	// RequestsPerSecond is Requests over the covered part of the window.
	RequestsPerSecond float64 `json:"requests_per_second"`
	// ErrorRatio is Errors / Requests (0 without requests).
	ErrorRatio float64 `json:"error_ratio"`
	// P50/P99LatencySeconds are estimated from a log-bucketed histogram
	// (within about 5%).
	P50LatencySeconds float64 `json:"p50_latency_seconds"`
	P99LatencySeconds float64 `json:"p99_latency_seconds"`
	// WindowSeconds is the span of time the figures cover.
	WindowSeconds float64 `json:"window_seconds"`
}

// serviceKey identifies a service instance on the node.
type serviceKey struct {
	service, namespace, pod, podUID, container string
	containerID                                string
	pid                                        int64
}

// Latency histogram: log buckets of ratio growth from minLatency; bucket 0
// holds everything at or below minLatency, the last everything above.
const (
	minLatency = 50 * time.Microsecond
	growth     = 1.1
	nBuckets   = 160 // up to ~ 50µs * 1.1^158 ≈ 170 s
)

var logGrowth = math.Log(growth)

func bucketOf(d time.Duration) int {
	if d <= minLatency {
		return 0
	}
	b := 1 + int(math.Log(float64(d)/float64(minLatency))/logGrowth)
	return min(b, nBuckets-1)
}

// bucketUpper is the upper bound of bucket b, in seconds.
func bucketUpper(b int) float64 {
	return minLatency.Seconds() * math.Pow(growth, float64(b))
}

// slot aggregates the spans received during one slot of the window.
type slot struct {
	start    time.Time
	requests uint64
	errors   uint64
	hist     [nBuckets]uint32
}

// series is the sliding window of one service.
type series struct {
	slots []slot // ring, indexed by slot number modulo len
	first time.Time
}

// window holds the series of all services.
type window struct {
	size, step time.Duration
	services   map[serviceKey]*series
	start      time.Time // when the receiver started (coverage at startup)
	// max bounds the services tracked (and so the vigil_service_* series);
	// spans of services past it are dropped and counted in overflow.
	max      int
	overflow uint64
}

func newWindow(size, step time.Duration, now time.Time) *window {
	return &window{size: size, step: step, services: map[serviceKey]*series{}, start: now}
}

func (w *window) slotFor(s *series, now time.Time) *slot {
	n := int(now.UnixNano() / int64(w.step))
	sl := &s.slots[n%len(s.slots)]
	st := time.Unix(0, int64(n)*int64(w.step))
	if !sl.start.Equal(st) {
		*sl = slot{start: st}
	}
	return sl
}

// add records one request of key received at now.
func (w *window) add(key serviceKey, now time.Time, latency time.Duration, isErr bool) {
	s := w.services[key]
	if s == nil {
		if w.max > 0 && len(w.services) >= w.max {
			w.overflow++
			return
		}
		s = &series{slots: make([]slot, int(w.size/w.step)+1), first: now}
		w.services[key] = s
	}
	sl := w.slotFor(s, now)
	sl.requests++
	if isErr {
		sl.errors++
	}
	sl.hist[bucketOf(latency)]++
}

// red computes every service's figures at now and forgets services with no
// request in the window.
func (w *window) red(now time.Time) []ServiceRED {
	var out []ServiceRED
	from := now.Add(-w.size)
	for key, s := range w.services {
		var req, errs uint64
		var hist [nBuckets]uint64
		for i := range s.slots {
			sl := &s.slots[i]
			if sl.requests == 0 || !sl.start.Add(w.step).After(from) || sl.start.After(now) {
				continue
			}
			req += sl.requests
			errs += sl.errors
			for b, n := range sl.hist {
				hist[b] += uint64(n)
			}
		}
		if req == 0 {
			delete(w.services, key)
			continue
		}
		covered := w.size
		if since := now.Sub(w.start); since < covered {
			covered = max(since, w.step)
		}
		r := ServiceRED{Service: key.service, Namespace: key.namespace, Pod: key.pod, PodUID: key.podUID, Container: key.container,
			ContainerID: key.containerID, PID: key.pid,
			Requests: req, Errors: errs, WindowSeconds: covered.Seconds(),
			RequestsPerSecond: float64(req) / covered.Seconds(), ErrorRatio: float64(errs) / float64(req),
			P50LatencySeconds: quantile(hist[:], req, 0.50), P99LatencySeconds: quantile(hist[:], req, 0.99)}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Service != b.Service {
			return a.Service < b.Service
		}
		return a.Namespace+"/"+a.Pod+"/"+a.Container < b.Namespace+"/"+b.Pod+"/"+b.Container
	})
	return out
}

// quantile returns the upper bound of the bucket holding the q-th request.
func quantile(hist []uint64, total uint64, q float64) float64 {
	rank := uint64(math.Ceil(q * float64(total)))
	var seen uint64
	for b, n := range hist {
		seen += n
		if seen >= rank && n > 0 {
			return bucketUpper(b)
		}
	}
	return bucketUpper(len(hist) - 1)
}

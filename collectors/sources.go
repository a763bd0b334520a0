package collectors

import "math"

// LogMatch is one container log pattern's cumulative count for a cgroup.
type LogMatch struct {
	Pattern string `json:"pattern"`
	Count   uint64 `json:"count"`
}

// ServiceSample is the request rate, error ratio and latency of the
// service(s) running in a cgroup, from the spans they sent to vigil's OTLP
// receiver over its window. Several services in one cgroup are summed (p99:
// the largest).
type ServiceSample struct {
	Present bool `json:"present"`
	// Name is the service.name (the first in name order when several).
	Name              string  `json:"name,omitempty"`
	Requests          uint64  `json:"requests"`
	Errors            uint64  `json:"errors"`
	RequestsPerSecond float64 `json:"requests_per_second"`
	ErrorRatio        float64 `json:"error_ratio"`
	P99LatencySeconds float64 `json:"p99_latency_seconds"`
}

func serviceValue(c *CgroupSample, v float64) float64 {
	if !c.Service.Present {
		return math.NaN()
	}
	return v
}

func logMatchesTotal(c *CgroupSample) float64 {
	if c.LogMatches == nil {
		return math.NaN()
	}
	var n uint64
	for _, m := range c.LogMatches {
		n += m.Count
	}
	return float64(n)
}

// LogMatchCount is the count of one pattern in c.LogMatches: NaN when the
// cgroup has no log counters or none for that pattern (it is not
// configured).
func LogMatchCount(c *CgroupSample, pattern string) float64 {
	for i := range c.LogMatches {
		if c.LogMatches[i].Pattern == pattern {
			return float64(c.LogMatches[i].Count)
		}
	}
	return math.NaN()
}

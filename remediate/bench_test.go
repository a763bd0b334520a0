package remediate

import (
	"context"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/rules"
	"github.com/vigil-agent/vigil/test/cgtest"
)

// probe wraps an action and reports when its Do returned.
type probe struct {
	Action
	applied chan time.Time
}

func (p *probe) Name() string { return "probe-" + p.Action.Name() }

func (p *probe) Do(ctx context.Context, req Request) (Result, error) {
	res, err := p.Action.Do(ctx, req)
	p.applied <- time.Now()
	return res, err
}

func (p *probe) Release(ctx context.Context, req Request) (string, error) {
	return p.Action.(Releaser).Release(ctx, req)
}

// BenchmarkDecisionToFirstAction measures, on a real cgroup, the time from
// Handle receiving an enforce finding to its first action applied: safety,
// cgroup resolution, evidence (top processes), the fsync'd intent record,
// and the write of cpu.max (v2) / cpu.cfs_quota_us (v1). Goal: p99 ≤ 50 ms.
func BenchmarkDecisionToFirstAction(b *testing.B) {
	g := cgtest.New(b, "memory", "cpu")
	cgtest.Start(b, g.Command("sleep", "600"))
	x := newExecutor(b, Config{Safety: acting(g), Resolver: locate(g)}, openJournal(b), nil)
	p := &probe{Action: &ThrottleCPU{}, applied: make(chan time.Time, 1)}
	x.Register(p)
	x.Observe(newSampler().snap(b, g))
	var lat []time.Duration
	i := 0
	for b.Loop() {
		i++
		f := finding("bench-"+strconv.Itoa(i), g, rules.Firing, rules.ActionStep{Action: p.Name(), Params: map[string]any{"cpus": 0.5}})
		t0 := time.Now()
		x.Handle([]rules.Finding{f})
		lat = append(lat, (<-p.applied).Sub(t0))
		b.StopTimer()
		f.State = rules.Resolved
		x.Handle([]rules.Finding{f})
		for x.activeCount() > 0 {
			time.Sleep(time.Millisecond)
		}
		b.StartTimer()
	}
	sort.Slice(lat, func(a, c int) bool { return lat[a] < lat[c] })
	q := func(f float64) float64 { return float64(lat[int(f*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(1), "max-ms")
}

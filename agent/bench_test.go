package agent

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/test/cgtest"
)

// BenchmarkTick measures one full tick of the real agent on this host with
// n extra real cgroups: discovery is excluded, the tick is sweep + node +
// publish + rule evaluation (shipped rules) + remediation bookkeeping.
func BenchmarkTick(b *testing.B) {
	for _, n := range []int{0, 500} {
		b.Run(fmt.Sprintf("extra_cgroups=%d", n), func(b *testing.B) {
			if n > 0 {
				parent := cgtest.New(b)
				for i := 0; i < n; i++ {
					parent.Child(b, fmt.Sprintf("c%04d", i))
				}
			}
			cfg := testConfig(b)
			cfg.DiscoveryInterval = time.Hour
			a, err := New(Options{Config: cfg, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			s, err := newSampler(cfg, a.log)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.close() })
			a.sampler = s
			if err := a.buildPipeline(cfg, s.hierarchy()); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() {
				if a.pipeline.executor != nil {
					a.pipeline.executor.Close()
				}
				if a.pipeline.journal != nil {
					a.pipeline.journal.Close()
				}
			})
			now := time.Now()
			a.tick(now, nil) // discovery
			tracked := len(a.snaps.latest().Cgroups)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				now = now.Add(cfg.Tick)
				a.tick(now, nil)
			}
			b.ReportMetric(float64(tracked), "cgroups")
		})
	}
}

package rules

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/collectors"
)

// benchRules returns n rules of the shapes the shipped set uses: plain
// comparisons, history functions, node signals and alerts.
func benchRules(tb testing.TB, n int) *RuleSet {
	tb.Helper()
	shapes := []string{
		`working_set_bytes / limit_bytes > 0.%d && growth_bytes_per_second > 0 && seconds_to_limit < 120`,
		`psi.memory.some_avg10 > 2%d && refault_rate > 1000`,
		`rate(stat.pgmajfault, "1m") > 10%d`,
		`predict_linear(working_set_bytes, "5m", "2m") > limit_bytes * 0.9%d`,
		`delta(events.oom_kill) > 0 || increase(events.oom_kill, "10m") >= %d`,
		`avg_over(psi.memory.some_avg10, "2m") > %d && node.psi.memory.some_avg10 > 10`,
		`usage_ratio > 0.%d || alert("KubeMemoryHigh")`,
	}
	var b strings.Builder
	b.WriteString("rules:\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  - name: r%d\n    for: 30s\n    condition: '%s'\n", i, fmt.Sprintf(shapes[i%len(shapes)], i%10))
	}
	set, err := Load(map[string][]byte{"bench.yaml": []byte(b.String())}, LoadOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	return set
}

func benchSnapshot(n int) *collectors.Snapshot {
	s := &collectors.Snapshot{Node: collectors.NodeSample{MemTotalBytes: 8 << 30, MemAvailableBytes: 4 << 30}}
	for i := 0; i < n; i++ {
		s.Cgroups = append(s.Cgroups, collectors.CgroupSample{
			Path:     fmt.Sprintf("/kubepods/burstable/pod%d/c%d", i, i),
			Identity: collectors.Identity{Kind: "container", QoS: "burstable", Labels: map[string]string{"app": fmt.Sprint(i % 7)}},
			Memory:   collectors.CgroupMemory{UsageBytes: 100 << 20, EffectiveLimitBytes: 512 << 20},
			Derived:  collectors.Derived{WorkingSetBytes: 90 << 20, UsageRatio: 90.0 / 512, SecondsToLimit: collectors.Float(1e9)},
		})
	}
	return s
}

// BenchmarkEvaluate is the target: 50 rules x 1000 targets per tick.
func BenchmarkEvaluate(b *testing.B) {
	set := benchRules(b, 50)
	e := NewEngine(set, EngineOptions{})
	snap := benchSnapshot(1000)
	now := time.Unix(1_700_000_000, 0)
	// Warm up: fill the history rings.
	for i := 0; i < 200; i++ {
		tickValues(snap, i)
		e.Evaluate(snap, now)
		now = now.Add(time.Second)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		tickValues(snap, i)
		e.Evaluate(snap, now)
		now = now.Add(time.Second)
	}
	// CPU time per tick, GC included: on a shared, loaded machine wall
	// time overstates the cost.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// tickValues moves the signals a little each tick, as a live node would.
func tickValues(s *collectors.Snapshot, i int) {
	for j := range s.Cgroups {
		c := &s.Cgroups[j]
		c.Derived.WorkingSetBytes = uint64(90<<20 + (i+j)%64*4096)
		c.Stat.Pgmajfault += uint64(j % 3)
		c.Pressure.Some.Avg10 = float64((i + j) % 5)
	}
	s.Node.MemoryPressure.Some.Avg10 = float64(i % 20)
}

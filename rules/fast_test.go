package rules

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/collectors"
)

// TestNativeMatchesCEL evaluates each expression with the native evaluator
// and with the CEL interpreter on random signal values (NaN and ±Inf
// included) and requires the same result, errors included.
func TestNativeMatchesCEL(t *testing.T) {
	exprs := []string{
		`usage_ratio > 0.9`,
		`usage_ratio >= 0.9 && growth_bytes_per_second > 0 || seconds_to_limit < 120`,
		`!(usage_ratio < 0.5) && limit_bytes < inf`,
		`working_set_bytes / limit_bytes > 0.5 == true`,
		`usage_ratio == 0.5 || usage_ratio != refault_rate`,
		`-refault_rate + 2 * usage_ratio - 1 <= 3 / usage_ratio`,
		`usage_ratio > 0.5 ? refault_rate > 10 : !(refault_rate > 10)`,
		`(usage_ratio > 0.5) == (refault_rate > 10)`,
		`rate(working_set_bytes, "30s") > 0 || delta(events.oom_kill) >= 1`,
		`predict_linear(working_set_bytes, "1m", "1m") >= limit_bytes && node.psi.memory.some_avg10 > 0`,
		`alert("X") || target_alert("Y") && usage_ratio > 0.1`,
		`true && !false`,
		// outside the native subset: runs on CEL (math ext, ?: inside a comparison)
		`math.greatest(usage_ratio, refault_rate) > 0.5`,
		`(usage_ratio > 0.5 ? usage_ratio : refault_rate) > 0.7`,
	}
	special := []float64{math.NaN(), math.Inf(1), math.Inf(-1), 0, 0.5, 1}
	rnd := rand.New(rand.NewPCG(1, 2))
	val := func() float64 {
		if rnd.IntN(4) == 0 {
			return special[rnd.IntN(len(special))]
		}
		return rnd.Float64() * 2
	}
	nativeCount := 0
	for _, src := range exprs {
		cond, err := compileCondition(src, TargetCgroup, DefaultCostLimit, DefaultHistorySize)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		if cond.native == nil {
			continue
		}
		nativeCount++
		interp := *cond
		interp.native = nil
		target := newSeries(len(collectors.CgroupSignals))
		node := newSeries(len(collectors.NodeSignals))
		target.rings = make([]*ring, len(target.vals))
		for i := range target.rings {
			target.rings[i] = newRing(8, 0, collectors.CgroupSignals[i].Counter)
		}
		alerts := []collectors.Alert{{Name: "X", Target: "/other"}, {Name: "Y", Target: "/a"}}
		for n := 0; n < 2000; n++ {
			for i := range target.vals {
				target.set(i, val())
			}
			for i := range node.vals {
				node.set(i, val())
			}
			now := int64(n) * int64(time.Second)
			for _, r := range target.rings {
				r.push(now-int64(time.Second), val())
			}
			mk := func() *evalContext {
				return &evalContext{target: target, node: node, now: now, path: "/a", alerts: alerts[:rnd.IntN(3)]}
			}
			c1, c2 := mk(), mk()
			c2.alerts = c1.alerts
			got, gerr := cond.eval(c1)
			want, werr := interp.eval(c2)
			if got != want || (gerr == nil) != (werr == nil) {
				t.Fatalf("%s: native %v (err %v), CEL %v (err %v); values %v", src, got, gerr, want, werr, target.vals[:20])
			}
			if c1.alert != c2.alert {
				t.Fatalf("%s: native alert %q, CEL %q", src, c1.alert, c2.alert)
			}
		}
	}
	if nativeCount < len(exprs)-2 {
		t.Errorf("only %d of %d expressions run natively", nativeCount, len(exprs))
	}
}

// TestNoPerTickAllocationGrowth: once warm, a tick allocates nothing on the
// native path, however long the engine runs.
func TestNoPerTickAllocationGrowth(t *testing.T) {
	set := benchRules(t, 50)
	e := NewEngine(set, EngineOptions{})
	snap := benchSnapshot(100)
	now := time.Unix(1_700_000_000, 0)
	i := 0
	tick := func() {
		tickValues(snap, i)
		e.Evaluate(snap, now)
		now = now.Add(time.Second)
		i++
	}
	for j := 0; j < 300; j++ {
		tick()
	}
	early := testing.AllocsPerRun(50, tick)
	for j := 0; j < 1000; j++ {
		tick()
	}
	late := testing.AllocsPerRun(50, tick)
	if late > early+1 {
		t.Errorf("allocations per tick grew from %v to %v", early, late)
	}
	if late > 20 {
		t.Errorf("%v allocations per tick of 50 rules x 100 cgroups; want only the findings'", late)
	}
}

// BenchmarkEvaluateCEL is BenchmarkEvaluate with the native evaluator off:
// every condition runs on the CEL interpreter.
func BenchmarkEvaluateCEL(b *testing.B) {
	set := benchRules(b, 50)
	for _, c := range set.conditions() {
		c.native = nil
	}
	e := NewEngine(set, EngineOptions{})
	snap := benchSnapshot(1000)
	now := time.Unix(1_700_000_000, 0)
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
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

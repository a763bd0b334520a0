package journal

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/rules"
)

// samples makes n samples a second apart growing by step bytes, with
// memory.high set from index highFrom on (Unlimited before).
func growing(t0 time.Time, n int, step uint64, limit, high collectors.Bytes, highFrom int) []Sample {
	out := make([]Sample, n)
	for i := range out {
		h := collectors.Bytes(collectors.Unlimited)
		if i >= highFrom {
			h = high
		}
		out[i] = Sample{Time: t0.Add(time.Duration(i) * time.Second), WorkingSetBytes: uint64(i+1) * step, LimitBytes: limit, HighBytes: h,
			PSISomeAvg10: float64(i)}
	}
	return out
}

func TestWriteHTML(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	target := rules.Target{Kind: "cgroup", Path: "/kubepods/pod1/c1"}
	tests := []struct {
		name    string
		rec     Record
		series  []string // drawn
		absent  []string // not drawn
		markers int
		chart   bool
	}{
		{
			name: "three steps, memory.high set by the first",
			rec: Record{ID: "r1", Kind: KindRemediation, Time: t0, Target: target, Rule: "leak", Outcome: OutcomeOOMAvoided,
				Evidence: Evidence{Signals: map[string]float64{"working_set_bytes": 480 << 20, "seconds_to_limit": 41.5},
					Samples: growing(t0, 20, 24<<20, 512<<20, 400<<20, 10)},
				Steps: []Step{{Index: 0, Action: "throttle-memory", Intent: t0.Add(10 * time.Second), Finished: t0.Add(10*time.Second + time.Millisecond), Result: "applied", Detail: "memory.high max -> 400MiB"},
					{Index: 1, Action: "reclaim", Intent: t0.Add(14 * time.Second), Result: "error", Error: "busy"},
					{Index: 2, Action: "throttle-memory:release", Intent: t0.Add(30 * time.Second), Result: "released"}},
				Measurements: []Measurement{{After: 15 * time.Second, Present: true, Sample: growing(t0.Add(25*time.Second), 1, 300<<20, 512<<20, 400<<20, 0)[0], Outcome: OutcomeOOMAvoided}}},
			series: []string{"working_set", "limit", "memory_high", "psi_some"}, markers: 3, chart: true,
		},
		{
			name: "miss without limit, with the kernel's report",
			rec: Record{ID: "r2", Kind: KindOOMMiss, Time: t0, Target: target, Outcome: OutcomeOOMKilled,
				Evidence: Evidence{Samples: growing(t0, 5, 1<<20, collectors.Unlimited, collectors.Unlimited, 99),
					KernelOOMKills: []collectors.KernelOOMKill{{PID: 42, Comm: "java", Constraint: "CONSTRAINT_MEMCG", Report: []string{"java invoked oom-killer: <script>"}}}}},
			series: []string{"working_set", "psi_some"}, absent: []string{"limit", "memory_high"}, chart: true,
		},
		{
			name: "no samples",
			rec:  Record{ID: "r3", Kind: KindRefusal, Time: t0, Target: target, Outcome: OutcomeRefused},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := tt.rec.WriteHTML(&b); err != nil {
				t.Fatal(err)
			}
			html := b.String()
			if dir := os.Getenv("VIGIL_REPORT_DIR"); dir != "" { // to look at them
				_ = os.WriteFile(filepath.Join(dir, tt.rec.ID+".html"), b.Bytes(), 0o644)
			}
			if got := strings.Contains(html, `<svg id="chart"`); got != tt.chart {
				t.Errorf("chart drawn = %v, want %v", got, tt.chart)
			}
			for _, s := range tt.series {
				if !regexp.MustCompile(`data-series="` + s + `" d="M[0-9.]+,[0-9.]+ L`).MatchString(html) {
					t.Errorf("series %s not drawn", s)
				}
			}
			for _, s := range tt.absent {
				if strings.Contains(html, `data-series="`+s+`"`) {
					t.Errorf("series %s drawn, want absent", s)
				}
			}
			if got := strings.Count(html, `class="step-marker"`); got != tt.markers {
				t.Errorf("%d step markers, want %d", got, tt.markers)
			}
			if strings.Contains(html, "<script") {
				t.Errorf("report has a script (unescaped kernel line?)")
			}
			if !strings.Contains(html, "outcome: "+tt.rec.Outcome) {
				t.Errorf("outcome %s not shown", tt.rec.Outcome)
			}
		})
	}
}

package agent

import (
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/test/cgtest"
	"github.com/vigil-agent/vigil/test/testenv"
)

// TestKeepsTickingUnderSiblingPressure runs the agent while a sibling test
// cgroup is driven into its limit again and again (reclaim, stalls and OOM
// kills, one allocator after another): the agent keeps ticking at its
// interval, its HTTP surface answers, and it stays ready.
func TestKeepsTickingUnderSiblingPressure(t *testing.T) {
	g := cgtest.New(t)
	setLimit(t, g, "67108864") // 64 MiB
	cfg := testConfig(t)
	a := startAgent(t, Options{Config: cfg, Logger: slog.New(slog.DiscardHandler)})
	base := "http://" + a.Addr()
	testenv.Eventually(t, 10*time.Second, "ready", func() bool { code, _ := get(t, base+"/readyz"); return code == http.StatusOK })

	stop := make(chan struct{})
	done := make(chan int)
	go func() {
		runs := 0
		defer func() { done <- runs }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			// 96 MiB into 64: reclaim, stalls, then the kernel OOM kill.
			cmd := g.Allocator(cgtest.AllocSpec{TotalMiB: 96, StepMiB: 16, Interval: 5 * time.Millisecond, Hold: 200 * time.Millisecond})
			if err := cmd.Run(); err == nil {
				t.Errorf("allocator of 96 MiB under a 64 MiB limit was not killed")
			}
			runs++
		}
	}()

	const window = 4 * time.Second
	var stamps []float64
	var maxGap float64
	end := time.Now().Add(window)
	for time.Now().Before(end) {
		_, body := get(t, base+"/metrics")
		v, ok := metricValue(body, "vigil_last_tick_timestamp_seconds", "")
		if ok && (len(stamps) == 0 || v != stamps[len(stamps)-1]) {
			if len(stamps) > 0 {
				maxGap = max(maxGap, v-stamps[len(stamps)-1])
			}
			stamps = append(stamps, v)
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	runs := <-done
	_, body := get(t, base+"/metrics")
	overruns, _ := metricValue(body, "vigil_tick_overruns_total", "")
	t.Logf("%d OOM-killed allocators in the sibling over %v: %d distinct ticks seen, largest gap %.3fs, %v tick overruns", runs, window, len(stamps), maxGap, overruns)
	if runs == 0 {
		t.Fatal("no pressure was generated")
	}
	// Tick is 100ms: 4s should show ~40 ticks; the bound only catches a
	// stalled loop, not a slow machine.
	if len(stamps) < 10 || maxGap > 2 {
		t.Errorf("the agent did not keep ticking under pressure: %d ticks seen, largest gap %.3fs", len(stamps), maxGap)
	}
	if code, _ := get(t, base+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz = %d under pressure", code)
	}
}

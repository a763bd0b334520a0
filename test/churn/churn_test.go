// Package churn runs the agent in-process while thousands of cgroups are
// created and deleted under it, with kernel notifications registered on
// them, and checks that file descriptors, goroutines, heap and metric
// series return to their baseline and that vanished cgroups cause no error
// spam.
package churn

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/agent"
	"github.com/vigil-agent/vigil/agent/config"
	"github.com/vigil-agent/vigil/test/cgtest"
)

var (
	long        = flag.Bool("long", false, "10 000 cgroups, then a soak (-churn.soak)")
	total       = flag.Int("churn.cgroups", 0, "cgroups to create and delete (0: 2000, or 10000 with -long)")
	soak        = flag.Duration("churn.soak", 30*time.Minute, "with -long: how long to keep churning after the 10 000")
	heapProfile = flag.String("churn.heapprofile", "", "write a heap profile here once the churn is over (what is left)")
)

func TestMain(m *testing.M) { cgtest.Main(m) }

// maxVanished is the rules engine's default bound on vanished targets kept
// for their grace period (rules.EngineOptions.MaxVanished).
const maxVanished = 1000

// warnCounter is a slog handler that keeps warn+ records (and drops the
// rest, the agent is chatty at debug).
type warnCounter struct {
	mu    sync.Mutex
	warns []string
}

func (w *warnCounter) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (w *warnCounter) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	r.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
	w.mu.Lock()
	w.warns = append(w.warns, b.String())
	w.mu.Unlock()
	return nil
}
func (w *warnCounter) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnCounter) WithGroup(string) slog.Handler      { return w }

func (w *warnCounter) since(n int) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.warns[n:]...)
}

func (w *warnCounter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.warns)
}

// usage is what must return to baseline.
type usage struct {
	fds, goroutines int
	heap            uint64 // HeapAlloc after GC
	series          int    // /metrics sample lines
	cgroupSeries    int    // of them, vigil_cgroup_*
	tracked         float64
	watched         float64
	ruleTargets     float64 // vigil_rule_targets: the rules engine's per-target state
}

func (u usage) String() string {
	return fmt.Sprintf("fds %d, goroutines %d, heap %.1f MiB, series %d (cgroup %d), tracked cgroups %.0f, watched %.0f, rule targets %.0f",
		u.fds, u.goroutines, float64(u.heap)/(1<<20), u.series, u.cgroupSeries, u.tracked, u.watched, u.ruleTargets)
}

func measure(t *testing.T, base string) usage {
	t.Helper()
	var u usage
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	u.fds = len(ents)
	u.goroutines = runtime.NumGoroutine()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	u.heap = ms.HeapAlloc
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		u.series++
		if strings.HasPrefix(line, "vigil_cgroup_") {
			u.cgroupSeries++
		}
		if v, ok := strings.CutPrefix(line, "vigil_cgroups_tracked "); ok {
			u.tracked, _ = strconv.ParseFloat(v, 64)
		}
		if v, ok := strings.CutPrefix(line, "vigil_event_watched_cgroups "); ok {
			u.watched, _ = strconv.ParseFloat(v, 64)
		}
		if v, ok := strings.CutPrefix(line, "vigil_rule_targets "); ok {
			u.ruleTargets, _ = strconv.ParseFloat(v, 64)
		}
	}
	// The response body is still open: one fd more than at rest.
	u.fds--
	return u
}

// TestChurnReturnsToBaseline creates and deletes 2000 cgroups (10 000 with
// -long) in waves of 250 under a running agent, each with a memory limit
// so the agent registers kernel notifications on it (v1: a usage threshold
// and an OOM eventfd; v2: a memory.events watch), and checks that
// everything returns to the baseline, within tolerance, once they are gone.
func TestChurnReturnsToBaseline(t *testing.T) {
	n := 2000
	if *long {
		n = 10000
	}
	if *total > 0 {
		n = *total
	}
	const wave = 250
	g := cgtest.New(t, "memory")
	if g.Version == 2 {
		g.Write(t, "", "cgroup.subtree_control", "+memory")
	}
	dir := g.Dir("memory")
	limitFile := "memory.limit_in_bytes"
	if g.Version == 2 {
		limitFile = "memory.max"
	}
	// A limit on the group too: every churned cgroup is limited from the
	// moment it exists (hierarchical limit), whenever the agent sees it.
	g.Write(t, "memory", limitFile, strconv.Itoa(1<<30))

	// The agent sees only the test's group: a host root whose cgroup
	// hierarchy is that group (a symlink), so other cgroups on the
	// machine (other jobs churn thousands) neither hit its max_cgroups
	// nor move the numbers.
	hostRoot := t.TempDir()
	for _, d := range []string{"proc", "dev"} {
		if err := os.Symlink("/"+d, filepath.Join(hostRoot, d)); err != nil {
			t.Fatal(err)
		}
	}
	cgDir := filepath.Join(hostRoot, "sys", "fs", "cgroup")
	if g.Version == 1 {
		cgDir = filepath.Join(cgDir, "memory")
	}
	if err := os.MkdirAll(filepath.Dir(cgDir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dir, cgDir); err != nil {
		t.Fatal(err)
	}

	cfg := config.Default()
	cfg.HostRoot = hostRoot
	cfg.Listen = "127.0.0.1:0"
	cfg.Tick = 100 * time.Millisecond
	cfg.DiscoveryInterval = 200 * time.Millisecond
	cfg.GrowthWindow = 2 * time.Second
	cfg.Self.OOMScoreAdj = 0
	cfg.Remediation.Journal.Path = filepath.Join(t.TempDir(), "journal.db")
	cfg.Events.MaxWatchedCgroups = 2 * wave
	// Half the churned cgroups are opted in, so the shipped rules (all
	// opt-in) select them and the rules engine keeps their state and
	// history for rules.target_grace once they are gone; the other half is
	// forgotten at once. Dry run: nothing is acted on. The long run keeps
	// the default grace (2m) and waits it out at the end.
	cfg.Remediation.OptIn = []string{"/*[02468]"}
	grace := time.Second
	if *long {
		grace = cfg.Rules.TargetGrace
	}
	cfg.Rules.TargetGrace = grace
	logs := &warnCounter{}
	a, err := agent.New(agent.Options{Config: cfg, Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("agent did not stop")
		}
	})
	select {
	case <-a.Started():
	case err := <-done:
		t.Fatalf("agent stopped: %v", err)
	}
	base := "http://" + a.Addr()

	// Baseline: after a warm-up wave (first-use allocations, pools).
	churnWave(t, dir, "warm", wave, limitFile)
	time.Sleep(grace)
	settle(t, base, nil, 0)
	before := measure(t, base)
	warnsBefore := logs.count()
	t.Logf("baseline: %v", before)

	start := time.Now()
	var peak usage
	created := 0
	for w := 0; created < n; w++ {
		k := min(wave, n-created)
		p := churnWave(t, dir, fmt.Sprintf("w%d", w), k, limitFile, func() usage { return measure(t, base) })
		if p.tracked > peak.tracked {
			peak = p
		}
		created += k
	}
	churnTime := time.Since(start)
	after := settle(t, base, &before, grace)
	t.Logf("%d cgroups created and deleted in %v; peak: %v; after: %v", created, churnTime.Round(time.Millisecond), peak, after)
	writeHeapProfile(t, "")

	if *long && *soak > 0 {
		soakEnd := time.Now().Add(*soak)
		var soakMax usage
		for i := 0; time.Now().Before(soakEnd); i++ {
			churnWave(t, dir, fmt.Sprintf("s%d", i), 100, limitFile)
			if i%100 == 0 {
				u := measure(t, base)
				t.Logf("soak %v: %v", time.Until(soakEnd).Round(time.Second), u)
				writeHeapProfile(t, fmt.Sprintf(".soak%d", i/100))
				soakMax.heap = max(soakMax.heap, u.heap)
				soakMax.ruleTargets = max(soakMax.ruleTargets, u.ruleTargets)
			}
		}
		// During the churn the rules engine holds the opted-in cgroups
		// gone within the grace period, at most its MaxVanished (1000)
		// plus the ones alive, and the heap stays bounded accordingly.
		if soakMax.ruleTargets > before.ruleTargets+maxVanished+wave {
			t.Errorf("rules engine tracked up to %.0f targets during the soak (baseline %.0f): vanished targets past its bound of %d", soakMax.ruleTargets, before.ruleTargets, maxVanished)
		}
		if soakMax.heap > before.heap+before.heap/4+16<<20 {
			t.Errorf("heap up to %.1f MiB during the soak, %.1f MiB at baseline", float64(soakMax.heap)/(1<<20), float64(before.heap)/(1<<20))
		}
		after = settle(t, base, &before, grace)
		t.Logf("after the %v soak: %v", *soak, after)
		writeHeapProfile(t, ".aftersoak")
	}

	// The agent saw the cgroups (or the test proved nothing): tracked, with
	// their files held open (fds), and their series exported.
	if peak.tracked < before.tracked+wave/2 || peak.fds < before.fds+wave || peak.cgroupSeries <= before.cgroupSeries ||
		peak.ruleTargets < before.ruleTargets+wave/4 {
		resp, err := http.Get(base + "/readyz")
		var body []byte
		if err == nil {
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		t.Errorf("the agent never tracked the churned cgroups: peak %v, baseline %v; /readyz: %s", peak, before, body)
	}
	// Tolerances: a few fds and goroutines (HTTP keep-alive connections,
	// the runtime's own), heap within 2 MiB + 10% (a leak of 1 KiB per
	// churned cgroup is 2 MiB in CI), series exactly back.
	if after.fds > before.fds+4 {
		t.Errorf("file descriptors %d after, %d before: leak", after.fds, before.fds)
	}
	if after.goroutines > before.goroutines+4 {
		t.Errorf("goroutines %d after, %d before: leak", after.goroutines, before.goroutines)
	}
	if after.heap > before.heap+before.heap/10+2<<20 {
		t.Errorf("heap %d after, %d before", after.heap, before.heap)
	}
	if after.cgroupSeries > before.cgroupSeries || after.series > before.series+20 {
		t.Errorf("metric series %d (cgroup %d) after, %d (%d) before: series of gone cgroups kept", after.series, after.cgroupSeries, before.series, before.cgroupSeries)
	}
	// The rules engine's per-target state: back to the baseline once the
	// grace period has passed (a vanished cgroup no rule selects at once).
	if after.ruleTargets > before.ruleTargets {
		t.Errorf("rules engine tracks %.0f targets after, %.0f before (grace %v): state of gone cgroups kept", after.ruleTargets, before.ruleTargets, grace)
	}
	var warns []string
	for _, w := range logs.since(warnsBefore) {
		// Kernel OOM kills elsewhere on the machine are reported, rightly.
		if strings.Contains(w, "kernel OOM kill") {
			continue
		}
		warns = append(warns, w)
		t.Logf("warn+ log during the churn: %s", w)
	}
	if len(warns) > 10 {
		t.Errorf("%d warn+ log lines for %d vanished cgroups: error spam", len(warns), created)
	}
}

// churnWave creates k cgroups with a limit, waits until the agent tracks
// them (and measures then, if asked), and removes them.
func churnWave(t *testing.T, dir, prefix string, k int, limitFile string, at ...func() usage) usage {
	t.Helper()
	// A deferred removal, not t.Cleanup: a cleanup per wave would keep
	// every wave's paths until the test ends (the soak runs thousands of
	// waves in this process, and measures its heap). Deferred functions
	// run on t.Fatal too.
	paths := make([]string, 0, k)
	defer func() {
		for _, p := range paths {
			_ = os.Remove(p)
		}
	}()
	for i := range k {
		p := filepath.Join(dir, fmt.Sprintf("%s-%d", prefix, i))
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
		if err := os.WriteFile(filepath.Join(p, limitFile), []byte(strconv.Itoa(256<<20)), 0); err != nil {
			t.Fatal(err)
		}
	}
	// Two discovery intervals and a tick: the agent has seen them.
	time.Sleep(450 * time.Millisecond)
	var u usage
	if len(at) > 0 {
		// Wait (up to 2s) until it tracks them all.
		for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			u = at[0]()
			if u.tracked >= float64(k) || time.Now().After(deadline) {
				break
			}
		}
	}
	for _, p := range paths {
		if err := os.Remove(p); err != nil {
			t.Fatalf("rmdir %s: %v", p, err)
		}
	}
	paths = paths[:0]
	return u
}

// settle waits until the agent tracks no churned cgroup any more and, with
// want, until fds, goroutines and the rules engine's targets are back (they
// go asynchronously, the targets after grace), then measures.
func settle(t *testing.T, base string, want *usage, grace time.Duration) usage {
	t.Helper()
	deadline := time.Now().Add(15*time.Second + grace)
	var u usage
	var prev float64 = -1
	for {
		time.Sleep(300 * time.Millisecond)
		u = measure(t, base)
		stable := u.tracked == prev
		prev = u.tracked
		back := want == nil || (u.tracked <= want.tracked && u.fds <= want.fds+4 && u.goroutines <= want.goroutines+4 &&
			u.cgroupSeries <= want.cgroupSeries && u.ruleTargets <= want.ruleTargets)
		if stable && back {
			return u
		}
		if time.Now().After(deadline) {
			return u
		}
	}
}

// writeHeapProfile writes a heap profile to -churn.heapprofile plus suffix,
// if asked.
func writeHeapProfile(t *testing.T, suffix string) {
	t.Helper()
	if *heapProfile == "" {
		return
	}
	f, err := os.Create(*heapProfile + suffix)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	runtime.GC()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		t.Error(err)
	}
}

// Package eventstest measures how fast vigil's event watcher reports a cgroup
// v1 usage threshold crossing, on real cgroups made by test/cgtest. Tests and
// benchmarks of any package can use it.
//
// The crossing is timed by the process that causes it: a helper (this test
// binary re-executed inside the cgroup) touches its memory page by page and
// rereads its cgroup's memory.usage_in_bytes every few pages, so it notices
// the crossing within microseconds of its own charge, without a second
// process racing for the CPU. Helper and watcher compare wall-clock times.
package eventstest

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/collectors/events"
	"github.com/vigil-agent/vigil/test/cgtest"
)

// helperEnv marks a re-executed test binary that must act as the crossing
// helper; its value is "<usage file>:<threshold bytes>:<total MiB>".
const helperEnv = "VIGIL_EVENTSTEST_CROSS"

// init turns the re-executed test binary into the helper before TestMain
// runs, so packages using eventstest need no TestMain of their own for it.
func init() {
	if spec, ok := os.LookupEnv(helperEnv); ok {
		os.Exit(runHelper(spec))
	}
}

// runHelper touches totalMiB page by page, prints the wall-clock time (Unix
// ns) at which it first reads usage >= threshold, then holds its memory
// until killed.
func runHelper(spec string) int {
	parts := strings.Split(spec, ":")
	if len(parts) != 3 {
		fmt.Fprintln(os.Stderr, "eventstest helper: bad spec", spec)
		return 2
	}
	threshold, err1 := strconv.ParseUint(parts[1], 10, 64)
	total, err2 := strconv.Atoi(parts[2])
	usage, err3 := os.Open(parts[0])
	if err1 != nil || err2 != nil || err3 != nil {
		fmt.Fprintln(os.Stderr, "eventstest helper:", err1, err2, err3)
		return 2
	}
	mem := make([]byte, total<<20)
	buf := make([]byte, 32)
	const page, checkEvery = 4096, 16
	crossed := false
	for i := 0; i < len(mem); i += page {
		mem[i] = 1
		if crossed || (i/page)%checkEvery != 0 {
			continue
		}
		n, _ := usage.ReadAt(buf, 0)
		v, err := strconv.ParseUint(strings.TrimSpace(string(buf[:n])), 10, 64)
		if err == nil && v >= threshold {
			crossed = true
			fmt.Println(time.Now().UnixNano())
		}
	}
	if !crossed {
		fmt.Println("never")
	}
	time.Sleep(time.Minute)
	return 0
}

// Probe owns a running Watcher whose events only it consumes.
type Probe struct {
	W *events.Watcher
}

// NewProbe starts a watcher for the duration of tb. It skips tb on cgroup v2
// (usage thresholds are a v1 interface) and without root.
func NewProbe(tb testing.TB) *Probe {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("eventstest: needs root for cgroups")
	}
	if cgtest.Version() != 1 {
		tb.Skip("eventstest: usage thresholds need cgroup v1")
	}
	w, err := events.NewWatcher(slog.New(slog.DiscardHandler))
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("watcher Run: %v", err)
		}
	})
	return &Probe{W: w}
}

// ThresholdTrial creates a cgroup, registers a usage threshold 8 MiB above
// its usage, runs the helper through it, and returns the time from the
// crossing (as the helper saw it) to the event's timestamp. A negative value
// means the event was stamped before the helper's next usage check. It fails
// tb if no event arrives within 10 s.
func (p *Probe) ThresholdTrial(tb testing.TB) time.Duration {
	tb.Helper()
	g := cgtest.New(tb)
	dir := g.Dir("memory")
	usageFile := filepath.Join(dir, "memory.usage_in_bytes")
	threshold := g.ReadUint(tb, "memory", "memory.usage_in_bytes") + 8<<20
	if err := p.W.WatchThreshold(g.Path(), dir, threshold); err != nil {
		tb.Fatal(err)
	}

	cmd := g.Command(os.Args[0])
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s:%d:%d", helperEnv, usageFile, threshold, 16))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cgtest.Start(tb, cmd)
	// Unwatch before the kill, so the downward crossing is not reported.
	defer func() { p.W.Unwatch(g.Path()); _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	crossed := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		crossed <- strings.TrimSpace(line)
	}()

	var eventAt time.Time
	timeout := time.After(10 * time.Second)
	for eventAt.IsZero() {
		select {
		case ev, ok := <-p.W.Events():
			if !ok {
				tb.Fatal("eventstest: events channel closed")
			}
			if ev.Path == g.Path() {
				eventAt = ev.Time
			}
		case <-timeout:
			tb.Fatalf("eventstest: no threshold event for %s at %d bytes within 10s", g.Path(), threshold)
		}
	}
	select {
	case line := <-crossed:
		ns, err := strconv.ParseInt(line, 10, 64)
		if err != nil {
			tb.Fatalf("eventstest: helper reported %q, not a crossing time", line)
		}
		return time.Duration(eventAt.UnixNano() - ns)
	case <-time.After(10 * time.Second):
		tb.Fatal("eventstest: helper reported no crossing within 10s")
		return 0
	}
}

// Summary is the distribution of a set of latencies.
type Summary struct {
	N             int
	P50, P99, Max time.Duration
}

// Summarize computes nearest-rank percentiles.
func Summarize(lat []time.Duration) Summary {
	if len(lat) == 0 {
		return Summary{}
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return Summary{N: len(s), P50: rank(0.50), P99: rank(0.99), Max: s[len(s)-1]}
}

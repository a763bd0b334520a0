package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary act as the latency helper when re-executed.
func TestMain(m *testing.M) {
	if spec, ok := os.LookupEnv(helperEnv); ok {
		os.Exit(runHelper(spec))
	}
	os.Exit(m.Run())
}

func requireV1Root(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
	if _, err := ownMemoryCgroup(); err != nil {
		t.Skipf("needs a cgroup v1 memory controller: %v", err)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// leftovers lists the bench groups this process created that still exist.
func leftovers(t *testing.T) []string {
	t.Helper()
	own, err := ownMemoryCgroup()
	if err != nil {
		t.Fatal(err)
	}
	m, _ := filepath.Glob(filepath.Join(memRoot, own, "vigil-bench-"+itoa(os.Getpid())+"-*"))
	return m
}

// TestSideBySideSmoke runs the side-by-side command with 5 cgroups for a few
// seconds: vigil and node_exporter, and cAdvisor at 1 s when its build is
// cached. It checks the report's shape, never absolute numbers.
func TestSideBySideSmoke(t *testing.T) {
	requireV1Root(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	log := testLogger(t)
	if _, _, err := nodeExporterBinary(ctx, log, true); err != nil {
		t.Fatalf("node_exporter: %v", err)
	}
	peers := []string{"vigil", "node_exporter"}
	if _, err := cadvisorBinary(ctx, log, false); err == nil {
		peers = append(peers, "cadvisor-1s")
	} else if errors.Is(err, errNotCached) {
		t.Logf("cAdvisor NOT measured in this smoke: %v (its cold build takes ~1.5 min; `go run ./bench sidebyside` builds and caches it)", err)
	} else {
		t.Fatal(err)
	}
	// vigil as of the last commit too (-vigil-base): measured right after
	// vigil.
	rep, err := SideBySide(ctx, log, SideBySideOptions{
		Counts: []int{5}, Duration: 3 * time.Second, Warmup: time.Second, Peers: peers, WorkDir: t.TempDir(), VigilBase: "HEAD",
	})
	if err != nil {
		t.Fatal(err)
	}
	peers = slices.Insert(peers, 1, basePeer)
	if got := leftovers(t); len(got) > 0 {
		t.Errorf("cgroups left behind: %v", got)
	}
	if len(rep.Results) != len(peers) {
		t.Fatalf("got %d results, want one per peer %v: %+v", len(rep.Results), peers, rep.Results)
	}
	for i, r := range rep.Results {
		if r.Peer != peers[i] || r.Cgroups != 5 {
			t.Errorf("result %d is %s/%d, want %s/5", i, r.Peer, r.Cgroups, peers[i])
		}
		if r.Scrapes == 0 || r.Series == 0 || r.BodyBytes == 0 {
			t.Errorf("%s: scrapes %d, series %d, body %d: want all > 0", r.Peer, r.Scrapes, r.Series, r.BodyBytes)
		}
		if r.PeakRSSBytes == 0 || r.SteadyRSS == 0 || r.SteadyRSS > r.PeakRSSBytes {
			t.Errorf("%s: steady RSS %d, peak %d: want 0 < steady <= peak", r.Peer, r.SteadyRSS, r.PeakRSSBytes)
		}
		if r.CPUPercent < 0 || r.Seconds <= 0 {
			t.Errorf("%s: CPU %v%% over %vs", r.Peer, r.CPUPercent, r.Seconds)
		}
		if !(r.ScrapeP50 > 0 && r.ScrapeP50 <= r.ScrapeP95 && r.ScrapeP95 <= r.ScrapeP99) {
			t.Errorf("%s: scrape p50 %v p95 %v p99 %v: want 0 < p50 <= p95 <= p99", r.Peer, r.ScrapeP50, r.ScrapeP95, r.ScrapeP99)
		}
	}
	var out bytes.Buffer
	writeSideBySide(&out, rep)
	for _, p := range peers {
		if !strings.Contains(out.String(), "| "+p+" |") {
			t.Errorf("report has no row for %s:\n%s", p, out.String())
		}
	}
	for _, want := range []string{"vigil/node_exporter: CPU", "vigil/vigil-base: CPU", "vigil-base/node_exporter: CPU"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report has no %q ratio:\n%s", want, out.String())
		}
	}
}

// TestLatencySmoke runs three crossings: each must be seen by vigil (a
// journal record with its first action applied) and by both pollers.
func TestLatencySmoke(t *testing.T) {
	requireV1Root(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	o := LatencyOptions{Trials: 3, Limit: 32 << 20, Ratio: 0.9, Interval: 300 * time.Millisecond,
		Settle: 2500 * time.Millisecond, Pollers: []time.Duration{time.Second, 2 * time.Second}, WorkDir: t.TempDir()}
	rep, err := Latency(ctx, testLogger(t), o)
	if err != nil {
		t.Fatal(err)
	}
	if got := leftovers(t); len(got) > 0 {
		t.Errorf("cgroups left behind: %v", got)
	}
	for i, tr := range rep.Trials {
		if tr.Crossing.IsZero() || !tr.Found || tr.Result != "applied" {
			t.Errorf("trial %d (%s): crossing %v, vigil record found %v, result %q: want a crossing, a record, an applied action",
				i, tr.Cgroup, tr.Crossing, tr.Found, tr.Result)
		}
		for k, d := range tr.Polls {
			if d == 0 {
				t.Errorf("trial %d: the %v poller did not report", i, o.Pollers[k])
			}
		}
	}
	var out bytes.Buffer
	writeLatency(&out, rep)
	if !strings.Contains(out.String(), "| vigil: crossing → first action applied | 3 |") {
		t.Errorf("report lacks the action row over 3 trials:\n%s", out.String())
	}
}

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    uint64
		wantErr bool
	}{
		{"plain", "4242 (vigil) S 1 4242 4242 0 -1 4194560 1000 0 0 0 150 37 0 0 20 0 9 0 100 1000000 2000 18446744073709551615", 187, false},
		{"comm with spaces and parens", "7 (a b) c)) R 1 7 7 0 -1 0 0 0 0 0 5 6 0 0 20 0 1 0 1 1 1 1", 11, false},
		{"truncated", "7 (x) R 1 2", 0, true},
		{"no comm", "garbage", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tt.in))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseStatCPU = %d, %v; want %d, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func FuzzParseStatCPU(f *testing.F) {
	if b, err := os.ReadFile("/proc/self/stat"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("1 (x) S 1 1 1 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 1 1 1 1"))
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = parseStatCPU(b) })
}

func TestCountSeries(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{"", 0},
		{"# HELP a x\n# TYPE a gauge\na 1\na{b=\"c\"} 2\n", 2},
		{"a 1\n\nb 2", 2},
	}
	for _, tt := range tests {
		if got := countSeries([]byte(tt.in)); got != tt.want {
			t.Errorf("countSeries(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestParseBench(t *testing.T) {
	out := "goos: linux\nBenchmarkSweep/500-2   \t     200\t   5123456 ns/op\t  4567 cpu-ns/op\t 10.2 ns/cgroup\t       0 B/op\t       0 allocs/op\nPASS\n"
	got := parseBench("./collectors/cgroupfs", out)
	if len(got) != 1 {
		t.Fatalf("got %d results, want 1", len(got))
	}
	r := got[0]
	if r.Name != "BenchmarkSweep/500-2" || r.N != 200 || r.NsPerOp != 5123456 || r.AllocsOp != 0 || r.Extra["ns/cgroup"] != 10.2 || r.Extra["cpu-ns/op"] != 4567 {
		t.Errorf("parseBench = %+v", r)
	}
}

package main

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	vmtest "github.com/vigil-agent/vigil/test/vm"
)

// TestMain lets the test binary act as a scenario workload when re-executed.
func TestMain(m *testing.M) {
	if os.Getenv(workEnv) == "1" && len(os.Args) > 1 && os.Args[1] == "work" {
		os.Exit(runWork(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// vigilEnv names a vigil binary built on the host for the guest (the guest
// sees the host's root read-only but not its /tmp).
const vigilEnv = "VIGIL_SCENARIOS_VIGIL"

func testVigil(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(vigilEnv); p != "" {
		return p
	}
	dir := t.TempDir()
	out, err := buildVigil(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// shortCells is the CI subset: the slow leak without an agent and under
// vigil, and the page-cache thrash under vigil, run side by side (separate
// parents, separate agents).
func runShort(t *testing.T, vigil, dataDir string) map[string]CellResult {
	t.Helper()
	cells := []struct{ scenario, agent string }{{"leak", "none"}, {"leak", "vigil"}, {"thrash", "vigil"}}
	var mu sync.Mutex
	got := map[string]CellResult{}
	var wg sync.WaitGroup
	for _, c := range cells {
		wg.Add(1)
		go func() {
			defer wg.Done()
			work := t.TempDir()
			res, err := runCell(context.Background(), cellOptions{Scenario: c.scenario, Agent: c.agent, Vigil: vigil,
				DataDir: dataDir, WorkDir: work, OwnView: true, Log: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
			if err != nil {
				t.Errorf("%s/%s: %v", c.scenario, c.agent, err)
				return
			}
			if b, err := os.ReadFile(filepath.Join(work, c.scenario+"-"+c.agent+"-v"+strconv.Itoa(res.Cgroup)+".log")); err == nil && t.Failed() {
				t.Logf("%s/%s agent log tail:\n%s", c.scenario, c.agent, lastLines(string(b), 20))
			}
			mu.Lock()
			got[c.scenario+"/"+c.agent] = res
			mu.Unlock()
		}()
	}
	wg.Wait()
	return got
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// checkShort asserts behaviour, never timings.
func checkShort(t *testing.T, got map[string]CellResult) {
	t.Helper()
	for key, r := range got {
		t.Logf("%s v%d (%s): kernel OOM kills %d, agent kills %d, critical untouched %v, false positives %d, journal %+v, notes %v",
			key, r.Cgroup, r.Kernel, r.KernelOOMKills, r.AgentKills, r.CriticalUntouched, r.FalsePositives, r.Journal, r.Notes)
		if r.Skipped != "" {
			t.Errorf("%s: skipped: %s", key, r.Skipped)
			continue
		}
		if !r.CriticalUntouched {
			t.Errorf("%s: critical workload touched: %s", key, r.CriticalNote)
		}
		for _, e := range r.Journal {
			if e.Kind == "remediation" && (e.Outcome == "" || e.Outcome == "pending") {
				t.Errorf("%s: journal %s (%s) has no measured outcome: %q", key, e.ID, e.Rule, e.Outcome)
			}
		}
	}
	if r := got["leak/none"]; r.KernelOOMKills < 1 {
		t.Errorf("leak without an agent: kernel OOM kills = %d, want >= 1 (the scenario must really OOM)", r.KernelOOMKills)
	}
	if r := got["leak/vigil"]; r.KernelOOMKills != 0 {
		t.Errorf("leak under vigil (shipped rules): kernel OOM kills = %d, want 0", r.KernelOOMKills)
	}
	if r := got["thrash/vigil"]; r.FalsePositives != 0 || r.AgentKills != 0 {
		t.Errorf("thrash under vigil: false positives %d, processes killed %d, want 0 and 0 (journal %+v)", r.FalsePositives, r.AgentKills, r.Journal)
	}
}

// TestScenariosShort runs the CI subset on this host's cgroups (v1 here).
func TestScenariosShort(t *testing.T) {
	if vmtest.InGuest() {
		t.Skip("the guest runs TestV2ScenariosShort")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
	missing := missingMirrorAncestors()
	t.Cleanup(func() { removeEmptyCgroups(missing) })
	checkShort(t, runShort(t, testVigil(t), t.TempDir()))
}

// TestV2ScenariosShort is the same subset on a real cgroup v2 kernel.
func TestV2ScenariosShort(t *testing.T) {
	vmtest.RequireGuest(t)
	// The thrash file must live on a real file system: /tmp is a tmpfs in
	// the guest, the share is 9p backed by the host's disk.
	data, err := os.MkdirTemp(vmtest.GuestOutDir, "data-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(data) })
	checkShort(t, runShort(t, testVigil(t), data))
}

// TestCgroupV2VM runs TestV2ScenariosShort in the microVM, with a vigil
// built here (the guest cannot see the host's /tmp).
func TestCgroupV2VM(t *testing.T) {
	if vmtest.InGuest() || os.Getenv(vmtest.SkipEnv) == "1" {
		vmtest.Run(t, "^TestV2")
		return
	}
	cache, err := cacheDir()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(cache, "test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	vigil, err := buildVigil(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(vigilEnv, vigil)
	if os.Getenv(vmtest.TimeoutEnv) == "" {
		t.Setenv(vmtest.TimeoutEnv, "12m")
	}
	vmtest.Run(t, "^TestV2")
}

func TestParseOwnPath(t *testing.T) {
	v1 := "9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/\n"
	tests := []struct {
		in      string
		version int
		want    string
		wantErr bool
	}{
		{v1, 1, "/process_api/abc", false},
		{v1, 2, "/", false},
		{"0::/user.slice/x\n", 2, "/user.slice/x", false},
		{"0::/x\n", 1, "", true},
		{"garbage", 2, "", true},
	}
	for _, tt := range tests {
		got, err := parseOwnPath([]byte(tt.in), tt.version)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("parseOwnPath(%q, %d) = %q, %v; want %q, err %v", tt.in, tt.version, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParsePSI(t *testing.T) {
	in := []byte("some avg10=12.34 avg60=1.00 avg300=0.00 total=98765\nfull avg10=5.00 avg60=0.00 avg300=0.00 total=1\n")
	if got := parsePSI(in, "avg10"); got != 1234 {
		t.Errorf("avg10 = %d, want 1234", got)
	}
	if got := parsePSI(in, "total"); got != 98765 {
		t.Errorf("total = %d, want 98765", got)
	}
}

func TestParseJournal(t *testing.T) {
	line := `{"id":"b","kind":"remediation","time":"2026-11-25T21:00:00Z","updated":"2026-11-25T21:00:20Z","target":{"kind":"cgroup","path":"/p/w-leak"},"rule":"memory-spike","evidence":{},"decision":"x","steps":[{"index":0,"action":"reclaim","intent":"2026-11-25T21:00:01Z","result":"applied"},{"index":1,"action":"freeze","intent":"2026-11-25T21:00:02Z","result":"applied"}],"outcome":"oom_avoided","done":true}
{"id":"a","kind":"refusal","time":"2026-11-25T21:00:00Z","updated":"2026-11-25T21:00:00Z","target":{"kind":"cgroup","path":"/p/critical"},"evidence":{},"decision":"y","outcome":"refused","done":true}
`
	got, err := parseJournal([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != "a" || got[1].ID != "b" {
		t.Fatalf("got %+v, want records a then b", got)
	}
	b := got[1]
	if b.Destructive != 1 || strings.Join(b.Steps, ",") != "reclaim:applied,freeze:applied" || b.Outcome != "oom_avoided" ||
		!b.FirstStep.Equal(time.Date(2026, 11, 25, 21, 0, 1, 0, time.UTC)) {
		t.Errorf("record b = %+v", b)
	}
	if _, err := parseJournal([]byte("{not json\n")); err == nil {
		t.Error("bad line: want an error")
	}
}

// TestWorkloadArgs: a workload with bad arguments exits 2 instead of
// allocating.
func TestWorkloadArgs(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{}, {"leak", "1"}, {"hold", "-1"}, {"nope", "1"}} {
		cmd := exec.Command(exe, append([]string{"work"}, args...)...)
		cmd.Env = append(os.Environ(), workEnv+"=1")
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
			t.Errorf("work %q: err %v, want exit status 2", args, err)
		}
	}
}

package remediate

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/remediate/journal"
	"github.com/vigil-agent/vigil/rules"
	"github.com/vigil-agent/vigil/test/cgtest"
)

var long = flag.Bool("long", false, "longer kill -9 loops")

const crashAgentEnv = "VIGIL_REMEDIATE_CRASH_AGENT"

type crashSpec struct {
	Journal  string   `json:"journal"`
	Location Location `json:"location"`
	Path     string   `json:"path"`
}

// runCrashAgent is the child of TestV1Kill9MidRemediationRestoresLimits: an
// executor that throttles the group and holds the limits until killed.
func runCrashAgent() int {
	var spec crashSpec
	if err := json.Unmarshal([]byte(os.Getenv(crashAgentEnv)), &spec); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	j, err := journal.Open(spec.Journal, journal.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	s := DefaultSafety()
	s.DryRun, s.OptIn = false, []string{spec.Path}
	s.SelfCgroup = spec.Path + "-vigil-agent"
	x, err := New(Config{Safety: s, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Resolver: func(rules.Target) (Location, error) { return spec.Location, nil }}, j, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Println("started")
	x.Handle([]rules.Finding{{Rule: "leak", Mode: rules.Enforce, State: rules.Firing, Time: time.Now(),
		Target:  rules.Target{Kind: "cgroup", Path: spec.Path},
		Actions: []rules.ActionStep{{Action: ActionThrottleCPU, Params: map[string]any{"cpus": 0.05, "soft_limit": "48Mi"}}}}})
	select {}
}

// TestV1Kill9MidRemediationRestoresLimits kills an executor with SIGKILL at
// random moments while it applies and holds CPU and soft-limit throttles;
// each restart restores the originals and journals the recovery, so no
// limit is left behind.
func TestV1Kill9MidRemediationRestoresLimits(t *testing.T) {
	requireV1(t)
	g := cgtest.New(t, "memory", "cpu")
	cgtest.Start(t, g.Command("sleep", "600"))
	quota0, soft0 := g.Read(t, "cpu", "cpu.cfs_quota_us"), g.Read(t, "memory", "memory.soft_limit_in_bytes")
	loc, err := locate(g)(target(g))
	if err != nil {
		t.Fatal(err)
	}
	dbPath := filepath.Join(t.TempDir(), "journal.db")
	specJSON, _ := json.Marshal(crashSpec{Journal: dbPath, Location: loc, Path: g.Path()})
	iterations := 12
	if *long {
		iterations = 100
	}
	restored := 0
	for it := range iterations {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashAgentEnv+"="+string(specJSON))
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 8)
		if _, err := io.ReadFull(out, buf[:7]); err != nil {
			_ = cmd.Wait()
			t.Fatalf("iteration %d: crash agent did not start: %v", it, err)
		}
		time.Sleep(time.Duration(rand.IntN(30)) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()

		j, err := journal.Open(dbPath, journal.Options{})
		if err != nil {
			t.Fatalf("iteration %d: %v", it, err)
		}
		before, _ := j.Applied()
		x, err := New(Config{Safety: acting(g), Resolver: locate(g), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, j, nil)
		if err != nil {
			t.Fatalf("iteration %d: restart: %v", it, err)
		}
		x.Close()
		after, _ := j.Applied()
		recs, _ := j.List(journal.Filter{Kind: journal.KindRecovery, Limit: -1})
		j.Close()
		if len(after) != 0 {
			t.Fatalf("iteration %d: applied limits left after restart: %+v", it, after)
		}
		if q, s := g.Read(t, "cpu", "cpu.cfs_quota_us"), g.Read(t, "memory", "memory.soft_limit_in_bytes"); q != quota0 || s != soft0 {
			t.Fatalf("iteration %d: after restart cfs_quota_us=%s soft_limit=%s, want %s %s (had applied %+v)", it, q, s, quota0, soft0, before)
		}
		restored += len(before)
		if len(recs) != restored {
			t.Fatalf("iteration %d: %d recovery records, want %d", it, len(recs), restored)
		}
	}
	t.Logf("%d kill -9 iterations: %d limits found applied and restored, originals intact every time", iterations, restored)
	if restored == 0 {
		t.Errorf("no iteration killed the agent while it held a limit: the test proved nothing")
	}
}

package hostguard

import (
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/test/cgtest"
	"github.com/vigil-agent/vigil/test/testenv"
)

var workload = flag.String("hostguard.workload", "./remediate ./agent ./test/crash",
	"packages whose tests run between the snapshots (e.g. ./... for the whole suite)")
var workloadRun = flag.String("hostguard.run", "TestV1|OnRealHost|TestSelfCgroup|TestKill9|TestReload",
	"-run pattern for the workload (empty: all tests)")

// innerEnv marks the workload's go test, so this guard does not run itself.
const innerEnv = "VIGIL_HOSTGUARD_INNER"

func TestMain(m *testing.M) { cgtest.Main(m) }

// TestGuardSeesEveryWrite proves the detector on a cgroup of its own: a
// write of the same value, a changed value, a process moved in and a
// removed child are all reported; reading is not.
func TestGuardSeesEveryWrite(t *testing.T) {
	g := cgtest.New(t, "memory")
	child := g.Child(t, "child")
	dir := g.Dir("memory")
	limitFile := "memory.soft_limit_in_bytes"
	if g.Version == 2 {
		limitFile = "memory.high"
	}
	before, err := Take(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(before.Files) == 0 || !before.Dirs[child.Dir("memory")] {
		t.Fatalf("snapshot of %s has %d files, dirs %v", dir, len(before.Files), before.Dirs)
	}
	time.Sleep(10 * time.Millisecond) // mtimes have ns resolution; be safe on coarse clocks
	_ = g.Read(t, "memory", limitFile)
	if after, _ := Take(dir, nil); len(Compare(before, after)) != 0 {
		t.Fatalf("reading changed the snapshot: %v", Compare(before, after))
	}

	same := g.Read(t, "memory", limitFile)
	g.Write(t, "memory", limitFile, same)
	child.Write(t, "memory", limitFile, "67108864")
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	child.Write(t, "memory", "cgroup.procs", strconv.Itoa(cmd.Process.Pid))
	sub := filepath.Join(dir, "gone")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	mid, err := Take(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(sub); err != nil {
		t.Fatal(err)
	}
	after, err := Take(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, c := range Compare(before, after) {
		got[strings.TrimPrefix(c.Path, dir)] = c.Kind
	}
	for path, kind := range map[string]string{
		"/" + limitFile:       "written",
		"/child/" + limitFile: "value",
		"/child/cgroup.procs": "written",
	} {
		if got[path] != kind {
			t.Errorf("%s: change %q, want %q (all: %v)", path, got[path], kind, got)
		}
	}
	if c := Compare(mid, after); len(c) != 1 || c[0].Kind != "removed" || c[0].Path != sub {
		t.Errorf("removal: %v, want %s removed", c, sub)
	}
	cmd.Process.Kill()
	cmd.Wait()
}

// TestSuiteLeavesForeignCgroupsAlone snapshots every cgroup of the machine
// not created by a test, runs a workload of vigil's tests that act on
// cgroups (by default the remediation, agent and kill -9 tests; -hostguard.
// workload=./... wraps the whole suite), and fails if any of those cgroups
// was written. Files that changed during a quiet control second before the
// workload (other writers on the machine) are reported and not held
// against vigil.
func TestSuiteLeavesForeignCgroupsAlone(t *testing.T) {
	if os.Getenv(innerEnv) != "" {
		t.Skip("inside the guarded workload")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the cgroup tests it guards")
	}
	if testing.Short() {
		t.Skip("runs a workload of other packages' tests")
	}
	// No Kubernetes node of test/k8snode runs during the audit: its
	// kubelet makes and writes cgroups at the hierarchy's root.
	testenv.LockHostCgroups(t)
	notTest := func(dir string) bool { return TestGroup(dir) }
	before, err := Take(Root, notTest)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	control, err := Take(Root, notTest)
	if err != nil {
		t.Fatal(err)
	}
	noisy := map[string]bool{}
	for _, c := range Compare(before, control) {
		noisy[c.Path] = true
		t.Logf("changed without any workload (another writer on this machine; not checked): %s", c)
	}
	t.Logf("snapshot: %d cgroups, %d writable files, %v", len(before.Dirs), len(before.Files), before.Took.Round(time.Millisecond))

	args := []string{"test", "-count=1"}
	if *workloadRun != "" {
		args = append(args, "-run", *workloadRun)
	}
	args = append(args, strings.Fields(*workload)...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = filepath.Join("..", "..")
	cmd.Env = append(os.Environ(), innerEnv+"=1")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("workload go %s: %v in %v\n%s", strings.Join(args, " "), err, time.Since(start).Round(time.Second), lastLines(out, 15))
	if err != nil {
		t.Errorf("workload failed: %v", err)
	}

	after, err := Take(Root, notTest)
	if err != nil {
		t.Fatal(err)
	}
	var bad []Change
	for _, c := range Compare(control, after) {
		switch {
		case noisy[c.Path]:
			t.Logf("changed (noisy before too, not checked): %s", c)
		case c.Kind == "removed":
			// A pre-existing cgroup vanished: vigil never removes
			// cgroups; other jobs on the machine do.
			t.Logf("pre-existing cgroup removed during the workload (not by vigil, which never rmdirs): %s", c.Path)
		default:
			bad = append(bad, c)
		}
	}
	for _, c := range bad {
		t.Errorf("a cgroup no test created was written: %s", c)
	}
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

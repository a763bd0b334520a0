package cgroupfs

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/test/cgtest"
	vmtest "github.com/vigil-agent/vigil/test/vm"
)

var capture = flag.Bool("capture", false, "capture real cgroup files into testdata/v1 (this machine) and testdata/v2 (the microVM)")

// TestCaptureFixtures refreshes testdata/v1 from this machine's real v1
// hierarchy and testdata/v2 from the cgroup v2 microVM (TestV2CaptureFixtures
// run there): the root, the cgroup the test runs in, a limited group with a
// live allocator and a group right after a kernel OOM kill. It only reads
// cgroups it did not create.
//
//	go test ./collectors/cgroupfs -run TestCaptureFixtures -capture
func TestCaptureFixtures(t *testing.T) {
	if !*capture {
		t.Skip("run with -capture to refresh testdata from real cgroups")
	}
	if cgtest.Version() == 1 {
		captureFixtures(t, filepath.Join("testdata", "v1"))
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	share := t.TempDir()
	res, err := vmtest.Exec(t.Context(), vmtest.Spec{
		Script: "export " + vmtest.GuestEnv + "=1 " + captureEnv + "=" + vmtest.GuestOutDir + "/v2 HOME=/tmp TMPDIR=/tmp\n" +
			"cd '" + cwd + "' || exit 126\n" +
			vmtest.GuestOutDir + "/pkg.test -test.run='^TestV2CaptureFixtures$' -test.v > " + vmtest.GuestOutDir + "/test.out 2>&1\n",
		Files:  map[string]string{exe: "pkg.test"},
		OutDir: share,
		Logf:   t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := os.ReadFile(filepath.Join(share, "test.out"))
	if res.ExitCode != 0 {
		t.Fatalf("guest capture failed (status %d):\n%s", res.ExitCode, out)
	}
	t.Logf("guest kernel %s:\n%s", res.Kernel, out)
	if err := os.RemoveAll(filepath.Join("testdata", "v2")); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(filepath.Join("testdata", "v2"), os.DirFS(filepath.Join(share, "v2"))); err != nil {
		t.Fatal(err)
	}
}

// captureEnv names the directory TestV2CaptureFixtures writes to.
const captureEnv = "VIGIL_CAPTURE_DIR"

// TestV2CaptureFixtures is the guest half of TestCaptureFixtures.
func TestV2CaptureFixtures(t *testing.T) {
	vmtest.RequireGuest(t)
	dir := os.Getenv(captureEnv)
	if dir == "" {
		t.Skip(captureEnv + " not set: only TestCaptureFixtures -capture runs this")
	}
	captureFixtures(t, dir)
}

func captureFixtures(t *testing.T, out string) {
	hier, err := detect("/")
	if err != nil {
		t.Fatal(err)
	}
	var ver version = v1{}
	if hier.Version == 2 {
		ver = v2{}
	}
	save := func(name, dir string) {
		t.Helper()
		dst := filepath.Join(out, name)
		if err := os.MkdirAll(dst, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range ver.files() {
			if f == "" {
				continue
			}
			b, err := os.ReadFile(filepath.Join(dir, f))
			if err != nil {
				t.Logf("%s: %v (not captured)", f, err)
				continue
			}
			if err := os.WriteFile(filepath.Join(dst, f), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}

	save("root", hier.MemoryRoot)
	own, err := cgtest.OwnPath(map[int]string{1: "memory", 2: ""}[hier.Version])
	if err != nil {
		t.Fatal(err)
	}
	if own != "/" {
		save("session", filepath.Join(hier.MemoryRoot, own))
	}

	limited := cgtest.New(t)
	setLimit(t, limited, "256M")
	if hier.Version == 2 {
		limited.Write(t, "", "memory.high", "200M")
		limited.Write(t, "", "memory.low", "16M")
	} else {
		limited.Write(t, "memory", "memory.soft_limit_in_bytes", "128M")
	}
	// Captured between two steps: the allocator may free its memory once
	// it reaches its total.
	alloc := limited.Allocator(cgtest.AllocSpec{TotalMiB: 64, StepMiB: 8, Interval: time.Second})
	stdout := pipe(t, alloc)
	cgtest.Start(t, alloc)
	waitHeld(t, stdout, 48)
	save("limited", limited.Dir("memory"))

	oom := cgtest.New(t)
	setLimit(t, oom, "32M")
	killed := oom.Allocator(cgtest.AllocSpec{TotalMiB: 128, StepMiB: 4})
	cgtest.Start(t, killed)
	if err := killed.Wait(); err == nil {
		t.Fatal("allocator survived a 32M limit")
	}
	save("oom", oom.Dir("memory"))
	t.Logf("captured into %s", out)
}

// setLimit sets the group's hard memory limit on either version.
func setLimit(t testing.TB, g *cgtest.Group, v string) {
	t.Helper()
	if g.Version == 2 {
		g.Write(t, "", "memory.max", v)
	} else {
		g.Write(t, "memory", "memory.limit_in_bytes", v)
	}
}

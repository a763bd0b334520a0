package cgroupfs

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/test/cgtest"
)

var capture = flag.Bool("capture", false, "capture this machine's real cgroup files into testdata/v1 or testdata/v2")

// TestCaptureFixtures refreshes testdata/v<version>/ from the real hierarchy:
// the root, the cgroup this test runs in, a limited group with a live
// allocator and a group right after a kernel OOM kill. It only reads cgroups
// it did not create.
//
//	go test ./collectors/cgroupfs -run TestCaptureFixtures -capture
func TestCaptureFixtures(t *testing.T) {
	if !*capture {
		t.Skip("run with -capture to refresh testdata from this machine's cgroups")
	}
	hier, err := detect("/")
	if err != nil {
		t.Fatal(err)
	}
	var ver version = v1{}
	if hier.Version == 2 {
		ver = v2{}
	}
	out := filepath.Join("testdata", map[int]string{1: "v1", 2: "v2"}[hier.Version])

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
	} else {
		limited.Write(t, "memory", "memory.soft_limit_in_bytes", "128M")
	}
	alloc := limited.Allocator(cgtest.AllocSpec{TotalMiB: 48, StepMiB: 8, Interval: 10 * time.Millisecond})
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

func trimNL(b []byte) string { return strings.TrimRight(string(b), "\n") }

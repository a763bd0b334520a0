package cgtest

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) { Main(m) }

func TestGroupLifecycle(t *testing.T) {
	var dir string
	t.Run("create", func(t *testing.T) {
		g := New(t)
		dir = g.Dir("memory")
		if !strings.HasPrefix(filepath.Base(dir), "vigil-test-") {
			t.Fatalf("dir %s is not a vigil-test group", dir)
		}
		own, err := OwnPath(map[int]string{1: "memory", 2: ""}[g.Version])
		if err != nil {
			t.Fatal(err)
		}
		if want := filepath.Join(own, g.Name); g.Path() != want {
			t.Errorf("Path() = %s, want %s", g.Path(), want)
		}
		// The child comes first: on v2 a group with processes cannot enable
		// controllers for children (no internal processes).
		child := g.Child(t, "inner")
		if got := child.Path(); got != g.Path()+"/inner" {
			t.Errorf("child path %s", got)
		}
		cmd := child.Command("sleep", "60")
		Start(t, cmd)
		waitFor(t, func() bool { return len(child.Procs(t)) == 1 })
	})
	// After the subtest's cleanup the group, its child and its process are gone.
	if _, err := exec.Command("test", "-e", dir).CombinedOutput(); err == nil {
		t.Errorf("%s still exists after cleanup", dir)
	}
}

func TestAllocatorIsChargedToGroup(t *testing.T) {
	g := New(t)
	cmd := g.Allocator(AllocSpec{TotalMiB: 32, StepMiB: 8, Interval: 10 * time.Millisecond})
	Start(t, cmd)
	usageFile := map[int]string{1: "memory.usage_in_bytes", 2: "memory.current"}[g.Version]
	waitFor(t, func() bool { return g.ReadUint(t, "memory", usageFile) >= 32<<20 })
	// The memory stays charged while the allocator holds it.
	time.Sleep(500 * time.Millisecond)
	if got := g.ReadUint(t, "memory", usageFile); got < 32<<20 {
		t.Errorf("usage fell to %d bytes while the allocator holds 32 MiB", got)
	}
}

func TestOOMKillInsideLimit(t *testing.T) {
	g := New(t)
	if g.Version == 2 {
		g.Write(t, "", "memory.max", "64M")
	} else {
		g.Write(t, "memory", "memory.limit_in_bytes", "64M")
	}
	cmd := g.Allocator(AllocSpec{TotalMiB: 200, StepMiB: 4})
	Start(t, cmd)
	err := cmd.Wait()
	if err == nil {
		t.Fatal("allocator of 200 MiB under a 64 MiB limit exited cleanly")
	}
	if g.Version == 2 {
		if n := g.KeyedValue(t, "", "memory.events", "oom_kill"); n < 1 {
			t.Errorf("memory.events oom_kill = %d, want >= 1", n)
		}
	} else if n := g.KeyedValue(t, "memory", "memory.oom_control", "oom_kill"); n < 1 {
		t.Errorf("memory.oom_control oom_kill = %d, want >= 1", n)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

package remediate

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/rules"
	"github.com/vigil-agent/vigil/test/cgtest"
)

// rel is g's path in controller, as /proc/<pid>/cgroup names it.
func rel(g *cgtest.Group, controller string) string {
	return strings.TrimPrefix(g.Dir(controller), filepath.Join(cgtest.Root, controller))
}

// sleeper starts a sleep in mem (memory controller) and moves it into the
// cpu cgroup of cpu, when given.
func sleeper(t *testing.T, mem, cpu *cgtest.Group) int {
	t.Helper()
	cmd := mem.Command("sleep", "600")
	cgtest.Start(t, cmd)
	pid := cmd.Process.Pid
	eventually(t, 5*time.Second, "the sleep in its memory cgroup", func() bool {
		for _, p := range mem.Procs(t) {
			if p == pid {
				return true
			}
		}
		return false
	})
	if cpu != nil {
		cpu.Write(t, "cpu", "cgroup.procs", strconv.Itoa(pid))
	}
	return pid
}

// TestV1ResolverFindsControllersByMembership: on v1 a target's cpu cgroup
// need not be at its memory path (a systemd service without CPUAccounting,
// a runtime that places them apart). The resolver then finds it through
// the target's processes, and takes it only when it holds them and
// nothing else; otherwise the controller is left out with the reason.
// Memory and cpu groups here have different names, so the same-path rule
// never applies, on any host.
func TestV1ResolverFindsControllersByMembership(t *testing.T) {
	requireV1(t)
	resolve := DefaultResolver(cgtest.Root, 1)
	loc := func(g *cgtest.Group) Location {
		t.Helper()
		l, err := resolve(rules.Target{Kind: "cgroup", Path: g.Path()})
		if err != nil {
			t.Fatal(err)
		}
		if l.Paths["memory"] != g.Path() {
			t.Errorf("memory path = %q, want %q", l.Paths["memory"], g.Path())
		}
		return l
	}
	unresolved := func(l Location, controller string, why ...string) {
		t.Helper()
		if p, ok := l.Paths[controller]; ok {
			t.Errorf("%s path = %q, want none", controller, p)
		}
		for _, w := range why {
			if strings.Contains(l.Unresolved[controller], w) {
				return
			}
		}
		t.Errorf("%s unresolved because %q, want one of %q", controller, l.Unresolved[controller], why)
	}

	t.Run("its own cpu cgroup", func(t *testing.T) {
		mem, cpu := cgtest.New(t, "memory"), cgtest.New(t, "cpu")
		sub := mem.Child(t, "worker")
		sleeper(t, mem, cpu)
		sleeper(t, sub, cpu) // a descendant's process counts as the target's
		l := loc(mem)
		if l.Paths["cpu"] != rel(cpu, "cpu") {
			t.Errorf("cpu path = %q (unresolved: %q), want %q", l.Paths["cpu"], l.Unresolved["cpu"], rel(cpu, "cpu"))
		}
		// The sleeps are in the test's freezer cgroup, with the test.
		unresolved(l, "freezer", "root freezer cgroup", "also holds pid")
	})

	t.Run("cpu cgroup shared with a process outside it", func(t *testing.T) {
		mem, other, cpu := cgtest.New(t, "memory"), cgtest.New(t, "memory"), cgtest.New(t, "cpu")
		sleeper(t, mem, cpu)
		outsider := sleeper(t, other, cpu)
		unresolved(loc(mem), "cpu", "also holds pid "+strconv.Itoa(outsider))
	})

	t.Run("processes in several cpu cgroups", func(t *testing.T) {
		mem, a, b := cgtest.New(t, "memory"), cgtest.New(t, "cpu"), cgtest.New(t, "cpu")
		sleeper(t, mem, a)
		sleeper(t, mem, b)
		unresolved(loc(mem), "cpu", "several cpu cgroups")
	})

	t.Run("processes in the test's cpu cgroup", func(t *testing.T) {
		mem := cgtest.New(t, "memory")
		sleeper(t, mem, nil)
		own, err := cgtest.OwnPath("cpu")
		if err != nil {
			t.Fatal(err)
		}
		if own == "/" {
			unresolved(loc(mem), "cpu", "root cpu cgroup with the rest of the host")
		} else {
			unresolved(loc(mem), "cpu", "also holds pid "+strconv.Itoa(os.Getpid()))
		}
	})

	t.Run("no processes", func(t *testing.T) {
		unresolved(loc(cgtest.New(t, "memory")), "cpu", "no processes")
	})
}

// TestV1ThrottleCPUThroughMembership runs throttle-cpu with the default
// resolver: on a target whose cpu cgroup is its own (found by membership)
// the quota is written there and restored; on one whose processes share a
// cpu cgroup with others the step is skipped with the reason, and nothing
// the target does not own is written.
func TestV1ThrottleCPUThroughMembership(t *testing.T) {
	requireV1(t)
	mem, cpu := cgtest.New(t, "memory"), cgtest.New(t, "cpu")
	sleeper(t, mem, cpu)
	shared := cgtest.New(t, "memory")
	sleeper(t, shared, nil)
	ownCPU, err := cgtest.OwnPath("cpu")
	if err != nil {
		t.Fatal(err)
	}
	ownQuota := func() string {
		b, err := os.ReadFile(filepath.Join(cgtest.Root, "cpu", ownCPU, "cpu.cfs_quota_us"))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	before := ownQuota()

	j := openJournal(t)
	s := acting(mem, shared)
	s.SelfCgroup = "/vigil-agent-elsewhere"
	x := newExecutor(t, Config{Safety: s, Resolver: DefaultResolver(cgtest.Root, 1), Measure: []time.Duration{time.Minute}}, j, nil)
	smp := newSampler()
	x.Observe(smp.snap(t, mem, shared))
	x.Handle([]rules.Finding{
		finding("own-cpu", mem, rules.Firing, rules.ActionStep{Action: ActionThrottleCPU}),
		finding("shared-cpu", shared, rules.Firing, rules.ActionStep{Action: ActionThrottleCPU}),
	})
	eventually(t, 5*time.Second, "throttle-cpu in the cpu cgroup found by membership", func() bool {
		return cpu.Read(t, "cpu", "cpu.cfs_quota_us") == "10000"
	})
	eventually(t, 5*time.Second, "the shared target's step journaled", func() bool {
		r, ok := lookup(j, "shared-cpu")
		return ok && len(r.Steps) == 1 && r.Steps[0].Result != ""
	})
	r := record(t, j, "shared-cpu")
	if st := r.Steps[0]; st.Result != "skipped" || !strings.Contains(st.Detail, "no cpu cgroup of its own for "+shared.Path()) {
		t.Errorf("throttle-cpu on a target sharing its cpu cgroup: step %+v, want skipped saying why", st)
	}
	if q := ownQuota(); q != before {
		t.Errorf("the test's own cpu cgroup quota changed: %s -> %s", before, q)
	}
	applied, err := j.Applied()
	if err != nil {
		t.Fatal(err)
	}
	if len(applied) != 1 || applied[0].Target != mem.Path() {
		t.Fatalf("applied limits = %+v, want one on %s", applied, mem.Path())
	}
	// Resolving again (as a restart would) finds the same cgroup to
	// restore: the quota goes back on release.
	x.Handle([]rules.Finding{finding("own-cpu", mem, rules.Resolved)})
	eventually(t, 10*time.Second, "quota restored on resolve", func() bool {
		return cpu.Read(t, "cpu", "cpu.cfs_quota_us") == "-1"
	})
}

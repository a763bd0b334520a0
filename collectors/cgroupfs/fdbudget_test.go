package cgroupfs

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/test/cgtest"
	"github.com/vigil-agent/vigil/test/testenv"
	vmtest "github.com/vigil-agent/vigil/test/vm"
)

// TestFileBudgetReadsStatOnDemand: with fewer files allowed open than every
// cgroup's hot and gated files, every cgroup is still tracked and read in
// full: the first ones hold memory.stat and the other gated files, the rest
// open them when due, with the same values. When cgroups go away, their
// room goes to cgroups that read on demand.
func TestFileBudgetReadsStatOnDemand(t *testing.T) { testFileBudget(t) }

// TestV2FileBudgetReadsStatOnDemand is the same on cgroup v2.
func TestV2FileBudgetReadsStatOnDemand(t *testing.T) {
	vmtest.RequireGuest(t)
	testFileBudget(t)
}

func testFileBudget(t *testing.T) {
	g := cgtest.New(t)
	const kids = 8
	var groups []*cgtest.Group
	var cmds []*os.Process
	for i := range kids {
		k := g.Child(t, fmt.Sprintf("k%d", i))
		cmd := k.Command("sleep", "600")
		cgtest.Start(t, cmd)
		groups, cmds = append(groups, k), append(cmds, cmd.Process)
	}
	// Wait until every sleep runs (exec done), so memory.stat holds still.
	for _, p := range cmds {
		testenv.Eventually(t, 10*time.Second, "sleep running", func() bool {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p.Pid))
			return string(b) == "sleep\n"
		})
	}
	time.Sleep(200 * time.Millisecond)
	// Every file held: the reference reading, and the count of cgroups.
	ref := newCollector(t, g, Options{Workers: 1})
	var want collectors.Snapshot
	sweep(t, ref, &want)
	tracked := ref.Stats().Tracked
	if tracked < kids+1 {
		t.Fatalf("tracked %d cgroups, want at least %d", tracked, kids+1)
	}
	hot, gated := perCgroup(ref.ver)
	if st := ref.Stats(); st.OnDemand != 0 || st.HeldFiles > tracked*(hot+gated) || st.HeldFiles < tracked*hot {
		t.Fatalf("unbounded: %+v, want every file held (%d hot + %d gated per cgroup)", st, hot, gated)
	}

	// Room for the hot files of all and the gated files of two (a few
	// more: the hierarchy root lacks some files).
	budget := tracked*hot + 2*gated
	c := newCollector(t, g, Options{Workers: 1, MaxHeldFiles: budget})
	st := c.Stats()
	if st.Tracked != tracked || st.OnDemand < kids/2 || st.OnDemand > tracked-2 || st.HeldFiles > budget {
		t.Fatalf("budget %d files: tracked %d, on demand %d, held %d; want %d tracked, %d to %d on demand, at most %d held",
			budget, st.Tracked, st.OnDemand, st.HeldFiles, tracked, kids/2, tracked-2, budget)
	}
	var got collectors.Snapshot
	sweep(t, c, &got)
	for _, k := range groups {
		w, s := find(&want, k.Path()), find(&got, k.Path())
		if s == nil || w == nil {
			t.Fatalf("%s missing from a sweep", k.Path())
		}
		// The sleeps are idle: what memory.stat and the peak say does not
		// move between the two readings.
		if s.Stat.Pgfault == 0 || s.Stat.Pgfault != w.Stat.Pgfault || s.Stat.Anon != w.Stat.Anon || s.Memory.PeakBytes != w.Memory.PeakBytes {
			t.Errorf("%s on demand: pgfault %d anon %d peak %d; held: pgfault %d anon %d peak %d",
				k.Path(), s.Stat.Pgfault, s.Stat.Anon, s.Memory.PeakBytes, w.Stat.Pgfault, w.Stat.Anon, w.Memory.PeakBytes)
		}
	}
	if st := c.Stats(); st.StatReads < uint64(tracked) || st.Errors[ReasonOpen]+st.Errors[ReasonRead] != 0 {
		t.Errorf("stats %+v: want every memory.stat read and no errors", st)
	}

	// Three cgroups (holders) go: their room lets others hold again.
	before := c.Stats().OnDemand
	for i := range 3 {
		_ = cmds[i].Signal(syscall.SIGKILL)
		dir := groups[i].Dir("memory")
		testenv.Eventually(t, 5*time.Second, "cgroup removed", func() bool {
			return os.Remove(dir) == nil || os.IsNotExist(removeErr(dir))
		})
	}
	if _, _, err := c.Discover(); err != nil {
		t.Fatal(err)
	}
	st = c.Stats()
	if st.Tracked != tracked-3 || st.OnDemand >= before || st.HeldFiles > budget {
		t.Errorf("after 3 removals: tracked %d, on demand %d (was %d), held %d (budget %d); want %d tracked and a cgroup holding again",
			st.Tracked, st.OnDemand, before, st.HeldFiles, budget, tracked-3)
	}
	sweep(t, c, &got)
	if s := find(&got, groups[kids-1].Path()); s == nil || s.Stat.Pgfault == 0 {
		t.Errorf("after the removals %s reads no memory.stat: %+v", groups[kids-1].Path(), s)
	}
}

func removeErr(dir string) error {
	_, err := os.Stat(filepath.Join(dir, "cgroup.procs"))
	return err
}

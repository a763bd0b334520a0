package cgroupfs

import (
	"bufio"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3/cgroup1"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/test/cgtest"
)

func TestMain(m *testing.M) { cgtest.Main(m) }

const mib = 1 << 20

// newCollector returns a Collector for the real hierarchy limited to the
// subtree of g, closed at cleanup.
func newCollector(t testing.TB, g *cgtest.Group, opts Options) *Collector {
	t.Helper()
	opts.Subtree = g.Path()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, _, err := c.Discover(); err != nil {
		t.Fatal(err)
	}
	return c
}

// testLogger sends the collector's log to the test's log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// sweep runs a full sweep and fails the test on error.
func sweep(t testing.TB, c *Collector, snap *collectors.Snapshot) {
	t.Helper()
	if err := c.Sweep(time.Now(), snap); err != nil {
		t.Fatal(err)
	}
}

func find(snap *collectors.Snapshot, path string) *collectors.CgroupSample {
	for i := range snap.Cgroups {
		if snap.Cgroups[i].Path == path {
			return &snap.Cgroups[i]
		}
	}
	return nil
}

func mustFind(t testing.TB, snap *collectors.Snapshot, path string) *collectors.CgroupSample {
	t.Helper()
	s := find(snap, path)
	if s == nil {
		var got []string
		for _, c := range snap.Cgroups {
			got = append(got, c.Path)
		}
		t.Fatalf("cgroup %s not in snapshot (has %v)", path, got)
	}
	return s
}

// allocOut receives the "held <MiB>" lines of an allocator.
type allocOut chan int

// pipe connects to cmd's stdout before it starts. The reading goroutine ends
// when the process exits (cgtest.Start's cleanup kills it).
func pipe(t testing.TB, cmd *exec.Cmd) allocOut {
	t.Helper()
	r, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	out := make(allocOut, 1024)
	go func() {
		defer close(out)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if n, err := strconv.Atoi(strings.TrimPrefix(sc.Text(), "held ")); err == nil {
				out <- n
			}
		}
	}()
	return out
}

// next waits for the allocator's next step and returns the MiB it holds.
func (o allocOut) next(t testing.TB) int {
	t.Helper()
	select {
	case n, ok := <-o:
		if !ok {
			t.Fatal("allocator exited early")
		}
		return n
	case <-time.After(60 * time.Second):
		t.Fatal("allocator made no progress in 60s")
	}
	return 0
}

func waitHeld(t testing.TB, o allocOut, mibs int) {
	t.Helper()
	for o.next(t) < mibs {
	}
}

// openFDs counts this process's open file descriptors.
func openFDs(t testing.TB) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// TestSweepRealCgroup runs an allocator that grows inside a limited child of
// a test group and checks what a sweep reports against the kernel's files.
func TestSweepRealCgroup(t *testing.T) { testSweepRealCgroup(t) }

func testSweepRealCgroup(t *testing.T) {
	g := cgtest.New(t)
	setLimit(t, g, "256M")
	work := g.Child(t, "work")
	setLimit(t, work, "1G") // looser than its parent: the parent's limit is the effective one
	if work.Version == 1 {
		work.Write(t, "memory", "memory.soft_limit_in_bytes", "64M")
	}
	c := newCollector(t, g, Options{GrowthWindow: 20 * time.Second})
	if got := c.Hierarchy().Version; got != g.Version {
		t.Fatalf("Hierarchy().Version = %d, cgtest says %d", got, g.Version)
	}

	// The allocator keeps its memory only while it is still allocating (it
	// may free everything once done), so the checks run at totalMiB of a
	// larger goal, between two steps.
	const totalMiB = 96
	cmd := work.Allocator(cgtest.AllocSpec{TotalMiB: totalMiB + 32, StepMiB: 8, Interval: 300 * time.Millisecond})
	out := pipe(t, cmd)
	cgtest.Start(t, cmd)

	var snap collectors.Snapshot
	var growing []float64
	for held := 0; held < totalMiB; {
		held = out.next(t)
		sweep(t, c, &snap)
		s := mustFind(t, &snap, work.Path())
		if held >= 32 {
			growing = append(growing, s.Derived.GrowthBytesPerSecond)
			if s.Derived.GrowthBytesPerSecond <= 0 {
				t.Errorf("held %d MiB and growing: growth = %v B/s, want > 0", held, s.Derived.GrowthBytesPerSecond)
			}
			if st := float64(s.Derived.SecondsToLimit); math.IsInf(st, 0) || st <= 0 {
				t.Errorf("held %d MiB and growing: seconds to limit = %v, want finite > 0", held, st)
			}
		}
	}
	t.Logf("growth while allocating: %v B/s", growing)

	if snap.Hierarchy != c.Hierarchy() {
		t.Errorf("snapshot hierarchy %+v, want %+v", snap.Hierarchy, c.Hierarchy())
	}
	s := mustFind(t, &snap, work.Path())
	parent := mustFind(t, &snap, g.Path())
	usageFile := map[int]string{1: "memory.usage_in_bytes", 2: "memory.current"}[g.Version]
	kernelUsage := work.ReadUint(t, "memory", usageFile)

	if s.Memory.UsageBytes < totalMiB*mib {
		t.Errorf("usage %d, want >= %d (allocator holds %d MiB)", s.Memory.UsageBytes, totalMiB*mib, totalMiB)
	}
	if d := int64(s.Memory.UsageBytes) - int64(kernelUsage); d > 8*mib || d < -8*mib {
		t.Errorf("usage %d, kernel file says %d", s.Memory.UsageBytes, kernelUsage)
	}
	if s.Memory.PeakBytes < s.Memory.UsageBytes-mib {
		t.Errorf("peak %d below usage %d", s.Memory.PeakBytes, s.Memory.UsageBytes)
	}
	if got, want := uint64(s.Memory.MaxBytes), uint64(1<<30); got != want {
		t.Errorf("work max = %d, want %d", got, want)
	}
	if got, want := uint64(parent.Memory.MaxBytes), uint64(256*mib); got != want {
		t.Errorf("parent max = %d, want %d", got, want)
	}
	// The parent's limit less what the rest of the parent uses (the kernel
	// charges a little of its own there).
	others := sub(parent.Derived.WorkingSetBytes, s.Derived.WorkingSetBytes)
	if got, want := uint64(s.Memory.EffectiveLimitBytes), 256*mib-others; got != want || others > 4*mib {
		t.Errorf("effective limit = %d, want the parent's %d less the %d the rest of the parent uses", got, 256*mib, others)
	}
	limit := uint64(s.Memory.EffectiveLimitBytes)
	if s.Stat.Anon < (totalMiB-8)*mib {
		t.Errorf("stat anon = %d, want about %d MiB", s.Stat.Anon, totalMiB)
	}
	if parent.Stat.Anon < s.Stat.Anon {
		t.Errorf("parent anon %d < child anon %d: stat is not hierarchical", parent.Stat.Anon, s.Stat.Anon)
	}
	if s.Stat.Pgfault == 0 {
		t.Error("stat pgfault = 0")
	}
	ws := s.Derived.WorkingSetBytes
	if ws < (totalMiB-8)*mib || ws > s.Memory.UsageBytes {
		t.Errorf("working set %d, want between %d and usage %d", ws, (totalMiB-8)*mib, s.Memory.UsageBytes)
	}
	if ws != sub(s.Memory.UsageBytes, s.Stat.InactiveFile) {
		t.Errorf("working set %d != usage %d - inactive_file %d", ws, s.Memory.UsageBytes, s.Stat.InactiveFile)
	}
	if got, want := uint64(s.Derived.HeadroomBytes), limit-ws; got != want {
		t.Errorf("headroom %d, want %d", got, want)
	}
	if got, want := s.Derived.UsageRatio, float64(ws)/float64(limit); math.Abs(got-want) > 1e-12 || got <= 0 {
		t.Errorf("usage ratio %v, want working set / effective limit = %v", got, want)
	}
	if s.Identity.Kind != "cgroup" {
		t.Errorf("identity %+v", s.Identity)
	}
	if g.Version == 1 {
		if got := uint64(s.Memory.SoftLimitBytes); got != 64*mib {
			t.Errorf("soft limit %d, want %d", got, 64*mib)
		}
		if got := uint64(s.Stat.HierarchicalMemoryLimit); got != 256*mib {
			t.Errorf("hierarchical_memory_limit %d, want %d", got, 256*mib)
		}
		if s.Pressure.Present {
			t.Error("v1 pressure present")
		}
		if s.Memory.HighBytes != collectors.Unlimited || s.Memory.SwapMaxBytes != collectors.Unlimited {
			t.Errorf("v1 high %d swap max %d, want Unlimited", s.Memory.HighBytes, s.Memory.SwapMaxBytes)
		}
	} else {
		if !s.Pressure.Present {
			t.Error("v2 memory.pressure not present")
		}
		if s.Memory.HighBytes != collectors.Unlimited || s.Memory.SoftLimitBytes != collectors.Unlimited || s.Memory.MemswLimitBytes != collectors.Unlimited {
			t.Errorf("v2 high %d soft %d memsw %d, want Unlimited", s.Memory.HighBytes, s.Memory.SoftLimitBytes, s.Memory.MemswLimitBytes)
		}
	}
	// The ancestors of the subtree are tracked, parents before children.
	for i := 1; i < len(snap.Cgroups); i++ {
		if snap.Cgroups[i-1].Path >= snap.Cgroups[i].Path {
			t.Errorf("not sorted: %s before %s", snap.Cgroups[i-1].Path, snap.Cgroups[i].Path)
		}
	}
	if snap.Cgroups[0].Path != "/" {
		t.Errorf("first cgroup %s, want the root", snap.Cgroups[0].Path)
	}
}

// TestOOMKillCounted triggers a real kernel OOM kill inside a test group.
func TestOOMKillCounted(t *testing.T) { testOOMKillCounted(t) }

func testOOMKillCounted(t *testing.T) {
	g := cgtest.New(t)
	setLimit(t, g, "32M")
	c := newCollector(t, g, Options{})
	var snap collectors.Snapshot
	sweep(t, c, &snap)
	if s := mustFind(t, &snap, g.Path()); s.Events.OOMKill != 0 {
		t.Fatalf("oom_kill before the test: %d", s.Events.OOMKill)
	}
	cmd := g.Allocator(cgtest.AllocSpec{TotalMiB: 128, StepMiB: 4})
	cgtest.Start(t, cmd)
	if err := cmd.Wait(); err == nil {
		t.Fatal("allocator of 128 MiB under a 32 MiB limit exited cleanly")
	}
	sweep(t, c, &snap)
	s := mustFind(t, &snap, g.Path())
	if s.Events.OOMKill < 1 {
		t.Errorf("Events.OOMKill = %d, want >= 1", s.Events.OOMKill)
	}
	if s.Events.Max < 1 {
		t.Errorf("Events.Max (v2 max / v1 failcnt) = %d, want >= 1", s.Events.Max)
	}
	if g.Version == 2 && s.Events.OOM < 1 {
		t.Errorf("Events.OOM = %d, want >= 1", s.Events.OOM)
	}
	if s.Memory.PeakBytes < 28*mib {
		t.Errorf("peak %d, want near the 32M limit", s.Memory.PeakBytes)
	}
}

// TestDiscoverTracksChildren checks that a new child is picked up, a removed
// one dropped, and that no file descriptor leaks.
func TestDiscoverTracksChildren(t *testing.T) {
	g := cgtest.New(t)
	before := openFDs(t)
	c, err := New(Options{Subtree: g.Path(), Workers: 1, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	added, removed, err := c.Discover()
	if err != nil {
		t.Fatal(err)
	}
	depth := strings.Count(g.Path(), "/") + 1 // the root, the ancestors and g
	if added != depth || removed != 0 {
		t.Errorf("first Discover: added %d removed %d, want %d and 0", added, removed, depth)
	}
	tracked := openFDs(t)
	child := g.Child(t, "new")
	if added, removed, err = c.Discover(); err != nil || added != 1 || removed != 0 {
		t.Errorf("Discover after mkdir: added %d removed %d err %v, want 1, 0", added, removed, err)
	}
	var snap collectors.Snapshot
	sweep(t, c, &snap)
	mustFind(t, &snap, child.Path())
	if got := c.Stats().Tracked; got != depth+1 {
		t.Errorf("Stats().Tracked = %d, want %d", got, depth+1)
	}
	if err := os.Remove(child.Dir("memory")); err != nil {
		t.Fatal(err)
	}
	if added, removed, err = c.Discover(); err != nil || added != 0 || removed != 1 {
		t.Errorf("Discover after rmdir: added %d removed %d err %v, want 0, 1", added, removed, err)
	}
	sweep(t, c, &snap)
	if find(&snap, child.Path()) != nil {
		t.Errorf("removed cgroup %s still swept", child.Path())
	}
	if got := openFDs(t); got != tracked {
		t.Errorf("open fds %d after the child went, want %d as before it came", got, tracked)
	}
	if added, removed, err = c.Discover(); added != 0 || removed != 0 || err != nil {
		t.Errorf("idle Discover: added %d removed %d err %v", added, removed, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := openFDs(t); got != before {
		t.Errorf("open fds %d after Close, want %d", got, before)
	}
	if err := c.Sweep(time.Now(), &snap); err != ErrClosed {
		t.Errorf("Sweep after Close: %v, want ErrClosed", err)
	}
}

// TestVanishedMidSweep removes a cgroup between Discover and Sweep.
func TestVanishedMidSweep(t *testing.T) {
	g := cgtest.New(t)
	keep := g.Child(t, "keep")
	gone := g.Child(t, "gone")
	c := newCollector(t, g, Options{Workers: 1})
	fds := openFDs(t)
	if err := os.Remove(gone.Dir("memory")); err != nil {
		t.Fatal(err)
	}
	var snap collectors.Snapshot
	if err := c.Sweep(time.Now(), &snap); err != nil {
		t.Fatalf("Sweep with a vanished cgroup: %v, want no error", err)
	}
	if find(&snap, gone.Path()) != nil {
		t.Error("vanished cgroup in the snapshot")
	}
	mustFind(t, &snap, keep.Path())
	mustFind(t, &snap, g.Path())
	st := c.Stats()
	if st.Vanished != 1 {
		t.Errorf("Stats().Vanished = %d, want 1", st.Vanished)
	}
	for reason, n := range st.Errors {
		if n != 0 {
			t.Errorf("Stats().Errors[%s] = %d, want 0", reason, n)
		}
	}
	perCgroup := 0
	for i, f := range c.ver.files() {
		if f != "" && !isCold(fileID(i)) && (c.ver.number() == 2 || !strings.Contains(f, "memsw") || exists(filepath.Join(keep.Dir("memory"), f))) {
			perCgroup++
		}
	}
	if got := openFDs(t); got != fds-perCgroup {
		t.Errorf("open fds %d, want %d (the vanished cgroup's %d held files closed)", got, fds-perCgroup, perCgroup)
	}
	// The next Discover does not count it again.
	if added, removed, err := c.Discover(); added != 0 || removed != 0 || err != nil {
		t.Errorf("Discover after: added %d removed %d err %v", added, removed, err)
	}
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// TestSweepPaths reads only the cgroups named.
func TestSweepPaths(t *testing.T) {
	g := cgtest.New(t)
	setLimit(t, g, "128M")
	a := g.Child(t, "a")
	b := g.Child(t, "b")
	setLimit(t, b, "64M")
	c := newCollector(t, g, Options{})
	var full, part collectors.Snapshot
	sweep(t, c, &full)
	err := c.SweepPaths(time.Now(), []string{b.Path(), "/no/such/cgroup", a.Path(), b.Path()}, &part)
	if err != nil {
		t.Fatal(err)
	}
	if !part.Partial {
		t.Error("Partial = false")
	}
	var got []string
	for _, s := range part.Cgroups {
		got = append(got, s.Path)
	}
	if want := []string{a.Path(), b.Path()}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("partial snapshot has %v, want %v", got, want)
	}
	// a inherits the parent's limit less what the rest of the parent uses
	// (b and the kernel's own charge: a few hundred KiB).
	if s := mustFind(t, &part, a.Path()); uint64(s.Memory.EffectiveLimitBytes) > 128*mib || uint64(s.Memory.EffectiveLimitBytes) < 124*mib {
		t.Errorf("a: effective limit %d, want the parent's %d less a little", s.Memory.EffectiveLimitBytes, 128*mib)
	}
	if s := mustFind(t, &part, b.Path()); uint64(s.Memory.EffectiveLimitBytes) != 64*mib {
		t.Errorf("b: effective limit %d, want its own %d", s.Memory.EffectiveLimitBytes, 64*mib)
	}
	sweep(t, c, &full)
	if full.Partial {
		t.Error("full sweep after a partial one still Partial")
	}
}

// TestSweepDoesNotAllocate checks the steady state on real cgroups.
func TestSweepDoesNotAllocate(t *testing.T) {
	g := cgtest.New(t)
	for i := range 40 {
		g.Child(t, "c"+strconv.Itoa(i))
	}
	for _, opts := range []Options{{Workers: 1}, {Workers: 2}, {Workers: 2, StatMaxAge: 5 * time.Second}} {
		t.Run(fmt.Sprintf("workers=%d/stat-max-age=%v", opts.Workers, opts.StatMaxAge), func(t *testing.T) {
			c := newCollector(t, g, opts)
			var snap collectors.Snapshot
			sweep(t, c, &snap)
			now := time.Now()
			allocs := testing.AllocsPerRun(20, func() {
				now = now.Add(time.Second)
				if err := c.Sweep(now, &snap); err != nil {
					t.Fatal(err)
				}
			})
			if allocs != 0 {
				t.Errorf("Sweep allocates %v times per call, want 0", allocs)
			}
			paths := []string{g.Path() + "/c3", g.Path() + "/c7"}
			allocs = testing.AllocsPerRun(20, func() {
				now = now.Add(time.Second)
				if err := c.SweepPaths(now, paths, &snap); err != nil {
					t.Fatal(err)
				}
			})
			if allocs != 0 {
				t.Errorf("SweepPaths allocates %v times per call, want 0", allocs)
			}
			allocs = testing.AllocsPerRun(5, func() {
				if _, _, err := c.Discover(); err != nil {
					t.Fatal(err)
				}
			})
			if allocs != 0 {
				t.Errorf("idle Discover allocates %v times per call, want 0", allocs)
			}
		})
	}
}

// TestCrossCheckContainerdV1 compares a sweep with containerd/cgroups'
// cgroup1 memory controller reading the same group.
func TestCrossCheckContainerdV1(t *testing.T) {
	if cgtest.Version() != 1 {
		t.Skip("the memory controller is not on cgroup v1 here")
	}
	g := cgtest.New(t)
	setLimit(t, g, "128M")
	c := newCollector(t, g, Options{})
	cmd := g.Allocator(cgtest.AllocSpec{TotalMiB: 64, StepMiB: 8, Interval: 2 * time.Second})
	out := pipe(t, cmd)
	cgtest.Start(t, cmd)
	waitHeld(t, out, 32)

	cg, err := cgroup1.Load(cgroup1.StaticPath(g.Path()), cgroup1.WithHierarchy(func() ([]cgroup1.Subsystem, error) {
		return []cgroup1.Subsystem{cgroup1.NewMemory(cgtest.Root)}, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	stats, err := cg.Stat(cgroup1.IgnoreNotExist)
	if err != nil {
		t.Fatal(err)
	}
	var snap collectors.Snapshot
	sweep(t, c, &snap)
	s := mustFind(t, &snap, g.Path())
	mem := stats.GetMemory()
	near := func(name string, got, want uint64) {
		t.Helper()
		if d := int64(got) - int64(want); d > 2*mib || d < -2*mib {
			t.Errorf("%s: vigil %d, containerd %d", name, got, want)
		}
	}
	near("usage", s.Memory.UsageBytes, mem.GetUsage().GetUsage())
	near("total_rss", s.Stat.Anon, mem.GetTotalRSS())
	near("total_cache", s.Stat.File, mem.GetTotalCache())
	near("total_inactive_file", s.Stat.InactiveFile, mem.GetTotalInactiveFile())
	if got, want := uint64(s.Memory.MaxBytes), mem.GetUsage().GetLimit(); got != want {
		t.Errorf("limit: vigil %d, containerd %d", got, want)
	}
	if got, want := uint64(s.Stat.HierarchicalMemoryLimit), mem.GetHierarchicalMemoryLimit(); got != want {
		t.Errorf("hierarchical_memory_limit: vigil %d, containerd %d", got, want)
	}
	if got, want := s.Stat.Pgfault, mem.GetTotalPgFault(); got < want {
		t.Errorf("total_pgfault: vigil %d read after containerd's %d", got, want)
	}
}

// TestConcurrentUse drives Sweep, SweepPaths, Discover and Stats from
// several goroutines while cgroups come and go (run with -race).
func TestConcurrentUse(t *testing.T) {
	g := cgtest.New(t)
	for i := range 40 {
		g.Child(t, "c"+strconv.Itoa(i))
	}
	c := newCollector(t, g, Options{Workers: 2})
	stop := make(chan struct{})
	done := make(chan error, 4)
	loop := func(f func() error) {
		go func() {
			for {
				select {
				case <-stop:
					done <- nil
					return
				default:
				}
				if err := f(); err != nil {
					done <- err
					return
				}
			}
		}()
	}
	var full, part collectors.Snapshot
	loop(func() error { return c.Sweep(time.Now(), &full) })
	loop(func() error { return c.SweepPaths(time.Now(), []string{g.Path() + "/c1", g.Path() + "/churn"}, &part) })
	loop(func() error { _, _, err := c.Discover(); return err })
	loop(func() error { c.Stats(); return nil })
	for i := range 20 {
		dir := filepath.Join(g.Dir("memory"), "churn")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(i%3) * time.Millisecond)
		if err := os.Remove(dir); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	for range 4 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
	st := c.Stats()
	for _, r := range []string{ReasonOpen, ReasonRead, ReasonParse, ReasonWalk} {
		if st.Errors[r] != 0 {
			t.Errorf("Stats().Errors[%s] = %d with cgroups coming and going, want 0", r, st.Errors[r])
		}
	}
}

// TestLimitsReadWhenDue changes a limit between sweeps: the limit files are
// not held, so a Sweep shows the change once they are due again (every
// LimitsInterval), or at once after RefreshLimits, and SweepPaths always
// reads them.
func TestLimitsReadWhenDue(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name string
		// read sweeps once after the limit changed to 128M, at t0+after.
		read  func(c *Collector, now time.Time, p string, snap *collectors.Snapshot) error
		after time.Duration
		want  collectors.Bytes
	}{
		{name: "sweep before due keeps the last value", after: time.Second, want: 256 * mib,
			read: func(c *Collector, now time.Time, _ string, snap *collectors.Snapshot) error {
				return c.Sweep(now, snap)
			}},
		{name: "sweep once due reads the file", after: 11 * time.Second, want: 128 * mib,
			read: func(c *Collector, now time.Time, _ string, snap *collectors.Snapshot) error {
				return c.Sweep(now, snap)
			}},
		{name: "RefreshLimits makes the next sweep read it", after: time.Second, want: 128 * mib,
			read: func(c *Collector, now time.Time, p string, snap *collectors.Snapshot) error {
				c.RefreshLimits(p, "/no/such/cgroup")
				return c.Sweep(now, snap)
			}},
		{name: "SweepPaths reads it", after: time.Second, want: 128 * mib,
			read: func(c *Collector, now time.Time, p string, snap *collectors.Snapshot) error {
				return c.SweepPaths(now, []string{p}, snap)
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := cgtest.New(t)
			setLimit(t, g, "256M")
			c := newCollector(t, g, Options{LimitsInterval: 10 * time.Second})
			t0 := time.Now()
			var snap collectors.Snapshot
			if err := c.Sweep(t0, &snap); err != nil {
				t.Fatal(err)
			}
			if got := mustFind(t, &snap, g.Path()).Memory.MaxBytes; got != 256*mib {
				t.Fatalf("first sweep MaxBytes = %d, want %d", got, 256*mib)
			}
			setLimit(t, g, "128M")
			if err := tt.read(c, t0.Add(tt.after), g.Path(), &snap); err != nil {
				t.Fatal(err)
			}
			if got := mustFind(t, &snap, g.Path()).Memory.MaxBytes; got != tt.want {
				t.Errorf("MaxBytes = %d, want %d", got, tt.want)
			}
		})
	}
}

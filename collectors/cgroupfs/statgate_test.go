package cgroupfs

import (
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/test/cgtest"
)

// statAge sweeps at now and returns the sample of p and how old its
// memory.stat is.
func statAge(t *testing.T, c *Collector, now time.Time, p string, snap *collectors.Snapshot) (*collectors.CgroupSample, time.Duration) {
	t.Helper()
	if err := c.Sweep(now, snap); err != nil {
		t.Fatal(err)
	}
	s := mustFind(t, snap, p)
	return s, time.Duration(s.Derived.StatAgeSeconds * 1e9).Round(time.Millisecond)
}

// TestStatGating checks when memory.stat is re-read between sweeps one
// second apart (StatMaxAge 5s): a quiet cgroup reuses it until it is
// StatMaxAge old, while a growing one, one near its limit, a hot one
// (RefreshLimits) and one read by SweepPaths get it fresh; StatMaxAge 0
// reads it at every sweep.
func TestStatGating(t *testing.T) {
	const maxAge = 5 * time.Second
	tests := []struct {
		name   string
		maxAge time.Duration
		limit  string // of the group, "" for none
		// nearLimit sets the limit once the allocator holds its memory, so
		// that usage is this fraction of it (whatever the binary's overhead).
		nearLimit float64
		alloc     cgtest.AllocSpec // run in the group; TotalMiB 0 for none
		// before runs between the first sweep and each of the next ones.
		before func(t *testing.T, c *Collector, g *cgtest.Group, out allocOut, now time.Time, snap *collectors.Snapshot)
		// wantAges are the stat ages of the sweeps at t0+1s, t0+2s, ...
		wantAges []time.Duration
	}{
		{name: "quiet empty cgroup reuses it", maxAge: maxAge,
			wantAges: []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}},
		{name: "quiet cgroup holding 40 MiB without a limit reuses it", maxAge: maxAge,
			alloc:    cgtest.AllocSpec{TotalMiB: 40, StepMiB: 40, Interval: time.Millisecond},
			wantAges: []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}},
		{name: "near its limit: every sweep", maxAge: maxAge, nearLimit: 0.7,
			alloc:    cgtest.AllocSpec{TotalMiB: 40, StepMiB: 40, Interval: time.Millisecond},
			wantAges: []time.Duration{0, 0, 0}},
		{name: "far from its limit reuses it", maxAge: maxAge, limit: "1G",
			alloc:    cgtest.AllocSpec{TotalMiB: 40, StepMiB: 40, Interval: time.Millisecond},
			wantAges: []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}},
		{name: "growing: read once usage moved", maxAge: maxAge,
			alloc: cgtest.AllocSpec{TotalMiB: 64, StepMiB: 8, Interval: 200 * time.Millisecond},
			before: func(t *testing.T, _ *Collector, _ *cgtest.Group, out allocOut, _ time.Time, _ *collectors.Snapshot) {
				out.next(t) // 8 MiB more since the last sweep
			},
			wantAges: []time.Duration{0, 0, 0}},
		{name: "hot after RefreshLimits", maxAge: maxAge,
			before: func(_ *testing.T, c *Collector, g *cgtest.Group, _ allocOut, _ time.Time, _ *collectors.Snapshot) {
				c.RefreshLimits(g.Path())
			},
			wantAges: []time.Duration{0, 0, 0}},
		{name: "SweepPaths reads it", maxAge: maxAge,
			before: func(t *testing.T, c *Collector, g *cgtest.Group, _ allocOut, now time.Time, snap *collectors.Snapshot) {
				if err := c.SweepPaths(now.Add(-500*time.Millisecond), []string{g.Path()}, snap); err != nil {
					t.Fatal(err)
				}
				if got := snap.Cgroups[0].Derived.StatAgeSeconds; got != 0 {
					t.Errorf("SweepPaths: stat age %vs, want 0", got)
				}
			},
			wantAges: []time.Duration{500 * time.Millisecond, 500 * time.Millisecond, 500 * time.Millisecond}},
		{name: "StatMaxAge 0: every sweep", maxAge: 0,
			wantAges: []time.Duration{0, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := cgtest.New(t)
			if tt.limit != "" {
				setLimit(t, g, tt.limit)
			}
			var out allocOut
			if tt.alloc.TotalMiB > 0 {
				cmd := g.Allocator(tt.alloc)
				out = pipe(t, cmd)
				cgtest.Start(t, cmd)
				if tt.alloc.StepMiB == tt.alloc.TotalMiB {
					waitHeld(t, out, tt.alloc.TotalMiB)
				} else {
					out.next(t)
				}
			}
			if tt.nearLimit > 0 {
				var usage float64
				if g.Version == 2 {
					usage = float64(g.ReadUint(t, "", "memory.current"))
				} else {
					usage = float64(g.ReadUint(t, "memory", "memory.usage_in_bytes"))
				}
				setLimit(t, g, strconv.FormatUint(uint64(usage/tt.nearLimit), 10))
			}
			c := newCollector(t, g, Options{StatMaxAge: tt.maxAge})
			memsw := g.Version == 1 && exists(filepath.Join(g.Dir("memory"), "memory.memsw.usage_in_bytes"))
			t0 := time.Now()
			var snap collectors.Snapshot
			if _, age := statAge(t, c, t0, g.Path(), &snap); age != 0 {
				t.Fatalf("first sweep: stat age %v, want 0", age)
			}
			for i, want := range tt.wantAges {
				now := t0.Add(time.Duration(i+1) * time.Second)
				if tt.before != nil {
					tt.before(t, c, g, out, now, &snap)
				}
				s, got := statAge(t, c, now, g.Path(), &snap)
				if got != want {
					t.Errorf("sweep at t0+%ds: stat age %v, want %v", i+1, got, want)
				}
				// The sample always carries a memory.stat, fresh or not.
				if tt.alloc.TotalMiB > 0 && s.Stat.Anon == 0 {
					t.Errorf("sweep at t0+%ds: Stat.Anon 0 with %d MiB held", i+1, tt.alloc.TotalMiB)
				}
				if tt.alloc.TotalMiB > 0 && s.Memory.PeakBytes < s.Memory.UsageBytes {
					t.Errorf("sweep at t0+%ds: PeakBytes %d below usage %d", i+1, s.Memory.PeakBytes, s.Memory.UsageBytes)
				}
				// So does v1's memsw usage (usage + swap), read with it.
				if memsw && s.Memory.MemswUsageBytes < s.Memory.UsageBytes/2 {
					t.Errorf("sweep at t0+%ds: MemswUsageBytes %d with usage %d", i+1, s.Memory.MemswUsageBytes, s.Memory.UsageBytes)
				}
			}
		})
	}
}

// TestStatMaxAge sweeps a quiet cgroup every second for three times
// StatMaxAge: memory.stat is never older than StatMaxAge, and is reused in
// between.
func TestStatMaxAge(t *testing.T) {
	g := cgtest.New(t)
	for i := range 20 {
		g.Child(t, "c"+strconv.Itoa(i))
	}
	const maxAge = 4 * time.Second
	c := newCollector(t, g, Options{StatMaxAge: maxAge})
	t0 := time.Now()
	var snap collectors.Snapshot
	statAge(t, c, t0, g.Path(), &snap)
	before := c.Stats()
	reads := map[string]int{}
	const sweeps = 12
	for i := 1; i <= sweeps; i++ {
		statAge(t, c, t0.Add(time.Duration(i)*time.Second), g.Path(), &snap)
		for _, s := range snap.Cgroups {
			if age := time.Duration(s.Derived.StatAgeSeconds * 1e9); age > maxAge {
				t.Errorf("sweep %d: %s stat age %v, want <= %v", i, s.Path, age, maxAge)
			}
			if s.Derived.StatAgeSeconds == 0 {
				reads[s.Path]++
			}
		}
	}
	for i := range 20 {
		p := g.Path() + "/c" + strconv.Itoa(i)
		// A quiet child is read every StatMaxAge at most (the first
		// deadline is spread over StatMaxAge, so 3 or 4 times in 12 s), and
		// at least every StatMaxAge (3 times).
		if got := reads[p]; got < sweeps/int(maxAge/time.Second) || got > sweeps/int(maxAge/time.Second)+1 {
			t.Errorf("%s: memory.stat read %d times in %d sweeps 1s apart, want %d or %d", p, got, sweeps, sweeps/4, sweeps/4+1)
		}
	}
	after := c.Stats()
	if after.StatSkips <= before.StatSkips {
		t.Errorf("Stats().StatSkips did not grow (%d -> %d)", before.StatSkips, after.StatSkips)
	}
	if after.StatReads <= before.StatReads {
		t.Errorf("Stats().StatReads did not grow (%d -> %d)", before.StatReads, after.StatReads)
	}
}

// TestRefaultRateAcrossSkippedReads runs a reader of a file twice the
// group's limit (the page cache refaults) and sweeps it in real time with
// the gates that would re-read memory.stat turned off (StatMaxAge 2s, no
// near-limit or usage gate): the refault rate is never a zero followed by a
// spike, it is the change of the counters between two memory.stat reads
// over the time between those reads.
func TestRefaultRateAcrossSkippedReads(t *testing.T) {
	g := cgtest.New(t)
	setLimit(t, g, "32M")
	file := filepath.Join(t.TempDir(), "data")
	writeUncached(t, file, 64<<20)
	cgtest.Start(t, g.Command("/bin/sh", "-c", `while :; do cat "$0" > /dev/null; done`, file))
	// Once the reader filled the group, usage stays at the limit: only the
	// age and the counters make memory.stat due.
	for usage := uint64(0); usage < 16<<20; usage = g.ReadUint(t, "memory", "memory.usage_in_bytes") {
		time.Sleep(20 * time.Millisecond)
	}
	c := newCollector(t, g, Options{StatMaxAge: 2 * time.Second, StatNearLimitRatio: 1e9, StatMoveRatio: 1e9})

	type read struct {
		at       time.Time
		refaults uint64
	}
	var snap collectors.Snapshot
	var reads []read
	var rates []float64
	skipped := 0 // sweeps between the first two reads
	deadline := time.Now().Add(20 * time.Second)
	for len(reads) < 4 && time.Now().Before(deadline) {
		now := time.Now()
		s, age := statAge(t, c, now, g.Path(), &snap)
		refaults := s.Stat.WorkingsetRefaultAnon + s.Stat.WorkingsetRefaultFile
		if age != 0 && len(reads) == 1 {
			skipped++
		}
		if age == 0 {
			reads = append(reads, read{now, refaults})
			if n := len(reads); n >= 2 {
				a, b := reads[n-2], reads[n-1]
				want := float64(b.refaults-a.refaults) / b.at.Sub(a.at).Seconds()
				if got := s.Derived.RefaultsPerSecond; math.Abs(got-want) > 1e-6*want {
					t.Errorf("read %d: RefaultsPerSecond %v, want %v (%d refaults in %v)", n, got, want, b.refaults-a.refaults, b.at.Sub(a.at))
				}
			}
		}
		if len(reads) >= 2 {
			rates = append(rates, s.Derived.RefaultsPerSecond)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if len(reads) < 4 {
		t.Fatalf("memory.stat read %d times in 20 s, want 4", len(reads))
	}
	if skipped == 0 {
		t.Errorf("memory.stat read at every sweep (StatMaxAge 2s, sweeps 250ms apart): no skipped read was checked")
	}
	if reads[len(reads)-1].refaults == reads[0].refaults {
		t.Fatalf("no refaults in %v: the reader did not thrash", reads[len(reads)-1].at.Sub(reads[0].at))
	}
	// Between reads the last rate holds: never back to 0 while refaulting.
	for i, r := range rates {
		if r == 0 {
			t.Errorf("sweep %d after the second read: RefaultsPerSecond 0 while the reader thrashes (rates %v)", i, rates)
			break
		}
	}
}

// writeUncached writes size bytes to file and drops them from the page
// cache, so that whoever reads them next is charged for them (not the test).
func writeUncached(t *testing.T, file string, size int) {
	t.Helper()
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
}

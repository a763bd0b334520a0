package cgroupfs

import (
	"math"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/test/cgtest"
)

// benchGroup creates a test group with n empty child cgroups (reading cost
// does not depend on what runs inside) and a Collector on its subtree.
func benchGroup(b *testing.B, n, workers int) (*Collector, *cgtest.Group) {
	return benchGroupOpts(b, n, Options{Workers: workers})
}

func benchGroupOpts(b *testing.B, n int, opts Options) (*Collector, *cgtest.Group) {
	b.Helper()
	g := cgtest.New(b)
	for i := range n {
		g.Child(b, "c"+strconv.Itoa(i))
	}
	opts.Subtree, opts.Logger = g.Path(), testLogger(b)
	c, err := New(opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	if _, _, err := c.Discover(); err != nil {
		b.Fatal(err)
	}
	return c, g
}

// BenchmarkSweep is a full sweep of n real cgroups (plus the group and its
// ancestors), with the default number of sweep goroutines; /serial reads on
// one goroutine. Both read memory.stat at every sweep (StatMaxAge 0);
// /stat-max-age=5s is the agent's default, sweeps 1 s apart: the quiet
// cgroups read memory.stat once every 5 sweeps.
func BenchmarkSweep(b *testing.B) {
	for _, n := range []int{100, 500, 1000} {
		for _, mode := range []struct {
			name string
			opts Options
		}{{"", Options{}}, {"/serial", Options{Workers: 1}}, {"/stat-max-age=5s", Options{StatMaxAge: 5 * time.Second}}} {
			b.Run(strconv.Itoa(n)+mode.name, func(b *testing.B) {
				c, _ := benchGroupOpts(b, n, mode.opts)
				var snap collectors.Snapshot
				now := time.Now()
				if err := c.Sweep(now, &snap); err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				cpu0 := cpuTime(b)
				fastest := time.Duration(math.MaxInt64)
				b.ResetTimer()
				for b.Loop() {
					now = now.Add(time.Second)
					t0 := time.Now()
					if err := c.Sweep(now, &snap); err != nil {
						b.Fatal(err)
					}
					fastest = min(fastest, time.Since(t0))
				}
				b.StopTimer()
				// The fastest sweep is what a machine busy with other work
				// disturbs least (the mean is ns/op).
				b.ReportMetric(float64(fastest.Nanoseconds()), "min-ns/op")
				// CPU time is what a busy machine disturbs least.
				b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N), "cpu-ns/op")
				if len(snap.Cgroups) < n {
					b.Fatalf("swept %d cgroups, want >= %d", len(snap.Cgroups), n)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(snap.Cgroups)), "ns/cgroup")
				// What RLIMIT_NOFILE must cover per tracked cgroup.
				held := 0
				for _, cg := range c.cgroups {
					for _, fd := range cg.fds {
						if fd >= 0 {
							held++
						}
					}
				}
				b.ReportMetric(float64(held)/float64(len(c.cgroups)), "held-fds/cgroup")
			})
		}
	}
}

// cpuTime is this process's user+system CPU time in ns.
func cpuTime(b *testing.B) int64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkDiscover is an idle rediscovery (nothing changed) of 500 cgroups.
func BenchmarkDiscover(b *testing.B) {
	c, _ := benchGroup(b, 500, 1)
	b.ReportAllocs()
	for b.Loop() {
		if added, removed, err := c.Discover(); err != nil || added+removed != 0 {
			b.Fatalf("Discover: %d %d %v", added, removed, err)
		}
	}
}

// BenchmarkSweepPaths is an off-cycle snapshot of 2 cgroups among 500.
func BenchmarkSweepPaths(b *testing.B) {
	c, g := benchGroup(b, 500, 0)
	paths := []string{g.Path() + "/c10", g.Path() + "/c400"}
	var snap collectors.Snapshot
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(100 * time.Millisecond)
		if err := c.SweepPaths(now, paths, &snap); err != nil {
			b.Fatal(err)
		}
	}
	if len(snap.Cgroups) != 2 {
		b.Fatalf("swept %d cgroups, want 2", len(snap.Cgroups))
	}
}

// BenchmarkParseMemoryStat parses the captured memory.stat files.
func BenchmarkParseMemoryStat(b *testing.B) {
	for _, v := range []int{1, 2} {
		in := mustRead(b, "testdata/v"+strconv.Itoa(v)+"/limited/memory.stat")
		b.Run("v"+strconv.Itoa(v), func(b *testing.B) {
			var st collectors.MemoryStat
			b.ReportAllocs()
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				if err := parseMemoryStat(in, &st, v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPreadFloor preads the same held files as a sweep, without
// parsing or deriving anything: the kernel's share of BenchmarkSweep.
func BenchmarkPreadFloor(b *testing.B) {
	for _, n := range []int{100, 500, 1000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			c, _ := benchGroup(b, n, 1)
			buf := make([]byte, 16384)
			cpu0 := cpuTime(b)
			for b.Loop() {
				for _, cg := range c.cgroups {
					for _, fd := range cg.fds {
						if fd >= 0 {
							unix.Pread(int(fd), buf, 0)
						}
					}
				}
			}
			b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N)/float64(len(c.cgroups)), "cpu-ns/cgroup")
		})
	}
}

// BenchmarkPreadFile preads one held file of every cgroup (n empty children
// plus the group and its ancestors): which file the kernel makes expensive.
func BenchmarkPreadFile(b *testing.B) {
	for _, n := range []int{1000} {
		c, _ := benchGroup(b, n, 1)
		for f, name := range c.ver.files() {
			if name == "" || isCold(fileID(f)) {
				continue
			}
			b.Run(name+"/"+strconv.Itoa(n), func(b *testing.B) {
				buf := make([]byte, 16384)
				cpu0 := cpuTime(b)
				for b.Loop() {
					for _, cg := range c.cgroups {
						if fd := cg.fds[f]; fd >= 0 {
							unix.Pread(int(fd), buf, 0)
						}
					}
				}
				b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N)/float64(len(c.cgroups)), "cpu-ns/cgroup")
			})
		}
	}
}

package cgroupfs

import (
	"testing"
	"time"

	"github.com/containerd/cgroups/v3/cgroup2"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/test/cgtest"
	vmtest "github.com/vigil-agent/vigil/test/vm"
)

// TestCgroupV2VM runs the TestV2* tests inside the cgroup v2 microVM.
func TestCgroupV2VM(t *testing.T) { vmtest.Run(t, "^TestV2") }

func TestV2SweepRealCgroup(t *testing.T) {
	vmtest.RequireGuest(t)
	testSweepRealCgroup(t)
}

func TestV2OOMKillCounted(t *testing.T) {
	vmtest.RequireGuest(t)
	testOOMKillCounted(t)
}

func TestV2DiscoverTracksChildren(t *testing.T) {
	vmtest.RequireGuest(t)
	TestDiscoverTracksChildren(t)
}

func TestV2VanishedMidSweep(t *testing.T) {
	vmtest.RequireGuest(t)
	TestVanishedMidSweep(t)
}

func TestV2SweepDoesNotAllocate(t *testing.T) {
	vmtest.RequireGuest(t)
	TestSweepDoesNotAllocate(t)
}

// TestV2MemoryHighAndPressure goes slightly over memory.high (going far over
// stalls for seconds under the VM's emulated CPU) and checks the v2-only
// fields: high, low, min, swap.max, the high event and memory.pressure.
func TestV2MemoryHighAndPressure(t *testing.T) {
	vmtest.RequireGuest(t)
	g := cgtest.New(t)
	g.Write(t, "", "memory.high", "32M")
	g.Write(t, "", "memory.low", "8M")
	g.Write(t, "", "memory.min", "4M")
	g.Write(t, "", "memory.swap.max", "0")
	c := newCollector(t, g, Options{})
	cmd := g.Allocator(cgtest.AllocSpec{TotalMiB: 40, StepMiB: 4, Interval: 50 * time.Millisecond})
	out := pipe(t, cmd)
	cgtest.Start(t, cmd)
	waitHeld(t, out, 36)

	var snap collectors.Snapshot
	sweep(t, c, &snap)
	s := mustFind(t, &snap, g.Path())
	if got := uint64(s.Memory.HighBytes); got != 32*mib {
		t.Errorf("high %d, want %d", got, 32*mib)
	}
	if s.Memory.MaxBytes != collectors.Unlimited {
		t.Errorf("max %d, want Unlimited", s.Memory.MaxBytes)
	}
	if got := uint64(s.Memory.EffectiveLimitBytes); got != 32*mib {
		t.Errorf("effective limit %d, want memory.high %d", got, 32*mib)
	}
	if s.Memory.LowBytes != 8*mib || s.Memory.MinBytes != 4*mib {
		t.Errorf("low %d min %d, want %d and %d", s.Memory.LowBytes, s.Memory.MinBytes, 8*mib, 4*mib)
	}
	if s.Memory.SwapMaxBytes != 0 {
		t.Errorf("swap max %d, want 0", s.Memory.SwapMaxBytes)
	}
	if s.Events.High < 1 {
		t.Errorf("Events.High = %d after going over memory.high, want >= 1", s.Events.High)
	}
	if !s.Pressure.Present {
		t.Error("memory.pressure not present")
	}
	// Throttling at memory.high is reclaim: some stall time shows up.
	if s.Pressure.Some.Total == 0 {
		t.Errorf("memory.pressure some total = 0 after throttling at memory.high")
	}
	if want := g.KeyedValue(t, "", "memory.events", "high"); s.Events.High > want {
		t.Errorf("Events.High %d ahead of the kernel's %d", s.Events.High, want)
	}
}

// TestV2CrossCheckContainerd compares a sweep with containerd/cgroups'
// cgroup2 manager reading the same group.
func TestV2CrossCheckContainerd(t *testing.T) {
	vmtest.RequireGuest(t)
	g := cgtest.New(t)
	setLimit(t, g, "128M")
	g.Write(t, "", "memory.high", "96M")
	c := newCollector(t, g, Options{})
	cmd := g.Allocator(cgtest.AllocSpec{TotalMiB: 64, StepMiB: 8, Interval: 2 * time.Second})
	out := pipe(t, cmd)
	cgtest.Start(t, cmd)
	waitHeld(t, out, 32)

	m, err := cgroup2.Load(g.Path(), cgroup2.WithMountpoint(cgtest.Root))
	if err != nil {
		t.Fatal(err)
	}
	stats, err := m.Stat()
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
	near("usage", s.Memory.UsageBytes, mem.GetUsage())
	near("anon", s.Stat.Anon, mem.GetAnon())
	near("file", s.Stat.File, mem.GetFile())
	near("inactive_file", s.Stat.InactiveFile, mem.GetInactiveFile())
	if got, want := uint64(s.Memory.MaxBytes), mem.GetUsageLimit(); got != want {
		t.Errorf("max: vigil %d, containerd %d", got, want)
	}
	if got, want := s.Stat.Pgfault, mem.GetPgfault(); got < want {
		t.Errorf("pgfault: vigil %d read after containerd's %d", got, want)
	}
	if got, want := s.Events.Max, stats.GetMemoryEvents().GetMax(); got < want {
		t.Errorf("events max: vigil %d read after containerd's %d", got, want)
	}
}

func TestV2StatGating(t *testing.T) {
	vmtest.RequireGuest(t)
	TestStatGating(t)
}

func TestV2StatMaxAge(t *testing.T) {
	vmtest.RequireGuest(t)
	TestStatMaxAge(t)
}

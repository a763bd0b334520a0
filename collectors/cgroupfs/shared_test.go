package cgroupfs

import (
	"testing"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/test/cgtest"
	vmtest "github.com/vigil-agent/vigil/test/vm"
)

// TestSiblingsShareTheParentsLimit: two unlimited cgroups under a parent
// limited to 128 MiB; while one holds 64 MiB, the other's effective limit
// is what the parent has left (about 64 MiB), not the parent's 128: it is
// that close to the OOM killer, and its usage ratio and headroom say so.
func TestSiblingsShareTheParentsLimit(t *testing.T) { testSiblingsShareTheParentsLimit(t) }

// TestV2SiblingsShareTheParentsLimit is the same on cgroup v2.
func TestV2SiblingsShareTheParentsLimit(t *testing.T) {
	vmtest.RequireGuest(t)
	testSiblingsShareTheParentsLimit(t)
}

func testSiblingsShareTheParentsLimit(t *testing.T) {
	g := cgtest.New(t)
	setLimit(t, g, "128M")
	hog := g.Child(t, "hog")
	quiet := g.Child(t, "quiet")
	cmd := hog.Allocator(cgtest.AllocSpec{TotalMiB: 64, StepMiB: 16})
	out := pipe(t, cmd)
	cgtest.Start(t, cmd)
	for held := 0; held < 64; {
		held = out.next(t)
	}
	c := newCollector(t, g, Options{})
	var snap collectors.Snapshot
	sweep(t, c, &snap)
	parent, h, q := mustFind(t, &snap, g.Path()), mustFind(t, &snap, hog.Path()), mustFind(t, &snap, quiet.Path())
	if h.Derived.WorkingSetBytes < 60*mib {
		t.Fatalf("hog working set %d, want about 64 MiB", h.Derived.WorkingSetBytes)
	}
	room := sub(128*mib, parent.Derived.WorkingSetBytes)
	if got, want := uint64(q.Memory.EffectiveLimitBytes), q.Derived.WorkingSetBytes+room; got != want || got > 68*mib {
		t.Errorf("quiet: effective limit %d, want its working set %d + the parent's room %d (about 64 MiB)", got, q.Derived.WorkingSetBytes, room)
	}
	if got := uint64(q.Derived.HeadroomBytes); got != room {
		t.Errorf("quiet: headroom %d, want the parent's room %d", got, room)
	}
	if got := uint64(h.Memory.EffectiveLimitBytes); got != h.Derived.WorkingSetBytes+room {
		t.Errorf("hog: effective limit %d, want %d + %d", got, h.Derived.WorkingSetBytes, room)
	}
	// About 0.5: 64 MiB of the 128 it can reach, plus the allocator's own
	// runtime (a few MiB more under the v2 VM).
	if want := float64(h.Derived.WorkingSetBytes) / float64(h.Derived.WorkingSetBytes+room); h.Derived.UsageRatio < 0.45 || h.Derived.UsageRatio > 0.62 ||
		h.Derived.UsageRatio-want > 1e-9 || want-h.Derived.UsageRatio > 1e-9 {
		t.Errorf("hog usage ratio %v, want %v (its working set over what it can reach, about 0.5)", h.Derived.UsageRatio, want)
	}
}

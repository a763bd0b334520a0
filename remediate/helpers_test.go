package remediate

import (
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/remediate/journal"
	"github.com/vigil-agent/vigil/rules"
	"github.com/vigil-agent/vigil/test/cgtest"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashAgentEnv) != "" {
		os.Exit(runCrashAgent())
	}
	if os.Getenv(ownCgroupProbeEnv) != "" {
		os.Exit(runOwnCgroupProbe())
	}
	cgtest.Main(m)
}

// sampler reads a test group's memory files into CgroupSamples the way the
// collectors do (enough for the executor: usage, limits, working set, growth,
// events, pressure), and hands out snapshots with increasing Seq.
type sampler struct {
	mu    sync.Mutex
	seq   uint64
	prev  map[string]collectors.CgroupSample
	times map[string]time.Time
}

func newSampler() *sampler {
	return &sampler{prev: map[string]collectors.CgroupSample{}, times: map[string]time.Time{}}
}

func readFile(t testing.TB, dir, file string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func keyed(s, key string) uint64 {
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == key {
			v, _ := strconv.ParseUint(f[1], 10, 64)
			return v
		}
	}
	return 0
}

func limitOf(s string) collectors.Bytes {
	if s == "" || s == "max" {
		return collectors.Unlimited
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v >= 1<<62 {
		return collectors.Unlimited
	}
	return collectors.Bytes(v)
}

func (s *sampler) sample(t testing.TB, g *cgtest.Group) collectors.CgroupSample {
	t.Helper()
	dir := g.Dir("memory")
	c := collectors.CgroupSample{Path: g.Path(), Identity: collectors.Identity{Kind: "cgroup"}}
	c.Memory.HighBytes, c.Memory.SoftLimitBytes = collectors.Unlimited, collectors.Unlimited
	if g.Version == 2 {
		c.Memory.UsageBytes, _ = strconv.ParseUint(readFile(t, dir, "memory.current"), 10, 64)
		c.Memory.MaxBytes = limitOf(readFile(t, dir, "memory.max"))
		c.Memory.HighBytes = limitOf(readFile(t, dir, "memory.high"))
		stat := readFile(t, dir, "memory.stat")
		c.Stat.InactiveFile, c.Stat.File = keyed(stat, "inactive_file"), keyed(stat, "file")
		ev := readFile(t, dir, "memory.events")
		c.Events.OOMKill, c.Events.High, c.Events.Max = keyed(ev, "oom_kill"), keyed(ev, "high"), keyed(ev, "max")
		if p, err := collectors.ParsePressure([]byte(readFile(t, dir, "memory.pressure"))); err == nil {
			c.Pressure = p
		}
	} else {
		c.Memory.UsageBytes, _ = strconv.ParseUint(readFile(t, dir, "memory.usage_in_bytes"), 10, 64)
		c.Memory.MaxBytes = limitOf(readFile(t, dir, "memory.limit_in_bytes"))
		stat := readFile(t, dir, "memory.stat")
		c.Stat.InactiveFile, c.Stat.File = keyed(stat, "total_inactive_file"), keyed(stat, "total_cache")
		c.Events.OOMKill = keyed(readFile(t, dir, "memory.oom_control"), "oom_kill")
	}
	c.Memory.EffectiveLimitBytes = min(c.Memory.MaxBytes, c.Memory.HighBytes)
	if c.Memory.UsageBytes > c.Stat.InactiveFile {
		c.Derived.WorkingSetBytes = c.Memory.UsageBytes - c.Stat.InactiveFile
	}
	c.Derived.ReclaimableBytes = c.Stat.File
	c.Derived.HeadroomBytes = collectors.Unlimited
	c.Derived.SecondsToLimit = collectors.Float(math.Inf(1))
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if lim := c.Memory.EffectiveLimitBytes; lim != collectors.Unlimited {
		c.Derived.UsageRatio = float64(c.Derived.WorkingSetBytes) / float64(lim)
		c.Derived.HeadroomBytes = collectors.Bytes(max(0, int64(lim)-int64(c.Derived.WorkingSetBytes)))
	}
	if p, ok := s.prev[c.Path]; ok {
		if dt := now.Sub(s.times[c.Path]).Seconds(); dt > 0 {
			c.Derived.GrowthBytesPerSecond = (float64(c.Derived.WorkingSetBytes) - float64(p.Derived.WorkingSetBytes)) / dt
		}
	}
	if c.Derived.GrowthBytesPerSecond > 0 && c.Derived.HeadroomBytes != collectors.Unlimited {
		c.Derived.SecondsToLimit = collectors.Float(float64(c.Derived.HeadroomBytes) / c.Derived.GrowthBytesPerSecond)
	}
	s.prev[c.Path], s.times[c.Path] = c, now
	return c
}

// snap reads every group into one snapshot.
func (s *sampler) snap(t testing.TB, groups ...*cgtest.Group) *collectors.Snapshot {
	t.Helper()
	sn := &collectors.Snapshot{Time: time.Now()}
	for _, g := range groups {
		sn.Cgroups = append(sn.Cgroups, s.sample(t, g))
	}
	s.mu.Lock()
	s.seq++
	sn.Seq = s.seq
	s.mu.Unlock()
	return sn
}

// locate resolves test groups (whose v1 controllers sit at different paths)
// by their memory path.
func locate(groups ...*cgtest.Group) Resolver {
	return func(t rules.Target) (Location, error) {
		for _, g := range groups {
			if g.Path() != t.Path {
				continue
			}
			if g.Version == 2 {
				return Location{Version: 2, Root: cgtest.Root, Paths: map[string]string{"": g.Path()}}, nil
			}
			paths := map[string]string{}
			for _, c := range []string{"memory", "cpu", "freezer"} {
				func() {
					defer func() { _ = recover() }() // group not created in that controller
					paths[c] = strings.TrimPrefix(g.Dir(c), filepath.Join(cgtest.Root, c))
				}()
			}
			return Location{Version: 1, Root: cgtest.Root, Paths: paths}, nil
		}
		return Location{}, os.ErrNotExist
	}
}

func target(g *cgtest.Group) rules.Target {
	return rules.Target{Kind: "cgroup", Path: g.Path(), Identity: collectors.Identity{Kind: "cgroup"}}
}

func openJournal(t testing.TB) *journal.Journal {
	t.Helper()
	j, err := journal.Open(filepath.Join(t.TempDir(), "journal.db"), journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

// acting is a safety configuration that acts (no dry-run) on the given
// groups only, with no rate limits.
func acting(groups ...*cgtest.Group) SafetyConfig {
	s := DefaultSafety()
	s.DryRun = false
	s.OptIn = nil
	for _, g := range groups {
		s.OptIn = append(s.OptIn, g.Path())
	}
	s.PerTarget, s.PerNode = Rate{}, Rate{}
	s.BlastRadius = 0
	// The test process plays vigil, and its cgroup is the parent of the
	// test groups, which the real self-protection (vigil's cgroup, its
	// ancestors and descendants) would refuse: place "vigil" in a sibling
	// instead. TestV1ProtectedNeverTouched checks the real rule.
	if len(groups) > 0 {
		s.SelfCgroup = strings.TrimSuffix(groups[0].Path(), "/"+groups[0].Name) + "/vigil-agent"
	}
	return s
}

func newExecutor(t testing.TB, cfg Config, j *journal.Journal, v verifier) *Executor {
	t.Helper()
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
		if testing.Verbose() {
			cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
	}
	x, err := New(cfg, j, v)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.Close() })
	return x
}

func finding(rule string, g *cgtest.Group, state rules.State, steps ...rules.ActionStep) rules.Finding {
	return rules.Finding{Rule: rule, Severity: "critical", Mode: rules.Enforce, State: state, Target: target(g),
		Time: time.Now(), Since: time.Now(), Evidence: map[string]float64{"usage_ratio": 0.7}, Actions: steps}
}

// eventually polls cond every 50 ms for up to d.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// record returns the only record of rule in j.
func record(t testing.TB, j *journal.Journal, rule string) journal.Record {
	t.Helper()
	recs, err := j.List(journal.Filter{Rule: rule})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 {
		t.Fatalf("journal has %d records of rule %s, want 1: %+v", len(recs), rule, recs)
	}
	return recs[0]
}

// lookup returns the newest record of rule, if any (for polling).
func lookup(j *journal.Journal, rule string) (journal.Record, bool) {
	recs, err := j.List(journal.Filter{Rule: rule, Limit: 1})
	if err != nil || len(recs) == 0 {
		return journal.Record{}, false
	}
	return recs[0], true
}

// later dates snap d ahead, so the executor measures outcomes that are due
// by then without the test waiting for them.
func later(snap *collectors.Snapshot, d time.Duration) *collectors.Snapshot {
	snap.Time = snap.Time.Add(d)
	return snap
}

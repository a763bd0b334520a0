package remediate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/remediate/journal"
	"github.com/vigil-agent/vigil/rules"
)

// ErrUnsupported is returned by a cgroup operation this cgroup version lacks
// (memory.high on v1, soft limits on v2, ...). Ladders move to the next step.
var ErrUnsupported = errors.New("not supported on this cgroup version")

// notOwnError says a v1 target has no cgroup of its own in a controller
// (DefaultResolver's Unresolved). It is ErrUnsupported to the ladder: the
// step is skipped with this reason.
type notOwnError string

func (e notOwnError) Error() string        { return string(e) }
func (e notOwnError) Is(target error) bool { return target == ErrUnsupported }

// Knob names a cgroup setting vigil changes and restores. Values are text in
// one format on both versions:
//
//	memory.high        bytes or "max" (v2)
//	memory.soft_limit  bytes or "max" (v1 memory.soft_limit_in_bytes)
//	cpu.max            "<quota|max> <period>" in µs (v2 cpu.max, v1 cfs_quota_us/cfs_period_us)
//	freeze             "1" frozen, "0" thawed
type Knob string

// Knobs.
const (
	KnobMemoryHigh      Knob = "memory.high"
	KnobMemorySoftLimit Knob = "memory.soft_limit"
	KnobCPUMax          Knob = "cpu.max"
	KnobFreeze          Knob = "freeze"
)

// Location says where a target's cgroup lives.
type Location = journal.Location

// Resolver maps a target to its cgroup location.
type Resolver func(rules.Target) (Location, error)

// DefaultResolver places a target under root (/sys/fs/cgroup) at the path
// the collectors report. On v1 that is its memory cgroup; its cpu and
// freezer cgroups are at the same path when that exists there, else where
// its processes are, when that cgroup is theirs alone (v1ControllerPath).
// A controller without a cgroup of the target's own is left out of Paths,
// with the reason in Unresolved: its steps are skipped, never applied to
// a cgroup the target shares.
func DefaultResolver(root string, version int) Resolver {
	return func(t rules.Target) (Location, error) {
		if t.Kind != "cgroup" || t.Path == "" {
			return Location{}, fmt.Errorf("target %s has no cgroup", t.Key())
		}
		if version == 2 {
			return Location{Version: 2, Root: root, Paths: map[string]string{"": t.Path}}, nil
		}
		loc := Location{Version: 1, Root: root, Paths: map[string]string{"memory": t.Path}}
		for _, c := range []string{"cpu", "freezer"} {
			p, err := v1ControllerPath(root, c, t.Path)
			if err != nil {
				if loc.Unresolved == nil {
					loc.Unresolved = map[string]string{}
				}
				loc.Unresolved[c] = err.Error()
				continue
			}
			loc.Paths[c] = p
		}
		return loc, nil
	}
}

// MemoryState is what the throttle controller reads each interval.
type MemoryState struct {
	UsageBytes        uint64
	InactiveFileBytes uint64
	HighBytes         uint64 // collectors.Unlimited when "max" or v1
	MaxBytes          uint64 // collectors.Unlimited when unlimited
}

// WorkingSet is usage minus inactive file, as the collectors compute it.
func (m MemoryState) WorkingSet() uint64 {
	if m.InactiveFileBytes > m.UsageBytes {
		return 0
	}
	return m.UsageBytes - m.InactiveFileBytes
}

// Cgroup is the one place vigil touches a cgroup. There is one
// implementation per cgroup version; actions never test the version.
// Writes go through containerd/cgroups where it has the knob.
type Cgroup interface {
	Location() Location
	// Exists reports whether the cgroup is still there.
	Exists() bool
	Get(Knob) (string, error)
	Set(Knob, string) error
	// Reclaim asks the kernel to reclaim up to n bytes (v2 memory.reclaim)
	// in small chunks, stopping at ctx's end or when a chunk reclaims
	// nothing; it returns how many bytes it asked for successfully.
	Reclaim(ctx context.Context, n uint64) (uint64, error)
	// Kill SIGKILLs every process in the cgroup and its descendants.
	Kill() error
	// Pids lists the processes of the cgroup (not descendants).
	Pids() ([]int, error)
	Memory() (MemoryState, error)
	Pressure() (collectors.Pressure, error)
}

// OpenCgroup returns the Cgroup implementation for loc's version.
func OpenCgroup(loc Location) (Cgroup, error) {
	switch loc.Version {
	case 1:
		if _, ok := loc.Paths["memory"]; !ok {
			return nil, fmt.Errorf("cgroup v1 location without a memory path: %v", loc.Paths)
		}
		return &cgroupV1{loc: loc}, nil
	case 2:
		m, err := cgroup2.Load(loc.Paths[""], cgroup2.WithMountpoint(loc.Root))
		if err != nil {
			return nil, fmt.Errorf("cgroup %s: %w", loc.Paths[""], err)
		}
		return &cgroupV2{loc: loc, dir: filepath.Join(loc.Root, loc.Paths[""]), m: m}, nil
	}
	return nil, fmt.Errorf("cgroup version %d: %w", loc.Version, ErrUnsupported)
}

func readTrim(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return string(bytes.TrimSpace(b)), nil
}

func parseLimit(s string) (uint64, error) {
	if s == "max" {
		return collectors.Unlimited, nil
	}
	return strconv.ParseUint(s, 10, 64)
}

func formatLimit(v uint64) string {
	if v == collectors.Unlimited {
		return "max"
	}
	return strconv.FormatUint(v, 10)
}

// parseCPUMax parses "<quota|max> [period]"; quota -1 means unlimited.
func parseCPUMax(s string) (quota int64, period uint64, err error) {
	f := strings.Fields(s)
	if len(f) < 1 || len(f) > 2 {
		return 0, 0, fmt.Errorf("cpu.max %q: want \"<quota|max> <period>\"", s)
	}
	quota, period = -1, 100000
	if f[0] != "max" {
		if quota, err = strconv.ParseInt(f[0], 10, 64); err != nil || quota <= 0 {
			return 0, 0, fmt.Errorf("cpu.max %q: bad quota", s)
		}
	}
	if len(f) == 2 {
		if period, err = strconv.ParseUint(f[1], 10, 64); err != nil || period == 0 {
			return 0, 0, fmt.Errorf("cpu.max %q: bad period", s)
		}
	}
	return quota, period, nil
}

func keyedValue(b []byte, key string) uint64 {
	for _, line := range bytes.Split(b, []byte("\n")) {
		f := bytes.Fields(line)
		if len(f) == 2 && string(f[0]) == key {
			v, _ := strconv.ParseUint(string(f[1]), 10, 64)
			return v
		}
	}
	return 0
}

func readPids(file string) ([]int, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// cgroupV2 is a unified-hierarchy cgroup.
type cgroupV2 struct {
	loc Location
	dir string
	m   *cgroup2.Manager
}

func (c *cgroupV2) Location() Location { return c.loc }

func (c *cgroupV2) Exists() bool {
	_, err := os.Stat(filepath.Join(c.dir, "cgroup.procs"))
	return err == nil
}

func (c *cgroupV2) Get(k Knob) (string, error) {
	var file string
	switch k {
	case KnobMemoryHigh:
		file = "memory.high"
	case KnobCPUMax:
		file = "cpu.max"
	case KnobFreeze:
		file = "cgroup.freeze"
	default:
		return "", fmt.Errorf("%s on %s: %w", k, c.dir, ErrUnsupported)
	}
	v, err := readTrim(filepath.Join(c.dir, file))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", k, err)
	}
	return v, nil
}

func (c *cgroupV2) Set(k Knob, value string) error {
	var err error
	switch k {
	case KnobMemoryHigh:
		var v uint64
		if v, err = parseLimit(value); err != nil {
			return fmt.Errorf("memory.high %q: %w", value, err)
		}
		high := int64(math.MaxInt64) // the kernel clamps it to "max"
		if v != collectors.Unlimited {
			high = int64(v)
		}
		err = c.m.Update(&cgroup2.Resources{Memory: &cgroup2.Memory{High: &high}})
	case KnobCPUMax:
		quota, period, perr := parseCPUMax(value)
		if perr != nil {
			return perr
		}
		var q *int64
		if quota > 0 {
			q = &quota
		}
		err = c.m.Update(&cgroup2.Resources{CPU: &cgroup2.CPU{Max: cgroup2.NewCPUMax(q, &period)}})
	case KnobFreeze:
		if value == "1" {
			err = c.m.Freeze()
		} else {
			err = c.m.Thaw()
		}
	default:
		return fmt.Errorf("%s on %s: %w", k, c.dir, ErrUnsupported)
	}
	if err != nil {
		return fmt.Errorf("set %s=%s on %s: %w", k, value, c.dir, err)
	}
	return nil
}

// reclaimChunk is how much one write to memory.reclaim asks for. One large
// write can block for tens of seconds on anonymous memory without swap (the
// kernel retries until it gives up); small writes keep each stall short and
// let the caller's deadline end the reclaim between them.
const reclaimChunk = 4 << 20

// Reclaim writes memory.reclaim, which containerd/cgroups does not wrap, in
// chunks of reclaimChunk. It stops when ctx ends or when the kernel reports
// EAGAIN (it could not reclaim the chunk: nothing left worth reclaiming).
func (c *cgroupV2) Reclaim(ctx context.Context, n uint64) (uint64, error) {
	f := filepath.Join(c.dir, "memory.reclaim")
	if _, err := os.Stat(f); err != nil {
		return 0, fmt.Errorf("%s (kernel < 5.19?): %w", f, ErrUnsupported)
	}
	// A raw descriptor, not os.File: kernfs files are pollable, so os.File
	// would park a write that failed with EAGAIN in the poller, waiting for
	// a readiness event that never comes (the write then never returns).
	fd, err := syscall.Open(f, syscall.O_WRONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", f, err)
	}
	defer syscall.Close(fd)
	var done uint64
	for done < n {
		if err := ctx.Err(); err != nil {
			return done, nil
		}
		chunk := min(n-done, reclaimChunk)
		_, err := syscall.Write(fd, []byte(strconv.FormatUint(chunk, 10)))
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if errors.Is(err, syscall.EAGAIN) {
			return done, nil
		}
		if err != nil {
			return done, fmt.Errorf("reclaim %d bytes in %s: %w", chunk, c.dir, err)
		}
		done += chunk
	}
	return done, nil
}

func (c *cgroupV2) Kill() error {
	if err := c.m.Kill(); err != nil {
		return fmt.Errorf("kill %s: %w", c.dir, err)
	}
	return nil
}

func (c *cgroupV2) Pids() ([]int, error) { return readPids(filepath.Join(c.dir, "cgroup.procs")) }

func (c *cgroupV2) Memory() (MemoryState, error) {
	var m MemoryState
	cur, err := readTrim(filepath.Join(c.dir, "memory.current"))
	if err != nil {
		return m, err
	}
	if m.UsageBytes, err = strconv.ParseUint(cur, 10, 64); err != nil {
		return m, fmt.Errorf("memory.current in %s: %w", c.dir, err)
	}
	stat, err := os.ReadFile(filepath.Join(c.dir, "memory.stat"))
	if err != nil {
		return m, err
	}
	m.InactiveFileBytes = keyedValue(stat, "inactive_file")
	m.HighBytes, m.MaxBytes = collectors.Unlimited, collectors.Unlimited
	if s, err := readTrim(filepath.Join(c.dir, "memory.high")); err == nil {
		m.HighBytes, _ = parseLimit(s)
	}
	if s, err := readTrim(filepath.Join(c.dir, "memory.max")); err == nil {
		m.MaxBytes, _ = parseLimit(s)
	}
	return m, nil
}

func (c *cgroupV2) Pressure() (collectors.Pressure, error) {
	b, err := os.ReadFile(filepath.Join(c.dir, "memory.pressure"))
	if err != nil {
		return collectors.Pressure{}, err
	}
	return collectors.ParsePressure(b)
}

// cgroupV1 is a cgroup in the v1 controllers memory, cpu and freezer, each
// possibly at a different path.
type cgroupV1 struct {
	loc Location
}

func (c *cgroupV1) Location() Location { return c.loc }

func (c *cgroupV1) dir(controller string) (string, error) {
	p, ok := c.loc.Paths[controller]
	if !ok {
		why := c.loc.Unresolved[controller]
		if why == "" {
			why = "no path given"
		}
		return "", notOwnError(fmt.Sprintf("no %s cgroup of its own for %s: %s", controller, c.loc.Paths["memory"], why))
	}
	return filepath.Join(c.loc.Root, controller, p), nil
}

func (c *cgroupV1) memDir() string {
	return filepath.Join(c.loc.Root, "memory", c.loc.Paths["memory"])
}

func (c *cgroupV1) Exists() bool {
	_, err := os.Stat(filepath.Join(c.memDir(), "cgroup.procs"))
	return err == nil
}

// v1's "unlimited" page-counter value (PAGE_COUNTER_MAX * 4096) and anything
// at least this large reads back as "max".
const v1Unlimited = uint64(1) << 62

func (c *cgroupV1) Get(k Knob) (string, error) {
	switch k {
	case KnobMemorySoftLimit:
		s, err := readTrim(filepath.Join(c.memDir(), "memory.soft_limit_in_bytes"))
		if err != nil {
			return "", fmt.Errorf("read %s: %w", k, err)
		}
		if v, _ := strconv.ParseUint(s, 10, 64); v >= v1Unlimited {
			return "max", nil
		}
		return s, nil
	case KnobCPUMax:
		d, err := c.dir("cpu")
		if err != nil {
			return "", err
		}
		q, err := readTrim(filepath.Join(d, "cpu.cfs_quota_us"))
		if err != nil {
			return "", fmt.Errorf("read %s: %w", k, err)
		}
		p, err := readTrim(filepath.Join(d, "cpu.cfs_period_us"))
		if err != nil {
			return "", fmt.Errorf("read %s: %w", k, err)
		}
		if q == "-1" {
			q = "max"
		}
		return q + " " + p, nil
	case KnobFreeze:
		d, err := c.dir("freezer")
		if err != nil {
			return "", err
		}
		s, err := readTrim(filepath.Join(d, "freezer.state"))
		if err != nil {
			return "", fmt.Errorf("read %s: %w", k, err)
		}
		if s == "THAWED" {
			return "0", nil
		}
		return "1", nil
	}
	return "", fmt.Errorf("%s on %s: %w", k, c.memDir(), ErrUnsupported)
}

func (c *cgroupV1) Set(k Knob, value string) error {
	var err error
	switch k {
	case KnobMemorySoftLimit:
		v, perr := parseLimit(value)
		if perr != nil {
			return fmt.Errorf("memory.soft_limit %q: %w", value, perr)
		}
		soft := int64(-1)
		if v != collectors.Unlimited {
			soft = int64(v)
		}
		err = cgroup1.NewMemory(c.loc.Root).Update(c.loc.Paths["memory"], &specs.LinuxResources{Memory: &specs.LinuxMemory{Reservation: &soft}})
	case KnobCPUMax:
		if _, derr := c.dir("cpu"); derr != nil {
			return derr
		}
		quota, period, perr := parseCPUMax(value)
		if perr != nil {
			return perr
		}
		err = cgroup1.NewCpu(c.loc.Root).Update(c.loc.Paths["cpu"], &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: &quota, Period: &period}})
	case KnobFreeze:
		if _, derr := c.dir("freezer"); derr != nil {
			return derr
		}
		f := cgroup1.NewFreezer(c.loc.Root)
		if value == "1" {
			err = f.Freeze(c.loc.Paths["freezer"])
		} else {
			err = f.Thaw(c.loc.Paths["freezer"])
		}
	default:
		return fmt.Errorf("%s on %s: %w", k, c.memDir(), ErrUnsupported)
	}
	if err != nil {
		return fmt.Errorf("set %s=%s on %s: %w", k, value, c.memDir(), err)
	}
	return nil
}

func (c *cgroupV1) Reclaim(context.Context, uint64) (uint64, error) {
	return 0, fmt.Errorf("memory.reclaim on %s: %w", c.memDir(), ErrUnsupported)
}

// Kill signals every process of the subtree; v1 has no cgroup.kill. It
// repeats until the subtree is empty (a forking process may add pids).
func (c *cgroupV1) Kill() error {
	deadline := time.Now().Add(2 * time.Second)
	for {
		pids, _ := subtreePids(c.memDir()) // gone: nothing left to kill
		if len(pids) == 0 {
			return nil
		}
		for pid := range pids {
			if pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kill %s: %d processes left", c.memDir(), len(pids))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *cgroupV1) Pids() ([]int, error) { return readPids(filepath.Join(c.memDir(), "cgroup.procs")) }

func (c *cgroupV1) Memory() (MemoryState, error) {
	var m MemoryState
	s, err := readTrim(filepath.Join(c.memDir(), "memory.usage_in_bytes"))
	if err != nil {
		return m, err
	}
	if m.UsageBytes, err = strconv.ParseUint(s, 10, 64); err != nil {
		return m, fmt.Errorf("usage in %s: %w", c.memDir(), err)
	}
	stat, err := os.ReadFile(filepath.Join(c.memDir(), "memory.stat"))
	if err != nil {
		return m, err
	}
	m.InactiveFileBytes = keyedValue(stat, "total_inactive_file")
	m.HighBytes, m.MaxBytes = collectors.Unlimited, collectors.Unlimited
	if s, err := readTrim(filepath.Join(c.memDir(), "memory.limit_in_bytes")); err == nil {
		if v, _ := strconv.ParseUint(s, 10, 64); v < v1Unlimited {
			m.MaxBytes = v
		}
	}
	return m, nil
}

func (c *cgroupV1) Pressure() (collectors.Pressure, error) {
	// v1 has no per-cgroup PSI.
	return collectors.Pressure{}, nil
}

package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroupRoot is where the cgroup filesystems are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// cgroupVersion is 2 when the unified hierarchy owns the memory controller.
func cgroupVersion() int {
	if _, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers")); err == nil {
		return 2
	}
	return 1
}

// ownMemoryPath is this process's cgroup path (memory controller on v1, the
// unified entry on v2), as vigil reports cgroup paths.
func ownMemoryPath(version int) (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("read /proc/self/cgroup: %w", err)
	}
	return parseOwnPath(b, version)
}

func parseOwnPath(b []byte, version int) (string, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), ":", 3)
		if len(f) != 3 {
			continue
		}
		if version == 2 && f[0] == "0" && f[1] == "" {
			return f[2], nil
		}
		if version == 1 {
			for _, c := range strings.Split(f[1], ",") {
				if c == "memory" {
					return f[2], nil
				}
			}
		}
	}
	return "", fmt.Errorf("no memory cgroup (v%d) in /proc/self/cgroup", version)
}

// v1Controllers are the v1 hierarchies a scenario cgroup exists in. vigil
// resolves a target at the same relative path in memory, cpu and freezer,
// so the scenario creates the same path in each (the cpu and freezer
// hierarchies get the memory path's missing ancestors, created here and
// removed at cleanup).
var v1Controllers = []string{"memory", "cpu", "freezer"}

// group is one scenario cgroup.
type group struct {
	version int
	rel     string            // path relative to the hierarchy root
	dirs    map[string]string // controller ("" on v2) -> absolute directory
}

// tree owns every cgroup directory a scenario created, to remove them all.
type tree struct {
	version int
	created []string // absolute directories, in creation order
	// ancestors are directories created only to give a group its path in
	// the cpu and freezer hierarchies; other scenarios running at the same
	// time may share them, so they are removed only when empty.
	ancestors map[string]bool
}

// mkdir creates dir and its missing ancestors. Scenario runs side by side
// (the matrix and the suite, two matrices) create and remove the shared
// cpu and freezer ancestors concurrently: one that appears meanwhile is
// used, one that vanishes meanwhile is created again.
func (t *tree) mkdir(dir string) error {
	var err error
	for range 5 {
		if err = t.mkdirOnce(dir); !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return err
}

func (t *tree) mkdirOnce(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	parent := filepath.Dir(dir)
	if _, err := os.Stat(parent); errors.Is(err, os.ErrNotExist) {
		if err := t.mkdirOnce(parent); err != nil {
			return err
		}
		if t.ancestors == nil {
			t.ancestors = map[string]bool{}
		}
		t.ancestors[parent] = true
	}
	if err := os.Mkdir(dir, 0o755); errors.Is(err, os.ErrExist) {
		return nil // created by a run beside this one
	} else if err != nil {
		return fmt.Errorf("create cgroup %s: %w", dir, err)
	}
	t.created = append(t.created, dir)
	return nil
}

// newGroup creates rel (relative to the hierarchy root) in every controller.
func (t *tree) newGroup(rel string) (*group, error) {
	g := &group{version: t.version, rel: rel, dirs: map[string]string{}}
	if t.version == 2 {
		g.dirs[""] = filepath.Join(cgroupRoot, rel)
	} else {
		for _, c := range v1Controllers {
			g.dirs[c] = filepath.Join(cgroupRoot, c, rel)
		}
	}
	for _, d := range g.dirs {
		if err := t.mkdir(d); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// remove kills whatever still runs in the created cgroups and removes them,
// deepest first. Only directories this tree created are touched.
func (t *tree) remove() error {
	var errs []error
	dirs := append([]string(nil), t.created...)
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	for _, d := range dirs {
		if t.ancestors[d] {
			_ = os.Remove(d) // busy while a concurrent scenario uses it
			continue
		}
		for try := 0; ; try++ {
			if t.version == 1 && strings.HasPrefix(d, filepath.Join(cgroupRoot, "freezer")) {
				_ = os.WriteFile(filepath.Join(d, "freezer.state"), []byte("THAWED"), 0)
			}
			if t.version == 2 {
				_ = os.WriteFile(filepath.Join(d, "cgroup.freeze"), []byte("0"), 0)
			}
			pids, _ := readPids(filepath.Join(d, "cgroup.procs"))
			for _, p := range pids {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
			err := os.Remove(d)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				break
			}
			if try == 100 {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	t.created = nil
	return errors.Join(errs...)
}

func readPids(file string) ([]int, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if p, err := strconv.Atoi(f); err == nil {
			pids = append(pids, p)
		}
	}
	return pids, nil
}

func (g *group) memDir() string {
	if g.version == 2 {
		return g.dirs[""]
	}
	return g.dirs["memory"]
}

func (g *group) write(controller, file, value string) error {
	d := g.dirs[controller]
	if g.version == 2 {
		d = g.dirs[""]
	}
	if err := os.WriteFile(filepath.Join(d, file), []byte(value), 0); err != nil {
		return fmt.Errorf("write %s/%s: %w", d, file, err)
	}
	return nil
}

// setLimit sets the hard memory limit (v2 memory.max, v1 limit_in_bytes).
func (g *group) setLimit(bytes int64) error {
	if g.version == 2 {
		return g.write("", "memory.max", strconv.FormatInt(bytes, 10))
	}
	return g.write("memory", "memory.limit_in_bytes", strconv.FormatInt(bytes, 10))
}

// enableChildren turns on memory, cpu and pids for g's children (v2).
func (g *group) enableChildren() error {
	if g.version != 2 {
		return nil
	}
	return g.write("", "cgroup.subtree_control", "+memory +cpu +pids")
}

// procsFiles lists the cgroup.procs files a process must be written to.
func (g *group) procsFiles() []string {
	var out []string
	for _, d := range g.dirs {
		out = append(out, filepath.Join(d, "cgroup.procs"))
	}
	sort.Strings(out)
	return out
}

// usage is the memory charged to the group in bytes.
func (g *group) usage() uint64 {
	f := "memory.current"
	if g.version == 1 {
		f = "memory.usage_in_bytes"
	}
	v, _ := readUint(filepath.Join(g.memDir(), f))
	return v
}

// oomKills is the kernel's OOM-kill counter of the group (v1
// memory.oom_control oom_kill, v2 memory.events oom_kill).
func (g *group) oomKills() uint64 {
	if g.version == 1 {
		return keyed(filepath.Join(g.memDir(), "memory.oom_control"), "oom_kill")
	}
	return keyed(filepath.Join(g.memDir(), "memory.events"), "oom_kill")
}

// refaults sums the workingset_refault* counters of memory.stat.
func (g *group) refaults() uint64 {
	b, err := os.ReadFile(filepath.Join(g.memDir(), "memory.stat"))
	if err != nil {
		return 0
	}
	var sum uint64
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && (f[0] == "workingset_refault" || f[0] == "workingset_refault_file" || f[0] == "workingset_refault_anon") {
			v, _ := strconv.ParseUint(f[1], 10, 64)
			sum += v
		}
	}
	return sum
}

// pressureTotal is the cgroup's memory PSI "some" total in µs (v2); on v1,
// which has no per-cgroup PSI, it is 0.
func (g *group) pressureTotal() uint64 {
	if g.version == 1 {
		return 0
	}
	return psiSomeTotal(filepath.Join(g.memDir(), "memory.pressure"))
}

// knobs is the group's settings an agent may change: vigil restores them,
// and the critical workload's must never change.
func (g *group) knobs() string {
	var files []string
	if g.version == 2 {
		files = []string{"memory.high", "memory.max", "cpu.max", "cgroup.freeze"}
	} else {
		files = []string{"memory/memory.limit_in_bytes", "memory/memory.soft_limit_in_bytes", "cpu/cpu.cfs_quota_us", "freezer/freezer.state"}
	}
	var parts []string
	for _, f := range files {
		var p string
		if g.version == 2 {
			p = filepath.Join(g.dirs[""], f)
		} else {
			c, name, _ := strings.Cut(f, "/")
			p = filepath.Join(g.dirs[c], name)
		}
		b, err := os.ReadFile(p)
		v := strings.TrimSpace(string(b))
		if err != nil {
			v = "?"
		}
		parts = append(parts, filepath.Base(f)+"="+v)
	}
	return strings.Join(parts, " ")
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 1<<63 - 1, nil
	}
	return strconv.ParseUint(s, 10, 64)
}

func keyed(path, key string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return parseKeyed(b, key)
}

func parseKeyed(b []byte, key string) uint64 {
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == key {
			v, _ := strconv.ParseUint(f[1], 10, 64)
			return v
		}
	}
	return 0
}

// psiSomeTotal reads total= of the "some" line of a PSI file.
func psiSomeTotal(path string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return parsePSI(b, "total")
}

// parsePSI returns field (avg10 ×100 as an integer, or total) of the "some"
// line.
func parsePSI(b []byte, field string) uint64 {
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "some" {
			continue
		}
		for _, kv := range f[1:] {
			k, v, _ := strings.Cut(kv, "=")
			if k != field {
				continue
			}
			if field == "total" {
				n, _ := strconv.ParseUint(v, 10, 64)
				return n
			}
			x, _ := strconv.ParseFloat(v, 64)
			return uint64(x * 100)
		}
	}
	return 0
}

func randomSuffix() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// frozen reports whether the group is frozen (v2 cgroup.events frozen 1, v1
// freezer.state FROZEN or FREEZING).
func (g *group) frozen() bool {
	if g.version == 2 {
		return keyed(filepath.Join(g.dirs[""], "cgroup.events"), "frozen") == 1
	}
	b, _ := os.ReadFile(filepath.Join(g.dirs["freezer"], "freezer.state"))
	s := strings.TrimSpace(string(b))
	return s == "FROZEN" || s == "FREEZING"
}

// missingMirrorAncestors lists the cpu and freezer directories on the way to
// this process's memory path that do not exist yet. Scenario groups get the
// memory path in those hierarchies too, so cells create them; cells running
// side by side share them, and the last one out may not be the one that
// created them. Pass the list to removeEmptyCgroups once every cell is done.
func missingMirrorAncestors() []string {
	if cgroupVersion() != 1 {
		return nil
	}
	own, err := ownMemoryPath(1)
	if err != nil {
		return nil
	}
	var missing []string
	for _, c := range []string{"cpu", "freezer"} {
		for p := own; p != "/" && p != "." && p != ""; p = filepath.Dir(p) {
			d := filepath.Join(cgroupRoot, c, p)
			if _, err := os.Stat(d); errors.Is(err, os.ErrNotExist) {
				missing = append(missing, d)
			}
		}
	}
	return missing
}

// removeEmptyCgroups removes, deepest first, those of dirs that are empty:
// a cgroup with children or processes cannot be removed and is left alone.
func removeEmptyCgroups(dirs []string) {
	sorted := append([]string(nil), dirs...)
	sort.Slice(sorted, func(i, j int) bool { return len(sorted[i]) > len(sorted[j]) })
	for _, d := range sorted {
		_ = os.Remove(d)
	}
}

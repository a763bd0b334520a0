// Package hostguard checks that vigil's tests leave the machine's cgroups
// alone: it snapshots every writable file of every cgroup not created by a
// test (no path element named vigil-test-*) and compares two snapshots.
//
// cgroupfs (kernfs) updates a file's mtime on every write(2), even one that
// writes the value already there, so comparing mtimes catches any write,
// including moving a process (cgroup.procs) or thawing a cgroup that was
// thawed. The values of the knobs that matter (limits, quotas, freezer
// state...) are compared too, for a readable report.
//
// Limits: the check is exact only when nothing but the suite writes to
// cgroups while it runs (systemd, a kubelet, another user's jobs show up
// as changes, attributed to no one); a cgroup created and removed during
// the run, or a pre-existing cgroup removed, is not compared (removals are
// listed); notification registrations (cgroup.event_control, PSI triggers
// on *.pressure) are writes that change nothing and are ignored; files
// that are not cgroupfs (e.g. /proc/<pid>/oom_score_adj of other
// processes) are out of scope.
package hostguard

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Root is where the cgroup hierarchies are mounted.
const Root = "/sys/fs/cgroup"

// knobs are the files whose values are recorded (others: mtime only).
var knobs = map[string]bool{
	"memory.limit_in_bytes": true, "memory.soft_limit_in_bytes": true, "memory.memsw.limit_in_bytes": true,
	"memory.swappiness": true, "memory.oom_control": true, "memory.use_hierarchy": true, "memory.move_charge_at_immigrate": true,
	"memory.high": true, "memory.max": true, "memory.low": true, "memory.min": true, "memory.swap.max": true, "memory.oom.group": true,
	"cpu.cfs_quota_us": true, "cpu.cfs_period_us": true, "cpu.shares": true, "cpu.max": true, "cpu.weight": true,
	"freezer.state": true, "cgroup.freeze": true, "pids.max": true, "cpuset.cpus": true, "cpuset.mems": true,
	"cgroup.subtree_control": true, "cgroup.type": true, "io.max": true, "blkio.weight": true,
	"cgroup.procs": true, "tasks": true,
}

// ignored are writable files whose writes register notifications and
// change no state.
func ignored(name string) bool {
	return name == "cgroup.event_control" || strings.HasSuffix(name, ".pressure")
}

// File is one writable cgroup file.
type File struct {
	MTime time.Time
	// Value is the content of a knob ("" for other files); for
	// cgroup.procs and tasks, the number of entries.
	Value string
}

// Snapshot is the state of every writable file of the guarded cgroups.
type Snapshot struct {
	Files map[string]File // absolute path -> file
	Dirs  map[string]bool // guarded cgroup directories
	Took  time.Duration
}

// TestGroup reports whether dir lies in a cgroup created by a test
// (cgtest names them vigil-test-*).
func TestGroup(dir string) bool {
	for _, el := range strings.Split(dir, "/") {
		if strings.HasPrefix(el, "vigil-test-") {
			return true
		}
	}
	return false
}

// Take snapshots the cgroups under root, skipping the directories for
// which exclude is true (and their descendants).
func Take(root string, exclude func(dir string) bool) (*Snapshot, error) {
	start := time.Now()
	s := &Snapshot{Files: map[string]File{}, Dirs: map[string]bool{}}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking
			}
			return err
		}
		if d.IsDir() {
			if exclude != nil && exclude(p) {
				return filepath.SkipDir
			}
			s.Dirs[p] = true
			return nil
		}
		if !d.Type().IsRegular() || ignored(d.Name()) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil // removed while walking
		}
		if info.Mode().Perm()&0o222 == 0 {
			return nil
		}
		f := File{MTime: info.ModTime()}
		if knobs[d.Name()] {
			b, err := os.ReadFile(p)
			if err != nil {
				return nil
			}
			f.Value = strings.TrimSpace(string(b))
			if d.Name() == "cgroup.procs" || d.Name() == "tasks" {
				f.Value = fmt.Sprintf("%d entries", len(strings.Fields(f.Value)))
			}
		}
		s.Files[p] = f
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("hostguard: walk %s: %w", root, err)
	}
	s.Took = time.Since(start)
	return s, nil
}

// Change is one difference between two snapshots.
type Change struct {
	Path   string
	Kind   string // "written" (mtime moved), "value" (knob changed), "removed" (cgroup gone)
	Before string
	After  string
}

func (c Change) String() string {
	switch c.Kind {
	case "removed":
		return c.Path + ": cgroup removed"
	case "value":
		return fmt.Sprintf("%s: %q -> %q", c.Path, c.Before, c.After)
	}
	return fmt.Sprintf("%s: written at %s (%s)", c.Path, c.After, c.Before)
}

// Compare lists what changed from before to after in the cgroups present
// in both, and the cgroups that were removed. Process counts of
// cgroup.procs and tasks change as processes come and go, so they count
// only when the file itself was written.
func Compare(before, after *Snapshot) []Change {
	var out []Change
	for p, b := range before.Files {
		a, ok := after.Files[p]
		if !ok {
			continue // its cgroup was removed: reported below
		}
		name := filepath.Base(p)
		counts := name == "cgroup.procs" || name == "tasks"
		switch {
		case a.Value != b.Value && !counts:
			out = append(out, Change{Path: p, Kind: "value", Before: b.Value, After: a.Value})
		case !a.MTime.Equal(b.MTime):
			c := Change{Path: p, Kind: "written", Before: b.Value, After: a.MTime.Format(time.RFC3339Nano)}
			if counts {
				c.Before = b.Value + " -> " + a.Value
			}
			out = append(out, c)
		}
	}
	for d := range before.Dirs {
		if !after.Dirs[d] {
			out = append(out, Change{Path: d, Kind: "removed"})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

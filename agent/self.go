package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vigil-agent/vigil/agent/config"
)

// Degraded reasons of self-protection (vigil_degraded{reason}).
const (
	degradedSelfCgroup     = "self_cgroup"
	degradedSelfMemProtect = "self_memory_protection"
)

// protectSelfCgroup moves the agent into its dedicated cgroup (self.cgroup)
// and, on cgroup v2, sets memory.min and memory.low there. It never writes
// to a cgroup it did not create unless that cgroup holds no other process
// (an agent restarting into the cgroup its predecessor created). Whatever
// fails leaves the agent running where it is, degraded.
func (a *Agent) protectSelfCgroup(cfg *config.Config) {
	s := cfg.Self
	if s.Cgroup == "" {
		return
	}
	dir, v2, err := selfCgroupDir(cfg.HostRoot, s.Cgroup)
	if err == nil {
		err = enterOwnCgroup(dir, os.Getpid())
	}
	if err != nil {
		a.log.Warn("running outside the dedicated cgroup", "cgroup", s.Cgroup, "err", err)
		a.SetDegraded(degradedSelfCgroup, err.Error())
		return
	}
	a.SetDegraded(degradedSelfCgroup, "")
	a.log.Info("running in the dedicated cgroup", "cgroup", s.Cgroup, "dir", dir)
	if s.MemoryMinBytes == 0 && s.MemoryLowBytes == 0 {
		return
	}
	if !v2 {
		a.log.Warn("memory.min and memory.low need cgroup v2; the agent's memory is not protected", "cgroup", s.Cgroup)
		a.SetDegraded(degradedSelfMemProtect, "cgroup v1 has no memory.min or memory.low")
		return
	}
	var errs []error
	for _, kv := range []struct {
		file  string
		value int64
	}{{"memory.min", s.MemoryMinBytes}, {"memory.low", s.MemoryLowBytes}} {
		if kv.value == 0 {
			continue
		}
		f := filepath.Join(dir, kv.file)
		if err := os.WriteFile(f, []byte(strconv.FormatInt(kv.value, 10)), 0); err != nil {
			errs = append(errs, fmt.Errorf("write %s: %w", f, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		a.log.Warn("cannot protect the agent's memory", "cgroup", s.Cgroup, "err", err)
		a.SetDegraded(degradedSelfMemProtect, err.Error())
		return
	}
	a.SetDegraded(degradedSelfMemProtect, "")
}

// selfCgroupDir maps a cgroup path to its directory: the unified hierarchy
// on v2, the memory controller's on v1.
func selfCgroupDir(hostRoot, cgroup string) (dir string, v2 bool, err error) {
	root := filepath.Join(hostRoot, "sys", "fs", "cgroup")
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err == nil {
		return filepath.Join(root, cgroup), true, nil
	}
	mem := filepath.Join(root, "memory")
	if _, err := os.Stat(filepath.Join(mem, "cgroup.procs")); err != nil {
		return "", false, fmt.Errorf("no cgroup v2 or v1 memory hierarchy under %s: %w", root, err)
	}
	return filepath.Join(mem, cgroup), false, nil
}

// enterOwnCgroup creates dir (with its parents) and moves pid into it. An
// existing dir is used only when no process other than pid is in it.
func enterOwnCgroup(dir string, pid int) error {
	parent := filepath.Dir(dir)
	if _, err := os.Stat(parent); err != nil {
		return fmt.Errorf("parent cgroup %s: %w", parent, err)
	}
	err := os.Mkdir(dir, 0o755)
	if errors.Is(err, fs.ErrExist) {
		b, rerr := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if rerr != nil {
			return fmt.Errorf("existing cgroup %s: %w", dir, rerr)
		}
		for _, f := range strings.Fields(string(b)) {
			if f != strconv.Itoa(pid) {
				return fmt.Errorf("cgroup %s exists and holds process %s: not writing to a cgroup vigil did not create", dir, f)
			}
		}
	} else if err != nil {
		return fmt.Errorf("create cgroup %s: %w", dir, err)
	}
	procs := filepath.Join(dir, "cgroup.procs")
	if err := os.WriteFile(procs, []byte(strconv.Itoa(pid)), 0); err != nil {
		return fmt.Errorf("move pid %d into %s: %w", pid, procs, err)
	}
	return nil
}

// procCgroup is one line of /proc/<pid>/cgroup.
type procCgroup struct {
	ID          int
	Controllers []string // empty for the v2 entry
	Path        string
}

// readProcCgroup reads /proc/<pid>/cgroup.
func readProcCgroup(pid int) ([]procCgroup, error) {
	file := fmt.Sprintf("/proc/%d/cgroup", pid)
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	out, err := parseProcCgroup(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return out, nil
}

// parseProcCgroup parses the "id:controllers:path" lines of
// /proc/<pid>/cgroup. Blank lines are skipped; a malformed line is an error.
func parseProcCgroup(b []byte) ([]procCgroup, error) {
	var out []procCgroup
	for n, line := range bytes.Split(b, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		parts := strings.SplitN(string(line), ":", 3)
		if len(parts) != 3 {
			return nil, fmt.Errorf("line %d: want id:controllers:path, got %q", n+1, line)
		}
		id, err := strconv.Atoi(parts[0])
		if err != nil || id < 0 {
			return nil, fmt.Errorf("line %d: bad hierarchy id %q", n+1, parts[0])
		}
		if !strings.HasPrefix(parts[2], "/") {
			return nil, fmt.Errorf("line %d: path %q is not absolute", n+1, parts[2])
		}
		e := procCgroup{ID: id, Path: parts[2]}
		if parts[1] != "" {
			e.Controllers = strings.Split(parts[1], ",")
		}
		out = append(out, e)
	}
	return out, nil
}

// cgroupOf returns the path of controller ("" for the v2 entry).
func cgroupOf(entries []procCgroup, controller string) (string, bool) {
	for _, e := range entries {
		if controller == "" && e.ID == 0 && len(e.Controllers) == 0 {
			return e.Path, true
		}
		for _, c := range e.Controllers {
			if c == controller {
				return e.Path, true
			}
		}
	}
	return "", false
}

package main

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// memRoot is where the cgroup v1 memory controller is mounted.
const memRoot = "/sys/fs/cgroup/memory"

// ownMemoryCgroup is this process's memory cgroup, relative to memRoot.
func ownMemoryCgroup() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("read /proc/self/cgroup: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "memory" {
				return parts[2], nil
			}
		}
	}
	return "", errors.New("no cgroup v1 memory controller in /proc/self/cgroup (cgroup v2 host?)")
}

// farm is a vigil-bench-<random> memory cgroup under our own with children,
// each holding one live idle process.
type farm struct {
	Rel   string // parent, relative to memRoot
	Dir   string
	procs []*exec.Cmd
}

// randomName is vigil-bench-<our pid>-<random>: the pid tells a later run
// whether the group's creator is still alive.
func randomName() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("vigil-bench-%d-%s", os.Getpid(), hex.EncodeToString(b))
}

// staleGroup reports whether a vigil-bench-<pid>-<random> group was left
// by a bench process that is gone (another bench run may be in progress).
func staleGroup(name string) bool {
	parts := strings.Split(name, "-")
	if len(parts) != 4 {
		return false
	}
	pid, err := strconv.Atoi(parts[2])
	if err != nil || pid == os.Getpid() {
		return false
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return err != nil || len(comm) == 0
}

// newFarm creates the parent group. Stale vigil-bench-* groups a killed run
// left behind under our own cgroup are removed first (only this command
// creates that name; groups of a bench process still alive are left).
func newFarm() (*farm, error) {
	own, err := ownMemoryCgroup()
	if err != nil {
		return nil, err
	}
	ownDir := filepath.Join(memRoot, own)
	stale, _ := filepath.Glob(filepath.Join(ownDir, "vigil-bench-*"))
	for _, d := range stale {
		if staleGroup(filepath.Base(d)) {
			_ = removeTree(d)
		}
	}
	f := &farm{Rel: filepath.Join(own, randomName())}
	f.Dir = filepath.Join(memRoot, f.Rel)
	if err := os.Mkdir(f.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", f.Dir, err)
	}
	return f, nil
}

// idleCommand is the tiny process each cgroup holds.
func idleCommand() *exec.Cmd {
	cmd := exec.Command("sleep", "infinity")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// addChildren creates n children c00000.. each with a live sleep process.
func (f *farm) addChildren(n int) error {
	for i := range n {
		dir := filepath.Join(f.Dir, fmt.Sprintf("c%05d", i))
		if err := os.Mkdir(dir, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
		cmd := idleCommand()
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start idle process: %w", err)
		}
		f.procs = append(f.procs, cmd)
		if err := moveTo(dir, cmd.Process.Pid); err != nil {
			return err
		}
	}
	return nil
}

// child creates one empty child group with a memory limit.
func (f *farm) child(name string, limit uint64) (string, error) {
	dir := filepath.Join(f.Dir, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", dir, err)
	}
	if limit > 0 {
		if err := os.WriteFile(filepath.Join(dir, "memory.limit_in_bytes"), []byte(strconv.FormatUint(limit, 10)), 0); err != nil {
			return "", fmt.Errorf("set limit on %s: %w", dir, err)
		}
	}
	return dir, nil
}

func moveTo(dir string, pid int) error {
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		return fmt.Errorf("move pid %d to %s: %w", pid, dir, err)
	}
	return nil
}

// Close kills every process the farm started (by pid) and removes the tree.
func (f *farm) Close() error {
	for _, c := range f.procs {
		_ = c.Process.Kill()
	}
	for _, c := range f.procs {
		_ = c.Wait()
	}
	f.procs = nil
	return removeTree(f.Dir)
}

// removeTree kills what still runs in a bench group (it is ours) and
// removes it bottom-up.
func removeTree(dir string) error {
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	var lastErr error
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		for try := 0; try < 50; try++ {
			for _, pid := range readPids(filepath.Join(d, "cgroup.procs")) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			if err := os.Remove(d); err == nil || os.IsNotExist(err) {
				lastErr = nil
				break
			} else {
				lastErr = fmt.Errorf("remove %s: %w", d, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return lastErr
}

func readPids(file string) []int {
	fh, err := os.Open(file)
	if err != nil {
		return nil
	}
	defer fh.Close()
	var pids []int
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		if pid, err := strconv.Atoi(strings.TrimSpace(sc.Text())); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

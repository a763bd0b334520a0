// Package cgtest creates throw-away cgroups for vigil's tests, on the real
// hierarchy of the machine (cgroup v1 on the host, cgroup v2 inside the test
// microVM), and runs helper processes in them.
//
// Every group is created as a child of the cgroup the test process itself is
// in for that controller (read from /proc/self/cgroup), named
// vigil-test-<random>, and removed by t.Cleanup after killing whatever still
// runs in it. Nothing else on the machine is ever written.
package cgtest

import (
	"bufio"
	"bytes"
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
	"testing"
	"time"
)

// Root is where the cgroup filesystems are mounted.
const Root = "/sys/fs/cgroup"

// Version reports the cgroup version that owns the memory controller on this
// machine: 2 if the unified hierarchy has it, else 1.
func Version() int {
	b, err := os.ReadFile(filepath.Join(Root, "cgroup.controllers"))
	if err == nil && bytes.Contains(b, []byte("memory")) {
		return 2
	}
	return 1
}

// OwnPath returns the path, relative to the hierarchy root, of the cgroup
// this process is in for controller ("" selects the v2 unified entry).
func OwnPath(controller string) (string, error) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// hierarchy-ID:controller-list:path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if controller == "" && parts[0] == "0" && parts[1] == "" {
			return parts[2], nil
		}
		if controller == "" {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == controller {
				return parts[2], nil
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("cgtest: controller %q not in /proc/self/cgroup", controller)
}

// Group is a test cgroup. On v1 it exists in each requested controller with
// the same relative path; on v2 it is one directory.
type Group struct {
	// Version is 1 or 2.
	Version int
	// Name is the last path element (vigil-test-<random> for a top group).
	Name string
	dirs map[string]string // controller ("" on v2) -> absolute directory
	rels map[string]string // controller -> path relative to the hierarchy root
}

// New creates a group under this process's own cgroup. On v1 it is created
// in every listed controller (default: memory); on v2 the controllers are
// ignored: the group gets whatever its parent's subtree_control enables.
func New(t testing.TB, controllers ...string) *Group {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("cgtest: creating cgroups needs root")
	}
	g := &Group{Version: Version(), Name: "vigil-test-" + randomSuffix(), dirs: map[string]string{}, rels: map[string]string{}}
	if g.Version == 2 {
		own, err := OwnPath("")
		if err != nil {
			t.Fatal(err)
		}
		g.add(t, "", Root, own)
		return g
	}
	if len(controllers) == 0 {
		controllers = []string{"memory"}
	}
	for _, c := range controllers {
		own, err := OwnPath(c)
		if err != nil {
			t.Fatal(err)
		}
		g.add(t, c, filepath.Join(Root, c), own)
	}
	return g
}

func (g *Group) add(t testing.TB, controller, mount, parentRel string) {
	t.Helper()
	rel := filepath.Join(parentRel, g.Name)
	dir := filepath.Join(mount, rel)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("cgtest: %v", err)
	}
	g.dirs[controller] = dir
	g.rels[controller] = rel
	t.Cleanup(func() { removeTree(t, dir) })
}

// Child creates a sub-group of g (in the same controllers), removed at cleanup
// before g. On v2 it first enables the memory, cpu and pids controllers for
// g's children.
func (g *Group) Child(t testing.TB, name string) *Group {
	t.Helper()
	c := &Group{Version: g.Version, Name: name, dirs: map[string]string{}, rels: map[string]string{}}
	if g.Version == 2 {
		g.Write(t, "", "cgroup.subtree_control", "+memory +cpu +pids")
	}
	for ctrl, dir := range g.dirs {
		mount := strings.TrimSuffix(dir, g.rels[ctrl])
		c.add(t, ctrl, mount, g.rels[ctrl])
	}
	return c
}

// Dir is the group's absolute directory for controller ("" or any on v2).
func (g *Group) Dir(controller string) string {
	if g.Version == 2 {
		return g.dirs[""]
	}
	d, ok := g.dirs[controller]
	if !ok {
		panic(fmt.Sprintf("cgtest: group %s was not created in controller %q", g.Name, controller))
	}
	return d
}

// Path is the group's path relative to the hierarchy root (as vigil reports
// cgroup paths), e.g. /user.slice/vigil-test-1a2b.
func (g *Group) Path() string {
	if g.Version == 2 {
		return g.rels[""]
	}
	if p, ok := g.rels["memory"]; ok {
		return p
	}
	for _, p := range g.rels {
		return p
	}
	return ""
}

// Write writes value to file in the group's directory for controller.
func (g *Group) Write(t testing.TB, controller, file, value string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(g.Dir(controller), file), []byte(value), 0); err != nil {
		t.Fatalf("cgtest: write %s: %v", file, err)
	}
}

// Read returns the trimmed content of file in the group's directory.
func (g *Group) Read(t testing.TB, controller, file string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(g.Dir(controller), file))
	if err != nil {
		t.Fatalf("cgtest: %v", err)
	}
	return strings.TrimSpace(string(b))
}

// ReadUint reads a file holding one integer.
func (g *Group) ReadUint(t testing.TB, controller, file string) uint64 {
	t.Helper()
	s := g.Read(t, controller, file)
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("cgtest: %s: %v", file, err)
	}
	return v
}

// KeyedValue returns the value of key in a "key value" file such as
// memory.stat or memory.events.
func (g *Group) KeyedValue(t testing.TB, controller, file, key string) uint64 {
	t.Helper()
	for _, line := range strings.Split(g.Read(t, controller, file), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == key {
			v, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				t.Fatalf("cgtest: %s %s: %v", file, key, err)
			}
			return v
		}
	}
	t.Fatalf("cgtest: %s has no key %q", file, key)
	return 0
}

// Procs lists the pids in the group (memory controller on v1).
func (g *Group) Procs(t testing.TB) []int {
	t.Helper()
	pids, err := readPids(filepath.Join(g.Dir("memory"), "cgroup.procs"))
	if err != nil {
		t.Fatalf("cgtest: %v", err)
	}
	return pids
}

// Command returns a command that runs argv inside the group: a shell moves
// itself into the group (in every controller) and then execs argv, so the
// process is charged to the group from its first allocation.
func (g *Group) Command(argv ...string) *exec.Cmd {
	var script strings.Builder
	for _, dir := range g.dirs {
		fmt.Fprintf(&script, "echo $$ > %s/cgroup.procs || exit 111; ", shellQuote(dir))
	}
	script.WriteString(`exec "$@"`)
	cmd := exec.Command("/bin/sh", append([]string{"-c", script.String(), "sh"}, argv...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// Start starts cmd (made by Command or Allocator) and registers its cleanup:
// the process is killed and reaped when the test ends.
func Start(t testing.TB, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatalf("cgtest: start %v: %v", cmd.Args, err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
}

// removeTree kills every process left in dir's subtree and removes the
// directories, deepest first. It only ever touches dir and below.
func removeTree(t testing.TB, dir string) {
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		deadline := time.Now().Add(5 * time.Second)
		for {
			// Thaw first on v1 freezer / v2 cgroup.freeze: frozen tasks cannot die.
			_ = os.WriteFile(filepath.Join(d, "freezer.state"), []byte("THAWED"), 0)
			_ = os.WriteFile(filepath.Join(d, "cgroup.freeze"), []byte("0"), 0)
			pids, _ := readPids(filepath.Join(d, "cgroup.procs"))
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			err := os.Remove(d)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("cgtest: cannot remove %s: %v (procs %v)", d, err, pids)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
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

func randomSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

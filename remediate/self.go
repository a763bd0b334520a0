package remediate

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vigil-agent/vigil/rules"
)

// ownCgroup is the memory cgroup holding pid as the host's hierarchy names
// it. /proc/<pid>/cgroup names it relative to the reader's cgroup namespace:
// on a cgroup v2 node a pod's container has a private one and reads "0::/",
// which taken literally would make every cgroup on the node "vigil itself".
// So the path read there is checked against the hierarchy res places it in
// (its cgroup.procs must list pid) and, failing that, the hierarchy is
// searched for the cgroup that does, preferring one whose path ends with
// the namespace-relative path. When nothing lists pid, the path read is
// kept: refusing too much is the safe side.
func ownCgroup(res Resolver, pid int) string {
	rel := procCgroup(pid)
	if rel == "" || res == nil {
		return rel
	}
	dir := func(p string) string {
		loc, err := res(rules.Target{Kind: "cgroup", Path: p})
		if err != nil {
			return ""
		}
		return memoryDir(loc)
	}
	if listsPid(dir(rel), pid) {
		return rel
	}
	root := dir("/")
	if root == "" {
		return rel
	}
	var found []string
	const maxDirs = 100000 // a bound on a malformed or looping hierarchy
	seen := 0
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if seen++; seen > maxDirs {
			return filepath.SkipAll
		}
		if listsPid(p, pid) {
			found = append(found, "/"+strings.TrimPrefix(strings.TrimPrefix(p, root), "/"))
		}
		return nil
	})
	for _, f := range found {
		if rel == "/" || strings.HasSuffix(f, rel) {
			return f
		}
	}
	if len(found) > 0 {
		return found[0]
	}
	return rel
}

// procCgroup is pid's memory cgroup path from /proc/<pid>/cgroup: the v1
// memory controller's line, else the v2 "0::" line.
func procCgroup(pid int) string {
	paths, err := procCgroups(pid)
	if err != nil {
		return ""
	}
	if p, ok := paths["memory"]; ok {
		return p
	}
	return paths[""]
}

// procCgroups maps each controller named in /proc/<pid>/cgroup to pid's
// path in it ("4:cpu,cpuacct:/a" gives cpu and cpuacct); the v2 "0::"
// line is under "".
func procCgroups(pid int) (map[string]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return nil, err
	}
	paths := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			paths[""] = parts[2]
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c != "" {
				paths[c] = parts[2]
			}
		}
	}
	return paths, nil
}

// listsPid reports whether the cgroup directory dir holds pid.
func listsPid(dir string, pid int) bool {
	if dir == "" {
		return false
	}
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return false
	}
	want := []byte(strconv.Itoa(pid))
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if bytes.Equal(line, want) {
			return true
		}
	}
	return false
}

// memoryDir is the directory of loc's memory cgroup: the unified one on v2,
// the memory controller's on v1.
func memoryDir(loc Location) string {
	if loc.Version == 2 {
		return filepath.Join(loc.Root, loc.Paths[""])
	}
	return filepath.Join(loc.Root, "memory", loc.Paths["memory"])
}

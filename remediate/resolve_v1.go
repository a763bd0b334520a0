package remediate

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// maxResolveDirs bounds the walk of a target's subtree (and of the
// candidate controller cgroup) when resolving a v1 path by membership.
const maxResolveDirs = 10000

// v1ControllerPath is the path of the v1 controller's cgroup that holds
// the processes of the memory cgroup memPath and nothing else.
//
// Where every controller is at one path (kubelet, container runtimes,
// systemd with the controller delegated) that is memPath itself. Where not
// (a systemd service without CPUAccounting stays in the root cpu cgroup;
// a runtime may place memory and cpu differently), the processes of the
// memory subtree are looked up in /proc/<pid>/cgroup: they must all be in
// one controller cgroup, not the root, whose whole subtree holds only
// them. Anything else would throttle or freeze processes that are not the
// target's, and is refused with the reason.
func v1ControllerPath(root, controller, memPath string) (string, error) {
	if st, err := os.Stat(filepath.Join(root, controller, memPath)); err == nil && st.IsDir() {
		return memPath, nil
	}
	members, err := subtreePids(filepath.Join(root, "memory", memPath))
	if err != nil {
		return "", fmt.Errorf("not at %s in %s, and its processes cannot be listed: %v", memPath, controller, err)
	}
	if len(members) == 0 {
		return "", fmt.Errorf("not at %s in %s, and it has no processes to find its %s cgroup by", memPath, controller, controller)
	}
	var path string
	for pid := range members {
		p, err := procControllerPath(pid, controller)
		if errors.Is(err, fs.ErrNotExist) {
			continue // exited meanwhile
		}
		if err != nil {
			return "", err
		}
		if path != "" && p != path {
			return "", fmt.Errorf("its processes are in several %s cgroups (%s, %s)", controller, path, p)
		}
		path = p
	}
	switch path {
	case "":
		return "", fmt.Errorf("not at %s in %s, and its processes exited", memPath, controller)
	case "/":
		return "", fmt.Errorf("its processes share the root %s cgroup with the rest of the host", controller)
	}
	dir := filepath.Join(root, controller, path)
	inside, err := subtreePids(dir)
	if err != nil {
		return "", fmt.Errorf("%s cgroup %s: %v", controller, path, err)
	}
	for pid := range inside {
		if !members[pid] {
			return "", fmt.Errorf("its %s cgroup %s also holds pid %d, which is not in it", controller, path, pid)
		}
	}
	return path, nil
}

// subtreePids lists the processes of the cgroup directory dir and its
// descendants.
func subtreePids(dir string) (map[int]bool, error) {
	pids := map[int]bool{}
	seen := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == dir {
				return err
			}
			return nil // a descendant removed meanwhile
		}
		if !d.IsDir() {
			return nil
		}
		if seen++; seen > maxResolveDirs {
			return fmt.Errorf("more than %d cgroups under %s", maxResolveDirs, dir)
		}
		list, err := readPids(filepath.Join(p, "cgroup.procs"))
		if err != nil && p == dir {
			return err
		}
		for _, pid := range list {
			pids[pid] = true
		}
		return nil
	})
	return pids, err
}

// procControllerPath is pid's cgroup path in the v1 controller.
func procControllerPath(pid int, controller string) (string, error) {
	paths, err := procCgroups(pid)
	if err != nil {
		return "", err
	}
	p, ok := paths[controller]
	if !ok {
		return "", fmt.Errorf("pid %d is in no %s cgroup", pid, controller)
	}
	return p, nil
}

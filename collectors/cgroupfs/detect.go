package cgroupfs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/cgroups/v3"
	"golang.org/x/sys/unix"

	"github.com/vigil-agent/vigil/collectors"
)

// ErrNoMemoryController is returned by New when no cgroup hierarchy under the
// host root has the memory controller.
var ErrNoMemoryController = errors.New("no cgroup memory controller found")

// Hierarchy modes, as in collectors.Hierarchy.Mode.
const (
	ModeUnified = "unified"
	ModeHybrid  = "hybrid"
	ModeLegacy  = "legacy"
)

// detect finds the memory hierarchy under hostRoot.
func detect(hostRoot string) (collectors.Hierarchy, error) {
	base := filepath.Join(hostRoot, "sys/fs/cgroup")
	var mode cgroups.CGMode
	if filepath.Clean(hostRoot) == "/" {
		// Our own host: containerd's detection (statfs of the mounts) is the
		// one the runtimes on this host use too.
		mode = cgroups.Mode()
	} else {
		mode = modeAt(base)
	}
	switch mode {
	case cgroups.Unified:
		if !hasController(filepath.Join(base, "cgroup.controllers"), "memory") {
			return collectors.Hierarchy{}, fmt.Errorf("%s: unified hierarchy without the memory controller: %w", base, ErrNoMemoryController)
		}
		return collectors.Hierarchy{Mode: ModeUnified, MemoryRoot: base, Version: 2}, nil
	case cgroups.Hybrid, cgroups.Legacy:
		name := ModeLegacy
		if mode == cgroups.Hybrid {
			name = ModeHybrid
		}
		if dir, ok := v1MemoryDir(base); ok {
			return collectors.Hierarchy{Mode: name, MemoryRoot: dir, Version: 1}, nil
		}
		// A hybrid host may give the memory controller to the v2 mount.
		unified := filepath.Join(base, "unified")
		if mode == cgroups.Hybrid && hasController(filepath.Join(unified, "cgroup.controllers"), "memory") {
			return collectors.Hierarchy{Mode: name, MemoryRoot: unified, Version: 2}, nil
		}
		return collectors.Hierarchy{}, fmt.Errorf("%s: %s hierarchy without a memory mount: %w", base, name, ErrNoMemoryController)
	}
	return collectors.Hierarchy{}, fmt.Errorf("%s: no cgroup filesystem: %w", base, ErrNoMemoryController)
}

// modeAt tells the cgroup layout at base the way containerd's cgroups.Mode
// does (statfs magic), and also recognises a copied tree (tests, or a host
// root that is not a live mount) by its files.
func modeAt(base string) cgroups.CGMode {
	if _, err := os.Stat(base); err != nil {
		return cgroups.Unavailable
	}
	if isCgroup2(base) {
		return cgroups.Unified
	}
	if isCgroup2(filepath.Join(base, "unified")) {
		return cgroups.Hybrid
	}
	return cgroups.Legacy
}

func isCgroup2(dir string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return true
	}
	_, err := os.Stat(filepath.Join(dir, "cgroup.controllers"))
	return err == nil
}

// v1MemoryDir finds the v1 memory mount under base: "memory", or a co-mounted
// directory such as "cpu,memory".
func v1MemoryDir(base string) (string, bool) {
	isMemory := func(dir string) bool {
		_, err := os.Stat(filepath.Join(dir, "memory.usage_in_bytes"))
		return err == nil
	}
	if dir := filepath.Join(base, "memory"); isMemory(dir) {
		return dir, true
	}
	entries, err := os.ReadDir(base)
	if err != nil {
		return "", false
	}
	for _, e := range entries {
		for _, c := range strings.Split(e.Name(), ",") {
			if c == "memory" {
				if dir := filepath.Join(base, e.Name()); isMemory(dir) {
					return dir, true
				}
			}
		}
	}
	return "", false
}

func hasController(file, name string) bool {
	b, err := os.ReadFile(file)
	if err != nil {
		return false
	}
	for _, f := range bytes.Fields(b) {
		if string(f) == name {
			return true
		}
	}
	return false
}

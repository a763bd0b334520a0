package remediate

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/vigil-agent/vigil/test/cgtest"
	vmtest "github.com/vigil-agent/vigil/test/vm"
)

const ownCgroupProbeEnv = "VIGIL_OWN_CGROUP_PROBE"

// runOwnCgroupProbe is the test binary run as a probe: it prints what
// ownCgroup and /proc/self/cgroup say of itself.
func runOwnCgroupProbe() int {
	v := cgtest.Version()
	fmt.Printf("proc=%s own=%s\n", procCgroup(os.Getpid()), ownCgroup(DefaultResolver("/sys/fs/cgroup", v), os.Getpid()))
	return 0
}

// TestOwnCgroupInsideCgroupNamespace: a process in its own cgroup namespace
// (as a pod's container on a cgroup v2 node) reads "/" in /proc/self/cgroup;
// vigil still finds its cgroup as the host names it, so the safety check
// does not take every cgroup on the node for vigil itself.
func TestOwnCgroupInsideCgroupNamespace(t *testing.T) { testOwnCgroupInNamespace(t) }

// TestV2OwnCgroupInsideCgroupNamespace is the same on cgroup v2, where
// containerd gives containers a private cgroup namespace by default.
func TestV2OwnCgroupInsideCgroupNamespace(t *testing.T) {
	vmtest.RequireGuest(t)
	testOwnCgroupInNamespace(t)
}

func testOwnCgroupInNamespace(t *testing.T) {
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) not installed")
	}
	g := cgtest.New(t)
	for _, ns := range []bool{false, true} {
		argv := []string{os.Args[0], "-test.run=^$"}
		if ns {
			argv = append([]string{"unshare", "--cgroup"}, argv...)
		}
		cmd := g.Command(argv...)
		cmd.Env = append(os.Environ(), ownCgroupProbeEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("probe %v: %v\n%s", argv, err, out)
		}
		var proc, own string
		if _, err := fmt.Sscanf(strings.TrimSpace(string(out)), "proc=%s own=%s", &proc, &own); err != nil {
			t.Fatalf("probe output %q: %v", out, err)
		}
		if ns && proc != "/" {
			t.Fatalf("inside a new cgroup namespace /proc/self/cgroup says %q, want /", proc)
		}
		if own != g.Path() {
			t.Errorf("namespace %v: ownCgroup = %q (proc %q), want %q", ns, own, proc, g.Path())
		}
	}
}

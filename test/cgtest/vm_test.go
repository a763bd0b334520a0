package cgtest

import (
	"testing"

	vmtest "github.com/vigil-agent/vigil/test/vm"
)

// TestCgroupV2VM runs the cgtest tests again on a real cgroup v2 kernel.
//
// TestGroupLifecycle is left out until it creates its child group before
// starting a process in the parent: on v2, enabling controllers in the
// subtree_control of a group that has processes fails with EBUSY (the
// "no internal processes" rule).
func TestCgroupV2VM(t *testing.T) {
	vmtest.Run(t, "^Test(AllocatorIsChargedToGroup|OOMKillInsideLimit)$")
}

package cgtest

import (
	"testing"

	vmtest "github.com/vigil-agent/vigil/test/vm"
)

// TestCgroupV2VM runs the cgtest tests again on a real cgroup v2 kernel.
func TestCgroupV2VM(t *testing.T) {
	vmtest.Run(t, "^Test(GroupLifecycle|AllocatorIsChargedToGroup|OOMKillInsideLimit)$")
}

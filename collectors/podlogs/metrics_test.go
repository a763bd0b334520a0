package podlogs

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetrics(t *testing.T) {
	root := t.TempDir()
	p := logFile(t, root, "shop", "cart-1", "app", 0)
	appendTo(t, p, cri("stderr", 0, "java.lang.OutOfMemoryError: Java heap space", "ok", "fork: Cannot allocate memory"))
	tl, _ := newTailer(t, Options{Root: root, Patterns: memPatterns})
	poll(t, tl, 1)
	want := `
# HELP vigil_container_log_lines_total Complete log messages read from the container's CRI log files.
# TYPE vigil_container_log_lines_total counter
vigil_container_log_lines_total{container="app",namespace="shop",pod="cart-1"} 3
# HELP vigil_container_log_pattern_matches_total Log messages of the container that matched the pattern.
# TYPE vigil_container_log_pattern_matches_total counter
vigil_container_log_pattern_matches_total{container="app",namespace="shop",pattern="enomem",pod="cart-1"} 1
vigil_container_log_pattern_matches_total{container="app",namespace="shop",pattern="java_oom",pod="cart-1"} 1
`
	if err := testutil.CollectAndCompare(tl, strings.NewReader(want), "vigil_container_log_lines_total", "vigil_container_log_pattern_matches_total"); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.CollectAndLint(tl); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

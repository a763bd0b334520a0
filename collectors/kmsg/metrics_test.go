package kmsg

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetrics(t *testing.T) {
	_, r := readAll(t, filepath.Join("testdata", "v1-5.2-memcg.kmsg"), Options{})
	want := `
# HELP vigil_kmsg_oom_events_total Kernel OOM kills parsed from the kernel log.
# TYPE vigil_kmsg_oom_events_total counter
vigil_kmsg_oom_events_total 1
# HELP vigil_kmsg_records_total Kernel log records read.
# TYPE vigil_kmsg_records_total counter
vigil_kmsg_records_total 47
`
	if err := testutil.CollectAndCompare(r, strings.NewReader(want), "vigil_kmsg_oom_events_total", "vigil_kmsg_records_total"); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.CollectAndLint(r); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

package telemetry

import (
	"context"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/collectors/kmsg"
	"github.com/vigil-agent/vigil/test/otelcol"
)

// TestForwardKernelOOMEvent reads a real kernel OOM report (the 4.18
// kubepods fixture) with the kmsg reader and forwards the event: the
// collector receives it tagged vigil.oom with the cgroup, the pod identity
// and the kernel's figures as attributes.
func TestForwardKernelOOMEvent(t *testing.T) {
	c := otelcol.Start(t)
	f, _ := newForwarder(t, ForwarderConfig{Address: c.Forward})
	r, err := kmsg.NewReader("../../collectors/kmsg/testdata/v1-4.18-el8-memcg.kmsg", kmsg.Options{
		BootID: "fixture", BootTime: time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC),
		Handler: func(evs []kmsg.OOMEvent) {
			for _, ev := range evs {
				rec, err := Record(ev)
				if err != nil {
					t.Error(err)
					continue
				}
				delete(rec, "report") // the raw report stays in the journal
				if !f.Post(KindOOM, ev.Time, rec) {
					t.Error("Post refused")
				}
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	logs := c.WaitLogs(t, 15*time.Second, func(l []otelcol.LogRecord) bool { return len(l) >= 1 })
	got := logs[0]
	if got.Attrs["fluent.tag"] != "vigil.oom" || got.Attrs["pid"] != int64(7093) || got.Attrs["comm"] != "java" ||
		got.Attrs["anon_rss_kib"] != int64(1968776) || got.Attrs["constraint"] != "CONSTRAINT_MEMCG" {
		t.Errorf("attributes %v", got.Attrs)
	}
	id, _ := got.Attrs["identity"].(map[string]any)
	if id["pod_uid"] != "d63c4bbe-5f18-11ec-bdcd-d094668d7dd6" || id["kind"] != "container" {
		t.Errorf("identity %v", id)
	}
	if want := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC).Add(20148497800391 * time.Microsecond); !got.Time.Equal(want) {
		t.Errorf("record time %v, want the kill time %v", got.Time, want)
	}
}

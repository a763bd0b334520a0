package telemetry

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/collectors/podlogs"
	"github.com/vigil-agent/vigil/test/otelcol"
)

// TestForwardMatchedLogLines tails a pod log file and forwards the lines
// that match a pattern (opt-in): they reach the collector tagged vigil.log
// with the container's identity; the other lines are only counted.
func TestForwardMatchedLogLines(t *testing.T) {
	c := otelcol.Start(t)
	f, _ := newForwarder(t, ForwarderConfig{Address: c.Forward})
	root := t.TempDir()
	dir := filepath.Join(root, "shop_cart-1_0f5eb28f-6722-4cf5-ab0f-b62748c018d4", "app")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	lines := "2026-11-25T20:41:07.1Z stdout F started\n" +
		"2026-11-25T20:41:09.5Z stderr P Exception in thread \"main\" java.lang.OutOf\n" +
		"2026-11-25T20:41:09.5Z stderr F MemoryError: Java heap space\n" +
		"2026-11-25T20:41:10Z stdout F still serving\n"
	if err := os.WriteFile(filepath.Join(dir, "0.log"), []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	tl, err := podlogs.NewTailer(podlogs.Options{Root: root, Patterns: []podlogs.Pattern{{Name: "java_oom", Regexp: "OutOfMemoryError"}},
		OnMatch: func(m podlogs.Match) {
			rec, err := Record(m)
			if err != nil {
				t.Error(err)
				return
			}
			f.Post(KindLog, m.Time, rec)
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	if err := tl.Poll(context.Background()); err != nil {
		t.Fatal(err)
	}
	logs := c.WaitLogs(t, 15*time.Second, func(l []otelcol.LogRecord) bool { return len(l) >= 1 })
	time.Sleep(300 * time.Millisecond) // nothing else may arrive
	logs, _ = c.Logs()
	if len(logs) != 1 {
		t.Fatalf("%d records forwarded, want only the matching one", len(logs))
	}
	got := logs[0]
	if got.Body != `Exception in thread "main" java.lang.OutOfMemoryError: Java heap space` || got.Attrs["fluent.tag"] != "vigil.log" || got.Attrs["pattern"] != "java_oom" {
		t.Errorf("record body %v attrs %v", got.Body, got.Attrs)
	}
	ctr, _ := got.Attrs["container"].(map[string]any)
	if ctr["namespace"] != "shop" || ctr["pod"] != "cart-1" || ctr["container"] != "app" {
		t.Errorf("container %v", got.Attrs["container"])
	}
}

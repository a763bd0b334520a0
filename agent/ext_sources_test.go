package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/remediate/journal"
	"github.com/vigil-agent/vigil/rules"
	"github.com/vigil-agent/vigil/test/cgtest"
	"github.com/vigil-agent/vigil/test/otelcol"
	"github.com/vigil-agent/vigil/test/testenv"
	vmtest "github.com/vigil-agent/vigil/test/vm"
)

// sendSpans exports server spans through the OpenTelemetry SDK's OTLP/HTTP
// exporter, as an application would, from a resource carrying pid.
func sendSpans(t *testing.T, endpoint string, pid, total, failed int) {
	t.Helper()
	ctx := context.Background()
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpoint(endpoint), otlptracehttp.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	res := resource.NewSchemaless(attribute.String("service.name", "cart"), attribute.Int("process.pid", pid))
	// One batch, flushed below: the spans reach vigil in one request, so no
	// snapshot can see a prefix of them (a syncer exports span by span).
	bsp := sdktrace.NewBatchSpanProcessor(exp, sdktrace.WithMaxQueueSize(total), sdktrace.WithMaxExportBatchSize(total), sdktrace.WithBatchTimeout(time.Hour))
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(bsp), sdktrace.WithResource(res))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	tr := tp.Tracer("vigil-test")
	for i := 0; i < total; i++ {
		_, sp := tr.Start(ctx, "GET /cart", trace.WithSpanKind(trace.SpanKindServer))
		if i < failed {
			sp.SetStatus(codes.Error, "upstream timeout")
		}
		sp.End()
	}
	if err := tp.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestOTLPErrorRatioAtMemoryLimit is issue 7's example end to end: a real
// cgroup near its memory limit holds a process whose spans (sent with the
// OTel SDK's OTLP/HTTP exporter, process.pid set) fail more than half of
// the time; vigil joins the service to the cgroup through
// /proc/<pid>/cgroup, the rule service.error_ratio > 0.5 && usage_ratio >
// 0.6 fires, and the journal records the finding with its evidence.
func TestOTLPErrorRatioAtMemoryLimit(t *testing.T) { testOTLPErrorRatio(t, true) }

// TestV2OTLPErrorRatioAtMemoryLimit is the same on cgroup v2 (microVM),
// where the join reads the "0::" line of /proc/<pid>/cgroup; spans are not
// forwarded there (no collector in the guest).
func TestV2OTLPErrorRatioAtMemoryLimit(t *testing.T) {
	vmtest.RequireGuest(t)
	testOTLPErrorRatio(t, false)
}

func testOTLPErrorRatio(t *testing.T, forward bool) {
	const limit = 128 << 20
	g := cgtest.New(t)
	setLimit(t, g, strconv.Itoa(limit))
	cmd := g.Allocator(cgtest.AllocSpec{TotalMiB: 96, StepMiB: 16, Interval: 10 * time.Millisecond, Hold: time.Minute})
	cgtest.Start(t, cmd)
	pid := cmd.Process.Pid

	cfg := testConfig(t)
	cfg.OTLP.Enabled = true
	cfg.OTLP.Listen = testenv.FreeAddr(t)
	cfg.OTLP.Window = 10 * time.Second
	var col *otelcol.Collector
	if forward {
		col = otelcol.Start(t)
		cfg.OTLP.ForwardURL = col.OTLPHTTP
	}
	rulesDir := t.TempDir()
	rule := "rules:\n- name: errors-at-memory-limit\n  severity: critical\n  selector:\n    paths: [\"" + g.Path() + "\"]\n" +
		"  condition: service.error_ratio > 0.5 && service.request_rate > 0 && usage_ratio > 0.6\n  actions:\n  - action: freeze\n"
	if err := os.WriteFile(filepath.Join(rulesDir, "errors.yaml"), []byte(rule), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.Rules.Dirs = []string{rulesDir}
	cfg.Remediation.OptIn = []string{g.Path()}
	a := startAgent(t, Options{Config: cfg})
	base := "http://" + a.Addr()

	sample := func() (collectors.CgroupSample, bool) {
		code, body := get(t, base+"/api/v1/snapshot?cgroup="+g.Path())
		var snap collectors.Snapshot
		if code != http.StatusOK || json.Unmarshal(body, &snap) != nil || len(snap.Cgroups) != 1 {
			return collectors.CgroupSample{}, false
		}
		return snap.Cgroups[0], true
	}
	testenv.Eventually(t, 15*time.Second, "the test cgroup at 60% of its limit", func() bool {
		c, ok := sample()
		return ok && c.Derived.UsageRatio > 0.6
	})
	// Memory alone does not fire the rule: no service runs there yet.
	time.Sleep(300 * time.Millisecond)
	if c, _ := sample(); c.Service.Present {
		t.Fatalf("service joined before any span: %+v", c.Service)
	}
	if st := ruleStates(a, "errors-at-memory-limit"); len(st) != 0 {
		t.Fatalf("rule active without spans: %+v", st)
	}

	sendSpans(t, cfg.OTLP.Listen, pid, 20, 15)
	var c collectors.CgroupSample
	testenv.Eventually(t, 10*time.Second, "the service joined to the test cgroup", func() bool {
		var ok bool
		c, ok = sample()
		return ok && c.Service.Present
	})
	if c.Service.Name != "cart" || c.Service.Requests != 20 || c.Service.Errors != 15 || c.Service.ErrorRatio != 0.75 || c.Service.RequestsPerSecond <= 0 {
		t.Errorf("service = %+v, want cart with 15 errors in 20 requests", c.Service)
	}

	var list struct {
		Remediations []journal.Record `json:"remediations"`
	}
	testenv.Eventually(t, 10*time.Second, "a journaled record of errors-at-memory-limit", func() bool {
		code, body := get(t, base+"/api/v1/remediations?rule=errors-at-memory-limit")
		if code != http.StatusOK || json.Unmarshal(body, &list) != nil {
			return false
		}
		return len(list.Remediations) > 0
	})
	rec := list.Remediations[0]
	if rec.Target.Path != g.Path() || rec.Finding == nil {
		t.Fatalf("record target %s finding %v, want %s", rec.Target.Path, rec.Finding, g.Path())
	}
	ev := rec.Finding.Evidence
	if ev["service.error_ratio"] != 0.75 || ev["service.request_rate"] <= 0 || ev["usage_ratio"] <= 0.6 {
		t.Errorf("evidence %v, want service.error_ratio 0.75, a request rate and usage_ratio > 0.6", ev)
	}

	_, body := get(t, base+"/metrics")
	if v, ok := metricValue(body, "vigil_service_error_ratio", `service="cart"`); !ok || v != 0.75 {
		t.Errorf("vigil_service_error_ratio{service=cart} = %v (found %v), want 0.75", v, ok)
	}
	checkPromtool(t, body)

	if !forward {
		return
	}
	// The spans went on, unchanged, to the user's collector.
	spans := col.WaitSpans(t, 15*time.Second, func(s []otelcol.Span) bool { return len(s) >= 20 })
	errs := 0
	for _, sp := range spans {
		if sp.Service != "cart" || fmt.Sprint(sp.Resource["process.pid"]) != strconv.Itoa(pid) {
			t.Errorf("forwarded span service %q resource %v, want cart with process.pid %d", sp.Service, sp.Resource, pid)
			break
		}
		if sp.StatusCode == 2 {
			errs++
		}
	}
	if len(spans) != 20 || errs != 15 {
		t.Errorf("collector got %d spans, %d errors; want 20, 15", len(spans), errs)
	}
}

func ruleStates(a *Agent, rule string) []rules.TargetState {
	var out []rules.TargetState
	for _, st := range a.pipeline.engine.State() {
		if st.Rule == rule && st.State != "" {
			out = append(out, st)
		}
	}
	return out
}

// Fixture identity of testdata/hostroot-v2's container cgroup.
const (
	fixturePodUID      = "6b1f2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
	fixtureContainerID = "3f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b6a7f8e9d0c1b2a3f4e"
)

// TestPodLogsJoinFixtureCgroup runs the agent on a copy of the cgroup v2
// fixture host with a pod log tree: lines appended to the container's CRI
// log (one split in partial lines) become log_matches on the container's
// cgroup, joined by pod UID and the container ID's /var/log/containers link
// (no Kubernetes API), summed on the pod's cgroup; the rule on them fires;
// what the file held before the first start is skipped (start_at_end).
func TestPodLogsJoinFixtureCgroup(t *testing.T) {
	root := t.TempDir()
	if err := os.CopyFS(root, os.DirFS("testdata/hostroot-v2")); err != nil {
		t.Fatal(err)
	}
	podDir := filepath.Join("var", "log", "pods", "shop_cart-1_"+fixturePodUID, "app")
	if err := os.MkdirAll(filepath.Join(root, podDir), 0o755); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(root, podDir, "0.log")
	if err := os.WriteFile(logFile, []byte("2026-11-25T20:41:00.1Z stderr F java.lang.OutOfMemoryError: before vigil started\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	links := filepath.Join(root, "var", "log", "containers")
	if err := os.MkdirAll(links, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/"+filepath.Join(podDir, "0.log"), filepath.Join(links, "cart-1_shop_app-"+fixtureContainerID+".log")); err != nil {
		t.Fatal(err)
	}

	cfg := testConfig(t)
	cfg.HostRoot = root
	cfg.Events.Enabled = false
	cfg.PodLogs.Enabled = true
	cfg.PodLogs.PollInterval = 100 * time.Millisecond
	col := otelcol.Start(t)
	cfg.Forward.Address = col.Forward
	cfg.PodLogs.ForwardMatches = true
	rulesDir := t.TempDir()
	rule := "rules:\n- name: java-heap-exhausted\n  condition: increase(log_matches(\"OutOfMemoryError\"), \"1m\") >= 2\n"
	if err := os.WriteFile(filepath.Join(rulesDir, "logs.yaml"), []byte(rule), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.Rules.Dirs = []string{rulesDir}
	a := startAgent(t, Options{Config: cfg})
	base := "http://" + a.Addr()

	snapshot := func() map[string]collectors.CgroupSample {
		code, body := get(t, base+"/api/v1/snapshot")
		var snap collectors.Snapshot
		if code != http.StatusOK || json.Unmarshal(body, &snap) != nil {
			return nil
		}
		out := map[string]collectors.CgroupSample{}
		for _, c := range snap.Cgroups {
			out[c.Path] = c
		}
		return out
	}
	var container, pod string
	testenv.Eventually(t, 10*time.Second, "the fixture's pod and container cgroups", func() bool {
		container, pod = findFixture(snapshot())
		return container != "" && pod != ""
	})
	count := func(c collectors.CgroupSample, pattern string) float64 { return collectors.LogMatchCount(&c, pattern) }
	testenv.Eventually(t, 10*time.Second, "zero counters on the container once its log is followed", func() bool {
		c := snapshot()[container]
		return count(c, "OutOfMemoryError") == 0
	})
	// Let the zero reach the rule history before the matches arrive.
	time.Sleep(1200 * time.Millisecond)

	f, err := os.OpenFile(logFile, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	lines := "2026-11-25T20:42:00.1Z stdout F serving\n" +
		"2026-11-25T20:42:01.1Z stderr P Exception in thread \"main\" java.lang.OutOf\n" +
		"2026-11-25T20:42:01.1Z stderr F MemoryError: Java heap space\n" +
		"2026-11-25T20:42:02.1Z stderr F java.lang.OutOfMemoryError: Metaspace\n" +
		"2026-11-25T20:42:03.1Z stderr F malloc: Cannot allocate memory\n"
	if _, err := f.WriteString(lines); err != nil {
		t.Fatal(err)
	}
	f.Close()

	var cgs map[string]collectors.CgroupSample
	testenv.Eventually(t, 10*time.Second, "the appended matches on the container's cgroup", func() bool {
		cgs = snapshot()
		return count(cgs[container], "OutOfMemoryError") == 2
	})
	tests := []struct {
		path, pattern string
		want          float64
	}{
		{container, "OutOfMemoryError", 2},
		{container, "Cannot allocate memory", 1},
		{container, "out of memory", 0},
		{pod, "OutOfMemoryError", 2},
		{pod, "Cannot allocate memory", 1},
	}
	for _, tc := range tests {
		if got := count(cgs[tc.path], tc.pattern); got != tc.want {
			t.Errorf("%s %q = %v, want %v", tc.path, tc.pattern, got, tc.want)
		}
	}
	testenv.Eventually(t, 10*time.Second, "java-heap-exhausted firing on the container", func() bool {
		for _, st := range ruleStates(a, "java-heap-exhausted") {
			if st.Target.Path == container && st.State == rules.Firing {
				return true
			}
		}
		return false
	})
	for _, st := range ruleStates(a, "java-heap-exhausted") {
		if st.Target.Path != container && st.Target.Path != pod {
			t.Errorf("rule active on %s", st.Target.Path)
		}
	}
	_, body := get(t, base+"/metrics")
	if v, ok := metricValue(body, "vigil_podlog_matches_total", `container="app",namespace="shop",pattern="OutOfMemoryError",pod="cart-1"`); !ok || v != 2 {
		t.Errorf("vigil_podlog_matches_total = %v (found %v), want 2", v, ok)
	}
	checkPromtool(t, body)
	// The three matching messages (the split one joined) were forwarded
	// to the collector tagged vigil.log; the other lines were not.
	logs := col.WaitLogs(t, 15*time.Second, func(l []otelcol.LogRecord) bool { return len(l) >= 3 })
	var bodies []string
	for _, l := range logs {
		if l.Attrs["fluent.tag"] == "vigil.log" {
			bodies = append(bodies, fmt.Sprint(l.Body))
		}
	}
	sort.Strings(bodies)
	wantBodies := []string{`Exception in thread "main" java.lang.OutOfMemoryError: Java heap space`, "java.lang.OutOfMemoryError: Metaspace", "malloc: Cannot allocate memory"}
	if !slices.Equal(bodies, wantBodies) {
		t.Errorf("forwarded %q, want %q", bodies, wantBodies)
	}
	// Offsets and counters are kept next to the journal.
	if _, err := os.Stat(filepath.Join(filepath.Dir(cfg.Remediation.Journal.Path), "podlogs.json")); err != nil {
		t.Errorf("state file: %v", err)
	}
}

// findFixture returns the fixture's container and pod cgroup paths.
func findFixture(cgs map[string]collectors.CgroupSample) (container, pod string) {
	for p, c := range cgs {
		switch {
		case c.Identity.ContainerID == fixtureContainerID:
			container = p
		case c.Identity.PodUID == fixturePodUID && c.Identity.Kind == "pod":
			pod = p
		}
	}
	return container, pod
}

// TestMemoryCgroupOfFile reads the memory cgroup of this process on both
// hierarchy kinds' line formats.
func TestMemoryCgroupOfFile(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, content string
		version       int
		want          string
		wantErr       bool
	}{
		{"v1 hybrid", "12:pids:/user.slice\n7:memory:/kubepods/pod1/abc\n0::/user.slice/session-1.scope\n", 1, "/kubepods/pod1/abc", false},
		{"v1 joined controllers", "4:cpu,memory:/a/b\n", 1, "/a/b", false},
		{"v2", "0::/kubepods.slice/x.scope\n", 2, "/kubepods.slice/x.scope", false},
		{"v2 file on v1", "0::/x\n", 1, "", true},
		{"garbage", "nonsense\n\n", 2, "", true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(dir, fmt.Sprint(i))
			if err := os.WriteFile(f, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := memoryCgroupOfFile(f, tc.version)
			if got != tc.want || (err != nil) != tc.wantErr {
				t.Errorf("got %q, %v; want %q, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
	if _, err := memoryCgroupOfFile(filepath.Join(dir, "missing"), 1); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func FuzzParseMemoryCgroup(f *testing.F) {
	for _, file := range []string{"testdata/proc-cgroup-v1", "testdata/proc-cgroup-v2"} {
		if b, err := os.ReadFile(file); err == nil {
			f.Add(b, 1)
			f.Add(b, 2)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte, version int) {
		p, err := parseMemoryCgroup(bytes.NewReader(b), version)
		if err == nil && !strings.HasPrefix(p, "/") {
			t.Fatalf("path %q does not start with /", p)
		}
	})
}

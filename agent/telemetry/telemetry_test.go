package telemetry

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vigil-agent/vigil/test/otelcol"
)

func newForwarder(t *testing.T, cfg ForwarderConfig) (*Forwarder, *ForwardMetrics) {
	t.Helper()
	m, err := NewForwardMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	f, err := NewForwarder(cfg, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, m
}

// TestForwardToCollector sends one record of each kind through the real
// collector's fluent_forward receiver and reads them back.
func TestForwardToCollector(t *testing.T) {
	c := otelcol.Start(t)
	f, m := newForwarder(t, ForwarderConfig{Address: c.Forward})
	oom, err := Record(struct {
		CgroupPath string `json:"cgroup_path"`
		PID        int    `json:"pid"`
		AnonRSSKiB uint64 `json:"anon_rss_kib"`
	}{"/kubepods/burstable/pod1/abc", 4040, 65024})
	if err != nil {
		t.Fatal(err)
	}
	records := []struct {
		kind Kind
		rec  map[string]any
	}{
		{KindOOM, oom},
		{KindRemediation, map[string]any{"remediation_id": "r-1", "rule": "container-near-limit", "outcome": "verified", "trace_id": "0af7651916cd43dd8448eb211c80319c"}},
		{KindLog, map[string]any{"message": "java.lang.OutOfMemoryError: Java heap space", "namespace": "shop", "pod": "cart-1", "container": "app", "pattern": "oom"}},
	}
	for _, r := range records {
		if !f.Post(r.kind, time.Time{}, r.rec) {
			t.Fatalf("Post(%s) refused", r.kind)
		}
	}
	logs := c.WaitLogs(t, 15*time.Second, func(l []otelcol.LogRecord) bool { return len(l) >= 3 })
	byTag := map[string]otelcol.LogRecord{}
	for _, l := range logs {
		byTag[fmt.Sprint(l.Attrs["fluent.tag"])] = l
	}
	tests := []struct {
		tag, key string
		want     any
	}{
		{"vigil.oom", "cgroup_path", "/kubepods/burstable/pod1/abc"},
		{"vigil.oom", "pid", int64(4040)},
		{"vigil.oom", "anon_rss_kib", int64(65024)},
		{"vigil.remediation", "rule", "container-near-limit"},
		{"vigil.remediation", "trace_id", "0af7651916cd43dd8448eb211c80319c"},
		{"vigil.log", "pod", "cart-1"},
	}
	for _, tt := range tests {
		l, ok := byTag[tt.tag]
		if !ok {
			t.Errorf("no record tagged %s in %v", tt.tag, logs)
			continue
		}
		if got := l.Attrs[tt.key]; got != tt.want {
			t.Errorf("%s %s = %#v, want %#v", tt.tag, tt.key, got, tt.want)
		}
	}
	if got := byTag["vigil.log"].Body; got != "java.lang.OutOfMemoryError: Java heap space" {
		t.Errorf("log body = %v", got)
	}
	if err := f.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, k := range kinds {
		if got := testutil.ToFloat64(m.records.WithLabelValues(string(k))); got != 1 {
			t.Errorf("vigil_forward_records_total{kind=%s} = %v, want 1", k, got)
		}
	}
}

// TestForwardSurvivesCollectorRestart: records posted while the collector is
// down are kept in the buffer and delivered once it is back.
func TestForwardSurvivesCollectorRestart(t *testing.T) {
	c := otelcol.Start(t)
	f, m := newForwarder(t, ForwarderConfig{Address: c.Forward, RetryWait: 20 * time.Millisecond, MaxRetryWait: 200 * time.Millisecond, MaxRetries: 1000, Timeout: time.Second})
	if !f.Post(KindRemediation, time.Time{}, map[string]any{"n": 0}) {
		t.Fatal("Post refused")
	}
	c.WaitLogs(t, 15*time.Second, func(l []otelcol.LogRecord) bool { return len(l) == 1 })

	c.Kill(t)
	const n = 20
	for i := 1; i <= n; i++ {
		if !f.Post(KindRemediation, time.Time{}, map[string]any{"n": i}) {
			t.Fatalf("Post %d refused with the collector down", i)
		}
	}
	time.Sleep(300 * time.Millisecond) // let the sender hit the dead endpoint
	c.Restart(t)
	logs := c.WaitLogs(t, 30*time.Second, func(l []otelcol.LogRecord) bool { return len(l) >= n+1 })
	seen := map[int64]bool{}
	for _, l := range logs {
		if v, ok := l.Attrs["n"].(int64); ok {
			seen[v] = true
		}
	}
	for i := int64(0); i <= n; i++ {
		if !seen[i] {
			t.Errorf("record %d lost across the collector restart", i)
		}
	}
	if err := f.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(m.dropped.WithLabelValues(string(KindRemediation), DropSendFailed)); got != 0 {
		t.Errorf("send_failed drops = %v, want 0", got)
	}
}

// TestForwardDeadPipelineNeverBlocks posts far more than the buffer holds
// to a collector that was stopped: Post keeps returning, the overflow is
// counted, and Close does not wait for the dead endpoint.
func TestForwardDeadPipelineNeverBlocks(t *testing.T) {
	c := otelcol.Start(t)
	f, m := newForwarder(t, ForwarderConfig{Address: c.Forward, BufferRecords: 10, RetryWait: 50 * time.Millisecond, MaxRetryWait: 100 * time.Millisecond, MaxRetries: 3, Timeout: 500 * time.Millisecond})
	c.Stop(t)

	const posts = 5000
	done := make(chan int, 1)
	go func() {
		accepted := 0
		for i := range posts {
			if f.Post(KindLog, time.Time{}, map[string]any{"message": "line", "i": i}) {
				accepted++
			}
		}
		done <- accepted
	}()
	var accepted int
	select {
	case accepted = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Post blocked on a dead pipeline")
	}
	full := testutil.ToFloat64(m.dropped.WithLabelValues(string(KindLog), DropBufferFull))
	// The buffer holds 10; a few more get in as the sender gives up on
	// records while the loop runs.
	if accepted < 10 || accepted > 50 || int(full) != posts-accepted {
		t.Errorf("accepted %d, buffer_full drops %v; want about the buffer size accepted and the rest counted", accepted, full)
	}
	closed := make(chan error, 1)
	go func() { closed <- f.Close() }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close blocked on a dead pipeline")
	}
	s := f.Stats()[KindLog]
	var dropped uint64
	for _, n := range s.Dropped {
		dropped += n
	}
	if s.Posted != posts || s.Delivered+dropped != posts || s.Delivered != 0 {
		t.Errorf("stats %+v: every posted record must end delivered or counted as dropped", s)
	}
	if f.Post(KindLog, time.Time{}, map[string]any{"late": true}) {
		t.Error("Post after Close accepted")
	}
}

func TestForwarderDisabled(t *testing.T) {
	f, err := NewForwarder(ForwarderConfig{}, nil, nil)
	if err != nil || f != nil {
		t.Fatalf("NewForwarder(empty) = %v, %v; want nil, nil", f, err)
	}
	if f.Post(KindOOM, time.Time{}, map[string]any{"x": 1}) {
		t.Error("a disabled forwarder accepted a record")
	}
	if err := f.Close(); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"nohost", "host:port", "host:"} {
		if err := (ForwarderConfig{Address: bad}).Validate(); err == nil {
			t.Errorf("Validate(%q) = nil", bad)
		}
	}
}

// TestTracingToCollector exports a remediation with two ladder steps and
// sampled ticks over OTLP http and grpc to the real collector.
func TestTracingToCollector(t *testing.T) {
	c := otelcol.Start(t)
	for _, proto := range []string{"http", "grpc"} {
		t.Run(proto, func(t *testing.T) {
			endpoint := c.OTLPHTTP
			if proto == "grpc" {
				endpoint = c.OTLPGRPC
			}
			one, zero := 1.0, 0.0
			ratio := &one
			rule := "rule-" + proto
			tr, err := NewTracing(context.Background(), TracingConfig{Endpoint: endpoint, Protocol: proto, Insecure: true, TickSampleRatio: ratio, Node: "node-a"})
			if err != nil {
				t.Fatal(err)
			}
			if !tr.Enabled() {
				t.Fatal("tracing with an endpoint is not enabled")
			}
			tickCtx, tick := tr.StartTick(context.Background(), 7)
			ctx, rem, traceID := tr.StartRemediation(tickCtx, Remediation{ID: "rem-" + proto, Rule: rule, Target: "/kubepods/pod1/c1", Pod: "cart-1", Namespace: "shop"})
			if len(traceID) != 32 || traceID == TraceID(tickCtx) {
				t.Errorf("remediation trace id %q (tick %q): want its own 32-hex trace", traceID, TraceID(tickCtx))
			}
			_, s1 := tr.StartStep(ctx, 0, "throttle-memory")
			EndStep(s1, "timeout", nil)
			_, s2 := tr.StartStep(ctx, 1, "restart-container")
			EndStep(s2, "failed", errors.New("container runtime unavailable"))
			rem.End()
			tick.End()
			if err := tr.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}

			spans := c.WaitSpans(t, 15*time.Second, func(s []otelcol.Span) bool {
				n := 0
				for _, sp := range s {
					if sp.TraceID == traceID {
						n++
					}
				}
				return n >= 3
			})
			var root otelcol.Span
			var steps []otelcol.Span
			ticks := 0
			for _, sp := range spans {
				switch {
				case sp.TraceID == traceID && sp.Name == SpanRemediation:
					root = sp
				case sp.TraceID == traceID && sp.Name == SpanStep:
					steps = append(steps, sp)
				case sp.Name == SpanTick && sp.Attrs["vigil.tick.seq"] == int64(7):
					ticks++
				}
			}
			if root.Attrs["vigil.rule"] != rule || root.Attrs["k8s.pod.name"] != "cart-1" || root.Service != "vigil" || root.Resource["host.name"] != "node-a" {
				t.Errorf("remediation span %v resource %v", root, root.Resource)
			}
			if len(steps) != 2 {
				t.Fatalf("got %d step spans, want 2", len(steps))
			}
			for _, s := range steps {
				if s.ParentSpanID != root.SpanID {
					t.Errorf("step %v parent %s, want %s", s, s.ParentSpanID, root.SpanID)
				}
				failed := s.Attrs["vigil.action"] == "restart-container"
				if failed != (s.StatusCode == 2) {
					t.Errorf("step %v status %d", s, s.StatusCode)
				}
			}
			if ticks == 0 {
				t.Error("tick span with ratio 1 not exported")
			}

			// Ratio 0: ticks are not sampled, remediations still are.
			tr0, err := NewTracing(context.Background(), TracingConfig{Endpoint: endpoint, Protocol: proto, Insecure: true, TickSampleRatio: &zero})
			if err != nil {
				t.Fatal(err)
			}
			tc, tk := tr0.StartTick(context.Background(), 8)
			if id := TraceID(tc); id != "" {
				t.Errorf("unsampled tick has trace id %q", id)
			}
			_, r0, id0 := tr0.StartRemediation(tc, Remediation{ID: "rem0", Rule: rule})
			r0.End()
			tk.End()
			if id0 == "" {
				t.Error("remediation not sampled under an unsampled tick")
			}
			if err := tr0.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
			c.WaitSpans(t, 15*time.Second, func(s []otelcol.Span) bool {
				for _, sp := range s {
					if sp.TraceID == id0 {
						return true
					}
				}
				return false
			})
			for _, sp := range spans {
				if sp.Name == SpanTick && sp.Attrs["vigil.tick.seq"] == int64(8) {
					t.Error("tick span exported with ratio 0")
				}
			}
		})
	}
}

func TestTracingOffByDefault(t *testing.T) {
	tr, err := NewTracing(context.Background(), TracingConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Enabled() {
		t.Error("tracing enabled without an endpoint")
	}
	ctx, span, id := tr.StartRemediation(context.Background(), Remediation{ID: "x"})
	_, step := tr.StartStep(ctx, 0, "reclaim")
	EndStep(step, "applied", nil)
	span.End()
	if id != "" {
		t.Errorf("trace id %q with tracing off, want empty", id)
	}
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Error(err)
	}
	bad := 2.0
	for _, c := range []TracingConfig{{Protocol: "udp"}, {TickSampleRatio: &bad}} {
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil", c)
		}
	}
}

func TestTracesURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:4318":            "http://127.0.0.1:4318/v1/traces",
		"http://127.0.0.1:4318/":           "http://127.0.0.1:4318/v1/traces",
		"127.0.0.1:4318":                   "http://127.0.0.1:4318/v1/traces",
		"https://otel.example/custom/path": "https://otel.example/custom/path",
	} {
		if got := tracesURL(in); got != want {
			t.Errorf("tracesURL(%q) = %q, want %q", in, got, want)
		}
	}
}

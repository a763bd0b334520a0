package otlp

import (
	"bytes"
	"compress/gzip"
	"context"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	resourcev1 "go.opentelemetry.io/proto/otlp/resource/v1"
	tracev1 "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/vigil-agent/vigil/test/otelcol"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func str(k, v string) *commonv1.KeyValue {
	return &commonv1.KeyValue{Key: k, Value: &commonv1.AnyValue{Value: &commonv1.AnyValue_StringValue{StringValue: v}}}
}

// export builds a request with n server spans of service, latencies 1..n ms,
// the first errs of them failed, plus spans that are not requests.
func export(service string, n, errs int) *collectortrace.ExportTraceServiceRequest {
	var spans []*tracev1.Span
	base := uint64(time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC).UnixNano())
	for i := 1; i <= n; i++ {
		sp := &tracev1.Span{TraceId: bytes.Repeat([]byte{byte(i)}, 16), SpanId: bytes.Repeat([]byte{byte(i)}, 8), Name: "GET /cart",
			Kind: tracev1.Span_SPAN_KIND_SERVER, StartTimeUnixNano: base, EndTimeUnixNano: base + uint64(i)*uint64(time.Millisecond)}
		if i <= errs {
			sp.Status = &tracev1.Status{Code: tracev1.Status_STATUS_CODE_ERROR}
		}
		spans = append(spans, sp,
			// Outgoing calls and internal children are not requests.
			&tracev1.Span{Name: "SELECT", Kind: tracev1.Span_SPAN_KIND_CLIENT, StartTimeUnixNano: base, EndTimeUnixNano: base + 1},
			&tracev1.Span{Name: "render", Kind: tracev1.Span_SPAN_KIND_INTERNAL, ParentSpanId: sp.SpanId, StartTimeUnixNano: base, EndTimeUnixNano: base + 1},
		)
	}
	return &collectortrace.ExportTraceServiceRequest{ResourceSpans: []*tracev1.ResourceSpans{{
		Resource: &resourcev1.Resource{Attributes: []*commonv1.KeyValue{
			str("service.name", service), str("k8s.namespace.name", "shop"), str("k8s.pod.name", service+"-1"), str("k8s.container.name", "app")}},
		ScopeSpans: []*tracev1.ScopeSpans{{Spans: spans}},
	}}}
}

func post(t *testing.T, url, ct string, body []byte, gz bool) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+TracesPath, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", ct)
	if gz {
		var b bytes.Buffer
		w := gzip.NewWriter(&b)
		w.Write(body)
		w.Close()
		req.Body = http.NoBody
		req, _ = http.NewRequest(http.MethodPost, url+TracesPath, &b)
		req.Header.Set("Content-Type", ct)
		req.Header.Set("Content-Encoding", "gzip")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func TestREDFromProtobufAndJSON(t *testing.T) {
	clk := &clock{t: time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)}
	r, err := NewReceiver(Options{Window: time.Minute, Step: 5 * time.Second, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)

	pb, _ := proto.Marshal(export("cart", 100, 10))
	if resp := post(t, srv.URL, "application/x-protobuf", pb, false); resp.StatusCode != 200 {
		t.Fatalf("protobuf: %s", resp.Status)
	}
	clk.add(20 * time.Second)
	// OTLP JSON as an SDK writes it: hex ids, enum names, int64 as strings.
	js := `{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"search"}}]},
"scopeSpans":[{"spans":[
 {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"q","kind":"SPAN_KIND_SERVER","startTimeUnixNano":"1000000000","endTimeUnixNano":"1200000000","status":{"code":"STATUS_CODE_ERROR"}},
 {"traceId":"5b8efff798038103d269b633813fc60d","spanId":"eee19b7ec3c1b175","name":"q","kind":2,"startTimeUnixNano":"1000000000","endTimeUnixNano":"1300000000"}]}]}]}`
	if resp := post(t, srv.URL, "application/json", []byte(js), true); resp.StatusCode != 200 {
		t.Fatalf("json+gzip: %s", resp.Status)
	}
	clk.add(40 * time.Second) // 60 s after start: everything still in the window

	got := r.RED()
	if len(got) != 2 {
		t.Fatalf("RED() = %+v, want cart and search", got)
	}
	cart, search := got[0], got[1]
	want := ServiceRED{Service: "cart", Namespace: "shop", Pod: "cart-1", Container: "app", Requests: 100, Errors: 10,
		RequestsPerSecond: 100.0 / 60, ErrorRatio: 0.1, WindowSeconds: 60}
	cart.P50LatencySeconds, cart.P99LatencySeconds = 0, 0
	if cart != want {
		t.Errorf("cart\n got %+v\nwant %+v", cart, want)
	}
	if p99 := got[0].P99LatencySeconds; math.Abs(p99-0.099)/0.099 > 0.1 {
		t.Errorf("cart p99 = %v s, want 0.099 within 10%%", p99)
	}
	if p50 := got[0].P50LatencySeconds; math.Abs(p50-0.050)/0.050 > 0.1 {
		t.Errorf("cart p50 = %v s, want 0.050 within 10%%", p50)
	}
	if search.Service != "search" || search.Requests != 2 || search.Errors != 1 || search.ErrorRatio != 0.5 {
		t.Errorf("search %+v", search)
	}
	if s := r.Stats(); s.Spans != 302 || s.RequestSpans != 102 || s.Requests != 2 {
		t.Errorf("stats %+v", s)
	}

	// The cart batch leaves the window first.
	clk.add(5 * time.Second)
	if got := r.RED(); len(got) != 1 || got[0].Service != "search" {
		t.Errorf("after 65 s: %+v, want only search", got)
	}
	clk.add(time.Minute)
	if got := r.RED(); len(got) != 0 {
		t.Errorf("after the window: %+v, want none", got)
	}
}

func TestRejects(t *testing.T) {
	r, err := NewReceiver(Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	tests := []struct {
		name, ct string
		body     []byte
		want     int
	}{
		{"text", "text/plain", []byte("x"), http.StatusUnsupportedMediaType},
		{"garbage protobuf", "application/x-protobuf", []byte{0xff, 0xff, 0xff}, http.StatusBadRequest},
		{"garbage json", "application/json", []byte("{"), http.StatusBadRequest},
		{"empty", "application/x-protobuf", nil, http.StatusOK},
	}
	for _, tt := range tests {
		if resp := post(t, srv.URL, tt.ct, tt.body, false); resp.StatusCode != tt.want {
			t.Errorf("%s: %s, want %d", tt.name, resp.Status, tt.want)
		}
	}
	resp, err := http.Get(srv.URL + TracesPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %s", resp.Status)
	}
	if s := r.Stats(); s.Rejected != 4 {
		t.Errorf("rejected %d, want 4", s.Rejected)
	}
}

// serve runs a receiver on a loopback port until the test ends.
func serve(t *testing.T, opts Options) (*Receiver, string, func()) {
	t.Helper()
	r, err := NewReceiver(opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Serve: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Serve did not return after cancellation")
			}
		})
	}
	t.Cleanup(stop)
	return r, "http://" + ln.Addr().String(), stop
}

// TestForwardToCollector: an application's OTel SDK exports to vigil, which
// derives RED and forwards the spans to the real collector.
func TestForwardToCollector(t *testing.T) {
	c := otelcol.Start(t)
	r, url, _ := serve(t, Options{ForwardURL: c.OTLPHTTP})

	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(url+TracesPath))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(resource.NewSchemaless(
		attribute.String("service.name", "checkout"), attribute.String("k8s.pod.name", "checkout-7d9"), attribute.String("k8s.namespace.name", "shop"))))
	tr := tp.Tracer("app")
	for i := range 10 {
		_, sp := tr.Start(context.Background(), "POST /checkout", trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.Int("order", i)))
		if i%2 == 0 {
			sp.SetStatus(codes.Error, "payment declined")
		}
		sp.End()
	}
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	spans := c.WaitSpans(t, 15*time.Second, func(s []otelcol.Span) bool { return len(s) >= 10 })
	orders := map[int64]bool{}
	for _, s := range spans {
		if s.Service != "checkout" || s.Name != "POST /checkout" || s.Resource["k8s.pod.name"] != "checkout-7d9" {
			t.Errorf("forwarded span %v resource %v", s, s.Resource)
		}
		if o, ok := s.Attrs["order"].(int64); ok {
			orders[o] = true
		}
	}
	if len(orders) != 10 {
		t.Errorf("forwarded orders %v, want 0..9", orders)
	}
	red := r.RED()
	if len(red) != 1 || red[0].Service != "checkout" || red[0].Pod != "checkout-7d9" || red[0].Requests != 10 || red[0].ErrorRatio != 0.5 {
		t.Errorf("RED %+v", red)
	}
	if s := r.Stats(); s.Forwarded < 1 || s.ForwardDropped != 0 || s.ForwardFailed != 0 {
		t.Errorf("stats %+v", s)
	}
}

// TestForwardToDeadCollector: with the collector gone, applications still
// get their 200 at once, the overflow is counted, and shutdown does not wait.
func TestForwardToDeadCollector(t *testing.T) {
	c := otelcol.Start(t)
	r, url, stop := serve(t, Options{ForwardURL: c.OTLPHTTP, ForwardQueue: 2, ForwardRetries: 100, ForwardTimeout: time.Second})
	c.Stop(t)
	pb, _ := proto.Marshal(export("cart", 3, 0))
	const n = 50
	for i := range n {
		if resp := post(t, url, "application/x-protobuf", pb, false); resp.StatusCode != 200 {
			t.Fatalf("request %d: %s", i, resp.Status)
		}
	}
	if got := r.RED(); len(got) != 1 || got[0].Requests != 3*n {
		t.Errorf("RED with the forward target down: %+v", got)
	}
	// At most the queue plus the one being retried are held.
	if s := r.Stats(); s.ForwardDropped < n-3 {
		t.Errorf("forward_dropped %d, want at least %d", s.ForwardDropped, n-3)
	}
	stop()
	s := r.Stats()
	if s.Forwarded != 0 || s.ForwardDropped+s.ForwardFailed != n {
		t.Errorf("stats after stop %+v: every request must be forwarded or counted as dropped", s)
	}
}

func TestBuckets(t *testing.T) {
	for _, d := range []time.Duration{0, time.Microsecond, time.Millisecond, 37 * time.Millisecond, time.Second, 10 * time.Minute} {
		b := bucketOf(d)
		if b < 0 || b >= nBuckets {
			t.Fatalf("bucketOf(%v) = %d", d, b)
		}
		if up := bucketUpper(b); d > minLatency && b < nBuckets-1 && (d.Seconds() > up || d.Seconds() < up/growth/1.0001) {
			t.Errorf("%v in bucket %d with upper bound %v", d, b, up)
		}
	}
	if _, err := NewReceiver(Options{Window: time.Second, Step: time.Minute}); err == nil {
		t.Error("step longer than window accepted")
	}
	if _, err := NewReceiver(Options{ForwardURL: "collector:4318"}); err == nil {
		t.Error("forward URL without scheme accepted")
	}
}

// FuzzObserve feeds arbitrary bodies through decoding and the RED window.
func FuzzObserve(f *testing.F) {
	pb, _ := proto.Marshal(export("cart", 3, 1))
	f.Add(pb, false)
	f.Add([]byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":2,"startTimeUnixNano":"5","endTimeUnixNano":"1"}]}]}]}`), true)
	r, err := NewReceiver(Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte, js bool) {
		ct := "application/x-protobuf"
		if js {
			ct = "application/json"
		}
		var msg collectortrace.ExportTraceServiceRequest
		if decode(ct, b, &msg) != nil {
			return
		}
		r.observe(&msg)
		for _, s := range r.RED() {
			if s.ErrorRatio < 0 || s.ErrorRatio > 1 || s.P99LatencySeconds < s.P50LatencySeconds {
				t.Fatalf("inconsistent %+v", s)
			}
		}
	})
}

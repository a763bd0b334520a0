// Package otlp is vigil's OTLP/HTTP span receiver (off by default):
// applications on the node send their traces to the agent, which derives
// per-service RED signals (request rate, error ratio, latency) over a
// sliding window for the rules, and forwards the spans unchanged to the
// user's collector.
package otlp

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	tracev1 "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// TracesPath is the OTLP/HTTP traces path.
const TracesPath = "/v1/traces"

const (
	contentProtobuf = "application/x-protobuf"
	contentJSON     = "application/json"
)

// Options configure a Receiver.
type Options struct {
	// Listen is the address Run serves on (e.g. 127.0.0.1:4318).
	Listen string
	// Window is the RED sliding window (default 60s), kept in Step slots
	// (default 5s).
	Window time.Duration
	Step   time.Duration
	// ForwardURL, when set, receives every accepted request body as is
	// (OTLP/HTTP, e.g. http://collector:4318; /v1/traces is added to a
	// URL without a path).
	ForwardURL string
	// ForwardQueue bounds the requests waiting to be forwarded (default
	// 256); a full queue drops and counts.
	ForwardQueue int
	// ForwardTimeout bounds one forward attempt (default 5s); a failed
	// request is retried with backoff up to ForwardRetries times (default 5).
	ForwardTimeout time.Duration
	ForwardRetries int
	// MaxBodyBytes bounds a request (default 8 MiB).
	MaxBodyBytes int64
	// MaxServices bounds the service instances tracked (default 512); the
	// spans of further ones are dropped from RED and counted.
	MaxServices int
	// Now is the clock (default time.Now).
	Now    func() time.Time
	Logger *slog.Logger
}

// Stats are the receiver's counters.
type Stats struct {
	Requests uint64 `json:"requests"`
	Rejected uint64 `json:"rejected"`
	Spans    uint64 `json:"spans"`
	// RequestSpans are the spans counted as requests (server/consumer or
	// local roots).
	RequestSpans   uint64 `json:"request_spans"`
	Forwarded      uint64 `json:"forwarded"`
	ForwardDropped uint64 `json:"forward_dropped"`
	// ForwardFailed counts requests dropped after the last retry.
	ForwardFailed uint64 `json:"forward_failed"`
	// ServicesOverflow counts request spans not counted in RED because
	// MaxServices services were already tracked.
	ServicesOverflow uint64 `json:"services_overflow"`
}

type forwardItem struct {
	body        []byte
	contentType string
}

// Receiver accepts OTLP/HTTP traces.
type Receiver struct {
	opts   Options
	log    *slog.Logger
	client *http.Client

	mu sync.Mutex
	w  *window

	queue chan forwardItem
	stats struct {
		requests, rejected, spans, requestSpans, forwarded, dropped, failed atomic.Uint64
	}
}

// NewReceiver validates opts. The receiver serves nothing until Run (or
// Handler is mounted elsewhere).
func NewReceiver(opts Options) (*Receiver, error) {
	if opts.Window <= 0 {
		opts.Window = time.Minute
	}
	if opts.Step <= 0 {
		opts.Step = 5 * time.Second
	}
	if opts.Step > opts.Window {
		return nil, fmt.Errorf("otlp: step %s longer than window %s", opts.Step, opts.Window)
	}
	if opts.ForwardQueue <= 0 {
		opts.ForwardQueue = 256
	}
	if opts.ForwardTimeout <= 0 {
		opts.ForwardTimeout = 5 * time.Second
	}
	if opts.ForwardRetries <= 0 {
		opts.ForwardRetries = 5
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 8 << 20
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxServices <= 0 {
		opts.MaxServices = 512
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ForwardURL != "" {
		u := opts.ForwardURL
		if !strings.Contains(u, "://") {
			return nil, fmt.Errorf("otlp: forward URL %q: want http(s)://host:port", u)
		}
		scheme, rest, _ := strings.Cut(u, "://")
		if _, path, ok := strings.Cut(rest, "/"); !ok || path == "" {
			opts.ForwardURL = scheme + "://" + strings.TrimSuffix(rest, "/") + TracesPath
		}
	}
	r := &Receiver{opts: opts, log: opts.Logger, client: &http.Client{Timeout: opts.ForwardTimeout},
		w: newWindow(opts.Window, opts.Step, opts.Now())}
	r.w.max = opts.MaxServices
	if opts.ForwardURL != "" {
		r.queue = make(chan forwardItem, opts.ForwardQueue)
	}
	return r, nil
}

// Run serves Handler on opts.Listen and forwards until ctx is done.
func (r *Receiver) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", r.opts.Listen)
	if err != nil {
		return fmt.Errorf("otlp: listen %s: %w", r.opts.Listen, err)
	}
	return r.Serve(ctx, ln)
}

// Serve is Run on an existing listener (tests use port 0).
func (r *Receiver) Serve(ctx context.Context, ln net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle(TracesPath, r)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	var wg sync.WaitGroup
	fctx, stopForward := context.WithCancel(context.Background())
	if r.queue != nil {
		wg.Add(1)
		go func() { defer wg.Done(); r.forwardLoop(fctx) }()
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	var err error
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = srv.Shutdown(sctx)
		cancel()
		<-errc
	case err = <-errc:
	}
	stopForward()
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// ServeHTTP handles POST /v1/traces (protobuf or JSON, optionally gzip).
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.stats.requests.Add(1)
	if req.Method != http.MethodPost {
		r.reject(w, http.StatusMethodNotAllowed, "POST only")
		return
	}
	ct, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type"))
	if ct != contentProtobuf && ct != contentJSON {
		r.reject(w, http.StatusUnsupportedMediaType, "content type must be application/x-protobuf or application/json")
		return
	}
	var body io.Reader = http.MaxBytesReader(w, req.Body, r.opts.MaxBodyBytes)
	if strings.EqualFold(req.Header.Get("Content-Encoding"), "gzip") {
		gz, err := gzip.NewReader(body)
		if err != nil {
			r.reject(w, http.StatusBadRequest, "bad gzip body")
			return
		}
		defer gz.Close()
		body = io.LimitReader(gz, r.opts.MaxBodyBytes+1)
	}
	b, err := io.ReadAll(body)
	if err != nil || int64(len(b)) > r.opts.MaxBodyBytes {
		r.reject(w, http.StatusRequestEntityTooLarge, "body too large or unreadable")
		return
	}
	var msg collectortrace.ExportTraceServiceRequest
	if err := decode(ct, b, &msg); err != nil {
		r.reject(w, http.StatusBadRequest, "cannot decode "+ct+": "+err.Error())
		return
	}
	r.observe(&msg)
	if r.queue != nil {
		select {
		case r.queue <- forwardItem{body: b, contentType: ct}:
		default:
			r.stats.dropped.Add(1)
		}
	}
	resp, _ := encode(ct, &collectortrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(resp)
}

func (r *Receiver) reject(w http.ResponseWriter, code int, msg string) {
	r.stats.rejected.Add(1)
	http.Error(w, msg, code)
}

// decode parses a request body. OTLP JSON carries trace and span ids as
// hex, where protojson expects base64: ids are not used for RED, and hex
// digits are valid base64, so the standard decoder is enough.
func decode(ct string, b []byte, msg *collectortrace.ExportTraceServiceRequest) error {
	if ct == contentJSON {
		return protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(b, msg)
	}
	return proto.Unmarshal(b, msg)
}

func encode(ct string, m proto.Message) ([]byte, error) {
	if ct == contentJSON {
		return protojson.Marshal(m)
	}
	return proto.Marshal(m)
}

// observe adds the request spans of msg to the window.
func (r *Receiver) observe(msg *collectortrace.ExportTraceServiceRequest) {
	now := r.opts.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range msg.GetResourceSpans() {
		key := keyOf(rs.GetResource().GetAttributes())
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				r.stats.spans.Add(1)
				if !isRequest(sp) {
					continue
				}
				r.stats.requestSpans.Add(1)
				var lat time.Duration
				if e, s := sp.GetEndTimeUnixNano(), sp.GetStartTimeUnixNano(); e > s {
					lat = time.Duration(e - s)
				}
				r.w.add(key, now, lat, sp.GetStatus().GetCode() == tracev1.Status_STATUS_CODE_ERROR)
			}
		}
	}
}

// isRequest: a span that handled a request to the service: server or
// consumer spans, and local roots that are neither client nor producer
// (apps that do not set a kind).
func isRequest(sp *tracev1.Span) bool {
	switch sp.GetKind() {
	case tracev1.Span_SPAN_KIND_SERVER, tracev1.Span_SPAN_KIND_CONSUMER:
		return true
	case tracev1.Span_SPAN_KIND_CLIENT, tracev1.Span_SPAN_KIND_PRODUCER:
		return false
	}
	return len(sp.GetParentSpanId()) == 0
}

func keyOf(attrs []*commonv1.KeyValue) serviceKey {
	k := serviceKey{service: "unknown_service"}
	for _, a := range attrs {
		v := a.GetValue().GetStringValue()
		switch a.GetKey() {
		case "service.name":
			if v != "" {
				k.service = v
			}
		case "k8s.namespace.name":
			k.namespace = v
		case "k8s.pod.name":
			k.pod = v
		case "k8s.pod.uid":
			k.podUID = v
		case "k8s.container.name":
			k.container = v
		case "container.id":
			k.containerID = v
		case "process.pid":
			k.pid = a.GetValue().GetIntValue()
		}
	}
	return k
}

// RED returns every service's signals at the receiver's clock now.
func (r *Receiver) RED() []ServiceRED {
	now := r.opts.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.w.red(now)
}

// Stats returns the counters.
func (r *Receiver) Stats() Stats {
	return Stats{
		Requests: r.stats.requests.Load(), Rejected: r.stats.rejected.Load(), Spans: r.stats.spans.Load(),
		RequestSpans: r.stats.requestSpans.Load(), Forwarded: r.stats.forwarded.Load(),
		ForwardDropped: r.stats.dropped.Load(), ForwardFailed: r.stats.failed.Load(),
		ServicesOverflow: r.overflow(),
	}
}

// forwardLoop sends queued requests one by one, retrying with backoff.
// When ctx ends, what is still queued is dropped and counted.
func (r *Receiver) forwardLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			for {
				select {
				case <-r.queue:
					r.stats.dropped.Add(1)
				default:
					return
				}
			}
		case it := <-r.queue:
			r.forward(ctx, it)
		}
	}
}

func (r *Receiver) forward(ctx context.Context, it forwardItem) {
	wait := 200 * time.Millisecond
	for attempt := 0; attempt <= r.opts.ForwardRetries; attempt++ {
		if attempt > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				r.stats.dropped.Add(1)
				return
			case <-t.C:
			}
			wait = min(wait*2, 10*time.Second)
		}
		err := r.post(ctx, it)
		if err == nil {
			r.stats.forwarded.Add(1)
			return
		}
		var perm permanentError
		if errors.As(err, &perm) {
			break
		}
		r.log.Debug("otlp: forward", "url", r.opts.ForwardURL, "attempt", attempt, "err", err)
	}
	r.stats.failed.Add(1)
	r.log.Warn("otlp: forward failed, request dropped", "url", r.opts.ForwardURL)
}

type permanentError struct{ error }

func (r *Receiver) post(ctx context.Context, it forwardItem) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.opts.ForwardURL, bytes.NewReader(it.body))
	if err != nil {
		return permanentError{err}
	}
	req.Header.Set("Content-Type", it.contentType)
	resp, err := r.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return fmt.Errorf("otlp: forward: %s", resp.Status)
	default:
		return permanentError{fmt.Errorf("otlp: forward: %s", resp.Status)}
	}
}

func (r *Receiver) overflow() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.w.overflow
}

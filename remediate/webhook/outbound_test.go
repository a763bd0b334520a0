package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-agent/vigil/rules"
	"github.com/vigil-agent/vigil/test/testenv"
)

// receiver is a webhook receiver that can be down (503) and records every
// delivery it accepts after checking its signature.
type receiver struct {
	t      *testing.T
	secret []byte
	down   atomic.Bool
	srv    *httptest.Server

	mu       sync.Mutex
	ids      []string // event ids in arrival order
	badSigs  int
	refused  int
	mismatch int // header id/type differs from the body
}

func newReceiver(t *testing.T, secret []byte) *receiver {
	r := &receiver{t: t, secret: secret}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down.Load() {
		r.refused++
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		return
	}
	if err := Verify(r.secret, req.Header.Get(HeaderTimestamp), body, req.Header.Get(HeaderSignature), time.Now(), time.Minute); err != nil {
		r.badSigs++
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	var ev Event
	if err := json.Unmarshal(body, &ev); err != nil {
		r.t.Errorf("receiver: bad body %q: %v", body, err)
		return
	}
	if ev.ID != req.Header.Get(HeaderEventID) || ev.Type != req.Header.Get(HeaderEventType) {
		r.mismatch++
	}
	r.ids = append(r.ids, ev.ID)
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) received() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ids)
}

// dedupe keeps the first arrival of each id, as a receiver would.
func dedupe(ids []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

func testEvent(i int, target string) Event {
	return Event{
		Type:          []string{EventRemediationStarted, EventRemediationStep, EventRemediationOutcome}[i%3],
		Node:          "node-1",
		RemediationID: fmt.Sprintf("rem-%d", i/3),
		Rule:          "memory-leak",
		Target:        rules.Target{Kind: "cgroup", Path: target},
		Step:          &EventStep{Index: i % 3, Action: "throttle-memory", Result: "ok"},
		Evidence:      map[string]float64{"working_set_bytes": float64(i << 20)},
	}
}

func startSender(t *testing.T, cfg SenderConfig) (*Sender, func()) {
	t.Helper()
	s, err := NewSender(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		<-done
		if err := s.Close(); err != nil {
			t.Errorf("close sender: %v", err)
		}
	}
	t.Cleanup(stop)
	return s, stop
}

// TestSenderDeliversAfterOutage: two receivers, one down for a while; each
// gets every event meant for it, in enqueue order, with valid signatures.
func TestSenderDeliversAfterOutage(t *testing.T) {
	secretA, secretB := []byte("secret-a-0123456789"), []byte("secret-b-0123456789")
	a, b := newReceiver(t, secretA), newReceiver(t, secretB)
	b.down.Store(true)
	s, _ := startSender(t, SenderConfig{
		OutboxPath: filepath.Join(t.TempDir(), "outbox.db"),
		Endpoints: []Endpoint{
			{Name: "a", URL: a.srv.URL, Secret: secretA},
			{Name: "b", URL: b.srv.URL, Secret: secretB, Types: []string{EventRemediationOutcome, EventOOMMissed}},
		},
		MinBackoff: 20 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond,
	})
	var wantA, wantB []string
	for i := range 30 {
		ev, err := s.Enqueue(testEvent(i, fmt.Sprintf("/cg%d", i%2)))
		if err != nil {
			t.Fatal(err)
		}
		wantA = append(wantA, ev.ID)
		if ev.Type == EventRemediationOutcome {
			wantB = append(wantB, ev.ID)
		}
	}
	testenv.Eventually(t, 20*time.Second, "receiver a to get every event", func() bool { return len(dedupe(a.received())) == len(wantA) })
	testenv.Eventually(t, 20*time.Second, "receiver b to refuse a few retries", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.refused >= 3
	})
	if got := b.received(); len(got) != 0 {
		t.Fatalf("receiver b got %d events while down", len(got))
	}
	b.down.Store(false)
	testenv.Eventually(t, 20*time.Second, "receiver b to get every event after the outage", func() bool { return len(dedupe(b.received())) == len(wantB) })

	for _, tt := range []struct {
		name string
		r    *receiver
		want []string
	}{{"a", a, wantA}, {"b", b, wantB}} {
		if got := dedupe(tt.r.received()); !slices.Equal(got, tt.want) {
			t.Errorf("receiver %s order:\ngot  %v\nwant %v", tt.name, got, tt.want)
		}
		if tt.r.badSigs != 0 || tt.r.mismatch != 0 {
			t.Errorf("receiver %s: %d bad signatures, %d header mismatches", tt.name, tt.r.badSigs, tt.r.mismatch)
		}
	}
	pending, err := s.Pending()
	if err != nil || pending["a"] != 0 || pending["b"] != 0 {
		t.Errorf("pending = %v, %v; want empty queues", pending, err)
	}
	got := gatherValues(t, s)
	for series, want := range map[string]float64{
		`vigil_webhook_deliveries_total{endpoint="a",result="delivered"}`: float64(len(wantA)),
		`vigil_webhook_deliveries_total{endpoint="b",result="delivered"}`: float64(len(wantB)),
		`vigil_webhook_deliveries_total{endpoint="a",result="dead"}`:      0,
		`vigil_webhook_outbox_pending{endpoint="a"}`:                      0,
		`vigil_webhook_outbox_pending{endpoint="b"}`:                      0,
	} {
		if got[series] != want {
			t.Errorf("%s = %v, want %v", series, got[series], want)
		}
	}
	if got[`vigil_webhook_deliveries_total{endpoint="b",result="retry"}`] < 3 {
		t.Errorf("retries to b = %v, want >= 3", got[`vigil_webhook_deliveries_total{endpoint="b",result="retry"}`])
	}
}

// gatherValues collects c into a map keyed by series as written in PromQL.
func gatherValues(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			key := f.GetName() + "{" + strings.Join(labels, ",") + "}"
			switch {
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[key] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}

// TestSenderSurvivesRestart: events queued while the receiver is down are
// delivered by a new Sender on the same outbox file after a restart, before
// the events queued after it.
func TestSenderSurvivesRestart(t *testing.T) {
	secret := []byte("restart-secret-0123")
	r := newReceiver(t, secret)
	r.down.Store(true)
	cfg := SenderConfig{
		OutboxPath: filepath.Join(t.TempDir(), "outbox.db"),
		Endpoints:  []Endpoint{{Name: "chat", URL: r.srv.URL, Secret: secret}},
		MinBackoff: 20 * time.Millisecond,
		MaxBackoff: 100 * time.Millisecond,
	}
	s1, stop1 := startSender(t, cfg)
	var want []string
	for i := range 10 {
		ev, err := s1.Enqueue(testEvent(i, "/cg"))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, ev.ID)
	}
	testenv.Eventually(t, 10*time.Second, "a few failed attempts", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.refused >= 2
	})
	stop1() // the agent stops mid-outage

	s2, _ := startSender(t, cfg)
	pending, err := s2.Pending()
	if err != nil || pending["chat"] != 10 {
		t.Fatalf("after restart pending = %v, %v; want 10", pending, err)
	}
	for i := 10; i < 15; i++ {
		ev, err := s2.Enqueue(testEvent(i, "/cg"))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, ev.ID)
	}
	r.down.Store(false)
	testenv.Eventually(t, 20*time.Second, "every event after the restart", func() bool { return len(dedupe(r.received())) == len(want) })
	if got := dedupe(r.received()); !slices.Equal(got, want) {
		t.Errorf("order across restart:\ngot  %v\nwant %v", got, want)
	}
	if r.badSigs != 0 {
		t.Errorf("%d bad signatures", r.badSigs)
	}
}

// TestSenderDeadLetters: an event the receiver rejects for good (4xx) is set
// aside and the queue behind it keeps moving.
func TestSenderDeadLetters(t *testing.T) {
	secret := []byte("dead-letter-secret-01")
	var got []string
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var ev Event
		json.NewDecoder(req.Body).Decode(&ev)
		if ev.Message == "poison" {
			http.Error(w, "cannot handle this", http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, ev.ID)
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	s, _ := startSender(t, SenderConfig{
		OutboxPath: filepath.Join(t.TempDir(), "outbox.db"),
		Endpoints:  []Endpoint{{Name: "x", URL: srv.URL, Secret: secret}},
		MinBackoff: 10 * time.Millisecond,
	})
	poison := testEvent(0, "/cg")
	poison.Message = "poison"
	if _, err := s.Enqueue(poison); err != nil {
		t.Fatal(err)
	}
	after, err := s.Enqueue(testEvent(1, "/cg"))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the event behind the poison one", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 1
	})
	if got[0] != after.ID {
		t.Errorf("delivered %v, want [%s]", got, after.ID)
	}
}

func TestSignVerify(t *testing.T) {
	secret := []byte("sign-secret-0123456")
	body := []byte(`{"id":"1"}`)
	now := time.Unix(1_800_000_000, 0)
	ts := "1800000000"
	sig := Sign(secret, ts, body)
	if len(sig) != len("sha256=")+64 {
		t.Fatalf("signature %q", sig)
	}
	tests := []struct {
		name    string
		secret  []byte
		ts, sig string
		body    []byte
		now     time.Time
		wantErr bool
	}{
		{"valid", secret, ts, sig, body, now, false},
		{"valid within skew", secret, ts, sig, body, now.Add(4 * time.Minute), false},
		{"too old", secret, ts, sig, body, now.Add(6 * time.Minute), true},
		{"from the future", secret, ts, sig, body, now.Add(-6 * time.Minute), true},
		{"other body", secret, ts, sig, []byte(`{"id":"2"}`), now, true},
		{"other secret", []byte("other-secret-01234"), ts, sig, body, now, true},
		{"timestamp not signed over", secret, "1800000001", sig, body, now, true},
		{"bad timestamp", secret, "soon", sig, body, now, true},
		{"no prefix", secret, ts, sig[len("sha256="):], body, now, true},
	}
	for _, tt := range tests {
		err := Verify(tt.secret, tt.ts, tt.body, tt.sig, tt.now, 5*time.Minute)
		if (err != nil) != tt.wantErr {
			t.Errorf("%s: Verify = %v, want error %v", tt.name, err, tt.wantErr)
		}
	}
}

func TestSenderConfigValidate(t *testing.T) {
	ok := Endpoint{Name: "a", URL: "https://hooks.example.invalid/x", Secret: []byte("0123456789abcdef")}
	tests := []struct {
		name    string
		cfg     SenderConfig
		wantErr bool
	}{
		{"ok", SenderConfig{OutboxPath: "x.db", Endpoints: []Endpoint{ok}}, false},
		{"no outbox", SenderConfig{Endpoints: []Endpoint{ok}}, true},
		{"duplicate name", SenderConfig{OutboxPath: "x.db", Endpoints: []Endpoint{ok, ok}}, true},
		{"not http", SenderConfig{OutboxPath: "x.db", Endpoints: []Endpoint{{Name: "a", URL: "ftp://h/x", Secret: ok.Secret}}}, true},
		{"short secret", SenderConfig{OutboxPath: "x.db", Endpoints: []Endpoint{{Name: "a", URL: ok.URL, Secret: []byte("s")}}}, true},
		{"backoff bounds", SenderConfig{OutboxPath: "x.db", MinBackoff: time.Minute, MaxBackoff: time.Second}, true},
	}
	for _, tt := range tests {
		if err := tt.cfg.Validate(); (err != nil) != tt.wantErr {
			t.Errorf("%s: Validate = %v, want error %v", tt.name, err, tt.wantErr)
		}
	}
}

func TestBackoffGrowsAndIsBounded(t *testing.T) {
	s := &Sender{cfg: SenderConfig{MinBackoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second}}
	for attempts, upper := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 10: 2 * time.Second, 100: 2 * time.Second} {
		for range 50 {
			d := s.backoff(attempts)
			if d < upper/2 || d > upper {
				t.Fatalf("backoff(%d) = %s, want in [%s, %s]", attempts, d, upper/2, upper)
			}
		}
	}
}

// BenchmarkEnqueue measures the durable enqueue (one fsync'd bbolt
// transaction) of an event for two endpoints.
func BenchmarkEnqueue(b *testing.B) {
	s, err := NewSender(SenderConfig{
		OutboxPath: filepath.Join(b.TempDir(), "outbox.db"),
		Endpoints: []Endpoint{
			{Name: "a", URL: "http://127.0.0.1:9/a", Secret: []byte("bench-secret-0123456")},
			{Name: "b", URL: "http://127.0.0.1:9/b", Secret: []byte("bench-secret-0123456")},
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ev := testEvent(1, "/cg")
	b.ResetTimer()
	for b.Loop() {
		ev.ID = ""
		if _, err := s.Enqueue(ev); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInbound measures one authenticated delivery of a real
// Alertmanager payload through the handler.
func BenchmarkInbound(b *testing.B) {
	body := readSeed(b, "alertmanager-firing.json")
	h, err := NewInbound(InboundConfig{BearerToken: "bench-token-0123456789"}, NewAlertStore(StoreOptions{}), nil)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/api/v1/alerts", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer bench-token-0123456789")
		rr := httptest.NewRecorder()
		h.ServeHTTP(rr, req)
		if rr.Code != http.StatusOK {
			b.Fatal(rr.Code)
		}
	}
}

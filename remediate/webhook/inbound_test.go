package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/test/testenv"
)

func readSeed(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestInboundHandler(t *testing.T) {
	const token = "inbound-token-0123456789"
	secret := []byte("inbound-secret-0123456789")
	firing := readSeed(t, "alertmanager-firing.json")
	now := time.Now()
	ts := strconv.FormatInt(now.Unix(), 10)
	oldTS := strconv.FormatInt(now.Add(-time.Hour).Unix(), 10)
	mutate := func(f func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(firing, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	alert0 := func(m map[string]any) map[string]any { return m["alerts"].([]any)[0].(map[string]any) }

	tests := []struct {
		name       string
		cfg        InboundConfig
		method     string
		ctype      string
		headers    map[string]string
		body       []byte
		wantStatus int
		wantErr    string // substring of the JSON error
		wantStored int
	}{
		{name: "bearer ok", cfg: InboundConfig{BearerToken: token}, headers: map[string]string{"Authorization": "Bearer " + token}, body: firing, wantStatus: 200, wantStored: 1},
		{name: "disabled when not configured", cfg: InboundConfig{}, headers: map[string]string{"Authorization": "Bearer " + token}, body: firing, wantStatus: 403, wantErr: "disabled"},
		{name: "missing credentials", cfg: InboundConfig{BearerToken: token}, body: firing, wantStatus: 401, wantErr: "missing credentials"},
		{name: "wrong token", cfg: InboundConfig{BearerToken: token}, headers: map[string]string{"Authorization": "Bearer " + token + "x"}, body: firing, wantStatus: 401, wantErr: "invalid bearer token"},
		{name: "basic auth is not bearer", cfg: InboundConfig{BearerToken: token}, headers: map[string]string{"Authorization": "Basic " + token}, body: firing, wantStatus: 401},
		{name: "hmac ok", cfg: InboundConfig{HMACSecret: secret}, headers: map[string]string{HeaderTimestamp: ts, HeaderSignature: Sign(secret, ts, firing)}, body: firing, wantStatus: 200, wantStored: 1},
		{name: "hmac bad signature", cfg: InboundConfig{HMACSecret: secret}, headers: map[string]string{HeaderTimestamp: ts, HeaderSignature: Sign([]byte("another-secret-0123456"), ts, firing)}, body: firing, wantStatus: 401, wantErr: "signature mismatch"},
		{name: "hmac replayed old timestamp", cfg: InboundConfig{HMACSecret: secret}, headers: map[string]string{HeaderTimestamp: oldTS, HeaderSignature: Sign(secret, oldTS, firing)}, body: firing, wantStatus: 401, wantErr: "away from now"},
		{name: "hmac over another body", cfg: InboundConfig{HMACSecret: secret}, headers: map[string]string{HeaderTimestamp: ts, HeaderSignature: Sign(secret, ts, []byte("{}"))}, body: firing, wantStatus: 401},
		{name: "GET refused", cfg: InboundConfig{BearerToken: token}, method: http.MethodGet, headers: map[string]string{"Authorization": "Bearer " + token}, wantStatus: 405},
		{name: "not JSON content type", cfg: InboundConfig{BearerToken: token}, ctype: "text/plain", headers: map[string]string{"Authorization": "Bearer " + token}, body: firing, wantStatus: 415},
		{name: "body too large", cfg: InboundConfig{BearerToken: token, MaxBodyBytes: 512}, headers: map[string]string{"Authorization": "Bearer " + token}, body: firing, wantStatus: 413},
		{name: "malformed JSON", cfg: InboundConfig{BearerToken: token}, headers: map[string]string{"Authorization": "Bearer " + token}, body: firing[:len(firing)/2], wantStatus: 400, wantErr: "malformed JSON"},
		{name: "trailing data", cfg: InboundConfig{BearerToken: token}, headers: map[string]string{"Authorization": "Bearer " + token}, body: append(append([]byte{}, firing...), []byte(`{}`)...), wantStatus: 400, wantErr: "after the JSON object"},
		{name: "unknown field", cfg: InboundConfig{BearerToken: token}, headers: map[string]string{"Authorization": "Bearer " + token},
			body: mutate(func(m map[string]any) { m["extra"] = 1 }), wantStatus: 400, wantErr: `unknown field "extra"`},
		{name: "wrong version", cfg: InboundConfig{BearerToken: token}, headers: map[string]string{"Authorization": "Bearer " + token},
			body: mutate(func(m map[string]any) { m["version"] = "3" }), wantStatus: 422, wantErr: `version: got "3"`},
		{name: "no alerts", cfg: InboundConfig{BearerToken: token}, headers: map[string]string{"Authorization": "Bearer " + token},
			body: mutate(func(m map[string]any) { m["alerts"] = []any{} }), wantStatus: 422, wantErr: "alerts: empty"},
		{name: "alert without alertname", cfg: InboundConfig{BearerToken: token}, headers: map[string]string{"Authorization": "Bearer " + token},
			body: mutate(func(m map[string]any) { delete(alert0(m)["labels"].(map[string]any), "alertname") }), wantStatus: 422, wantErr: "alerts[0].labels.alertname: missing"},
		{name: "alert with bad status", cfg: InboundConfig{BearerToken: token}, headers: map[string]string{"Authorization": "Bearer " + token},
			body: mutate(func(m map[string]any) { alert0(m)["status"] = "pending" }), wantStatus: 422, wantErr: "alerts[0].status"},
		{name: "alert with bad fingerprint", cfg: InboundConfig{BearerToken: token}, headers: map[string]string{"Authorization": "Bearer " + token},
			body: mutate(func(m map[string]any) { alert0(m)["fingerprint"] = "../etc" }), wantStatus: 422, wantErr: "alerts[0].fingerprint"},
		{name: "alert with bad label name", cfg: InboundConfig{BearerToken: token}, headers: map[string]string{"Authorization": "Bearer " + token},
			body: mutate(func(m map[string]any) { alert0(m)["labels"].(map[string]any)["bad-name"] = "x" }), wantStatus: 422, wantErr: `invalid name "bad-name"`},
		{name: "label value wrong type", cfg: InboundConfig{BearerToken: token}, headers: map[string]string{"Authorization": "Bearer " + token},
			body: mutate(func(m map[string]any) { alert0(m)["labels"].(map[string]any)["severity"] = 3 }), wantStatus: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := NewAlertStore(StoreOptions{})
			h, err := NewInbound(tt.cfg, store, nil)
			if err != nil {
				t.Fatal(err)
			}
			method := tt.method
			if method == "" {
				method = http.MethodPost
			}
			ctype := tt.ctype
			if ctype == "" {
				ctype = "application/json; charset=utf-8"
			}
			req := httptest.NewRequest(method, "/api/v1/alerts", bytes.NewReader(tt.body))
			req.Header.Set("Content-Type", ctype)
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			rr := httptest.NewRecorder()
			h.ServeHTTP(rr, req)
			if rr.Code != tt.wantStatus {
				t.Errorf("status = %d, want %d (body %s)", rr.Code, tt.wantStatus, rr.Body)
			}
			var reply inboundReply
			if err := json.Unmarshal(rr.Body.Bytes(), &reply); err != nil {
				t.Fatalf("reply is not JSON: %v: %s", err, rr.Body)
			}
			if tt.wantStatus != 200 && reply.Error == "" {
				t.Errorf("no error message in %s", rr.Body)
			}
			if !strings.Contains(reply.Error, tt.wantErr) {
				t.Errorf("error = %q, want it to contain %q", reply.Error, tt.wantErr)
			}
			if got := len(store.Active(time.Now())); got != tt.wantStored {
				t.Errorf("stored %d alerts, want %d", got, tt.wantStored)
			}
		})
	}
}

func TestInboundConfigValidate(t *testing.T) {
	tests := []struct {
		cfg     InboundConfig
		wantErr bool
	}{
		{InboundConfig{}, false},
		{InboundConfig{BearerToken: "0123456789abcdef"}, false},
		{InboundConfig{BearerToken: "short"}, true},
		{InboundConfig{HMACSecret: []byte("short")}, true},
		{InboundConfig{BearerToken: "0123456789abcdef", MaxBodyBytes: -1}, true},
	}
	for _, tt := range tests {
		if err := tt.cfg.Validate(); (err != nil) != tt.wantErr {
			t.Errorf("Validate(%+v) = %v, want error %v", tt.cfg, err, tt.wantErr)
		}
	}
}

func mkAlert(fp, status string, startsAt time.Time, labels map[string]string) amAlert {
	return amAlert{Status: status, Fingerprint: fp, StartsAt: startsAt, Labels: labels}
}

func TestAlertStoreLifecycle(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	start := t0.Add(-time.Minute)
	s := NewAlertStore(StoreOptions{ResolvedRetention: 5 * time.Minute, FiringTTL: time.Hour})
	leak := map[string]string{"alertname": "Leak", "cgroup": "/a"}

	type step struct {
		at             time.Time
		deliver        []amAlert
		wantAccepted   int
		wantDuplicates int
		wantStatus     map[string]string // fingerprint -> status in Active
	}
	steps := []step{
		{at: t0, deliver: []amAlert{mkAlert("aa", "firing", start, leak)}, wantAccepted: 1, wantStatus: map[string]string{"aa": "firing"}},
		{at: t0.Add(time.Second), deliver: []amAlert{mkAlert("aa", "firing", start, leak)}, wantDuplicates: 1, wantStatus: map[string]string{"aa": "firing"}},
		{at: t0.Add(2 * time.Second), deliver: []amAlert{mkAlert("aa", "resolved", start, leak)}, wantAccepted: 1, wantStatus: map[string]string{"aa": "resolved"}},
		// A firing notification re-sent after the resolution does not reopen it.
		{at: t0.Add(3 * time.Second), deliver: []amAlert{mkAlert("aa", "firing", start.Add(0), map[string]string{"alertname": "Leak", "cgroup": "/a", "x": "late"})}, wantDuplicates: 1, wantStatus: map[string]string{"aa": "resolved"}},
		// Resolved alerts expire after the retention.
		{at: t0.Add(2*time.Second + 5*time.Minute + time.Second), wantStatus: map[string]string{}},
		// A new episode (new startsAt) fires again.
		{at: t0.Add(10 * time.Minute), deliver: []amAlert{mkAlert("aa", "firing", t0.Add(9*time.Minute), leak)}, wantAccepted: 1, wantStatus: map[string]string{"aa": "firing"}},
		// Not re-delivered for FiringTTL: considered resolved, then expires.
		{at: t0.Add(10*time.Minute + time.Hour + time.Second), wantStatus: map[string]string{"aa": "resolved"}},
		{at: t0.Add(10*time.Minute + time.Hour + 6*time.Minute), wantStatus: map[string]string{}},
	}
	for i, st := range steps {
		if st.deliver != nil {
			acc, dup := s.apply(st.deliver, st.at)
			if acc != st.wantAccepted || dup != st.wantDuplicates {
				t.Errorf("step %d: accepted %d duplicates %d, want %d %d", i, acc, dup, st.wantAccepted, st.wantDuplicates)
			}
		}
		got := map[string]string{}
		for _, a := range s.Active(st.at) {
			got[a.Fingerprint] = a.Status
			if a.Target != "/a" || a.Name != "Leak" {
				t.Errorf("step %d: alert %+v", i, a)
			}
		}
		if len(got) != len(st.wantStatus) {
			t.Errorf("step %d: active %v, want %v", i, got, st.wantStatus)
			continue
		}
		for fp, want := range st.wantStatus {
			if got[fp] != want {
				t.Errorf("step %d: %s is %q, want %q", i, fp, got[fp], want)
			}
		}
	}
}

func TestAlertStoreEndsAt(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	s := NewAlertStore(StoreOptions{})
	a := mkAlert("bb", "firing", t0, map[string]string{"alertname": "X"})
	a.EndsAt = t0.Add(time.Minute)
	s.apply([]amAlert{a}, t0)
	if got := s.Active(t0.Add(30 * time.Second)); len(got) != 1 || got[0].Status != "firing" {
		t.Fatalf("before endsAt: %+v", got)
	}
	if got := s.Active(t0.Add(2 * time.Minute)); len(got) != 1 || got[0].Status != "resolved" {
		t.Fatalf("after endsAt: %+v", got)
	}
}

func TestActiveReturnsCopies(t *testing.T) {
	s := NewAlertStore(StoreOptions{})
	now := time.Now()
	s.apply([]amAlert{mkAlert("cc", "firing", now, map[string]string{"alertname": "X"})}, now)
	got := s.Active(now)
	got[0].Labels["alertname"] = "changed"
	if again := s.Active(now); again[0].Labels["alertname"] != "X" {
		t.Errorf("caller's change leaked into the store: %v", again[0].Labels)
	}
}

func TestMatch(t *testing.T) {
	cgroups := []collectors.CgroupSample{
		{Path: "/kubepods/burstable/podu1", Identity: collectors.Identity{Kind: "pod", PodUID: "u1", Namespace: "shop", Pod: "cart-0"}},
		{Path: "/kubepods/burstable/podu1/c1", Identity: collectors.Identity{Kind: "container", PodUID: "u1", ContainerID: "c1", Namespace: "shop", Pod: "cart-0"}},
		{Path: "/system.slice/nginx.service", Identity: collectors.Identity{Kind: "unit", Unit: "nginx.service"}},
	}
	tests := []struct {
		name       string
		labels     map[string]string
		wantTarget string
		wantKept   bool
	}{
		{"cgroup label", map[string]string{"cgroup": "/system.slice/nginx.service"}, "/system.slice/nginx.service", true},
		{"cgroup not on this node", map[string]string{"cgroup": "/elsewhere"}, "", false},
		{"container id", map[string]string{"container_id": "c1"}, "/kubepods/burstable/podu1/c1", true},
		{"pod uid picks the pod cgroup", map[string]string{"pod_uid": "u1"}, "/kubepods/burstable/podu1", true},
		{"namespace and pod", map[string]string{"namespace": "shop", "pod": "cart-0"}, "/kubepods/burstable/podu1", true},
		{"pod on another node", map[string]string{"namespace": "shop", "pod": "cart-1"}, "", false},
		{"unit", map[string]string{"unit": "nginx.service"}, "/system.slice/nginx.service", true},
		{"node-wide", map[string]string{"severity": "warning"}, "", true},
		{"namespace alone is node-wide", map[string]string{"namespace": "shop"}, "", true},
		{"this node", map[string]string{"node": "worker-1"}, "", true},
		{"another node", map[string]string{"node": "worker-2"}, "", false},
		{"another nodename", map[string]string{"nodename": "worker-2", "unit": "nginx.service"}, "", false},
		{"this node and a unit", map[string]string{"nodename": "worker-1", "unit": "nginx.service"}, "/system.slice/nginx.service", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			labels := map[string]string{"alertname": "A"}
			for k, v := range tt.labels {
				labels[k] = v
			}
			got := Match([]collectors.Alert{{Name: "A", Labels: labels}}, cgroups, "worker-1")
			if kept := len(got) == 1; kept != tt.wantKept {
				t.Fatalf("kept = %v, want %v", kept, tt.wantKept)
			}
			if tt.wantKept && got[0].Target != tt.wantTarget {
				t.Errorf("target = %q, want %q", got[0].Target, tt.wantTarget)
			}
		})
	}
}

// FuzzParseAlertmanager: the parser never panics, and whatever it accepts is
// valid and survives a round trip.
func FuzzParseAlertmanager(f *testing.F) {
	for _, name := range []string{"alertmanager-firing.json", "alertmanager-resolved.json"} {
		f.Add(readSeed(f, name))
	}
	f.Add([]byte(`{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"x"},"startsAt":"2026-01-01T00:00:00Z","fingerprint":"ab"}]}`))
	f.Add([]byte(`{"version":"4"} {}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := parseAlertmanager(body)
		if err != nil {
			var ve *ValidationError
			if !errors.Is(err, errSyntax) && !errors.As(err, &ve) {
				t.Fatalf("error of unexpected kind: %v", err)
			}
			return
		}
		if err := p.validate(); err != nil {
			t.Fatalf("accepted payload does not validate: %v", err)
		}
		again, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := parseAlertmanager(again); err != nil {
			t.Fatalf("re-encoded payload rejected: %v\n%s", err, again)
		}
		s := NewAlertStore(StoreOptions{})
		acc, dup := s.apply(p.Alerts, time.Now())
		if acc+dup != len(p.Alerts) {
			t.Fatalf("apply counted %d+%d of %d alerts", acc, dup, len(p.Alerts))
		}
	})
}

// TestMetricsPassPromtool: the webhook metrics, as exposed, pass
// `promtool check metrics`.
func TestMetricsPassPromtool(t *testing.T) {
	promtool := testenv.RequireTool(t, "promtool", "prometheus")
	s, _ := startSender(t, SenderConfig{
		OutboxPath: filepath.Join(t.TempDir(), "outbox.db"),
		Endpoints:  []Endpoint{{Name: "a", URL: "http://127.0.0.1:1/x", Secret: []byte("0123456789abcdef")}},
	})
	h, err := NewInbound(InboundConfig{BearerToken: "0123456789abcdef"}, NewAlertStore(StoreOptions{}), nil)
	if err != nil {
		t.Fatal(err)
	}
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/api/v1/alerts", nil))
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(s, h)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"vigil_webhook_deliveries_total", "vigil_webhook_outbox_pending", "vigil_inbound_alerts_total", `vigil_inbound_requests_refused_total{code="405"} 1`} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("exposition lacks %s:\n%s", want, body)
		}
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

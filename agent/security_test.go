package agent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/remediate/webhook"
)

const (
	secTestToken  = "vigil-api-token-0123456789"
	secTestSecret = "vigil-hmac-secret-0123456789"
	secTestAlerts = "vigil-alerts-token-0123456789"
)

// startSecureAgent runs an agent with an API token, an inbound alert
// token and HMAC secret, a 1 KiB body limit and a short header timeout.
func startSecureAgent(t *testing.T, headerTimeout time.Duration) string {
	t.Helper()
	old := readHeaderTimeout
	readHeaderTimeout = headerTimeout
	t.Cleanup(func() { readHeaderTimeout = old })
	dir := t.TempDir()
	write := func(name, v string) string {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	cfg := testConfig(t)
	cfg.Events.Enabled = false
	cfg.API.TokenFile = write("token", secTestToken)
	cfg.API.MaxBodyBytes = 1024
	cfg.Webhooks.Inbound.TokenFile = write("alerts-token", secTestAlerts)
	cfg.Webhooks.Inbound.HMACSecretFile = write("alerts-secret", secTestSecret)
	a := startAgent(t, Options{Config: cfg})
	return "http://" + a.Addr()
}

func doReq(t *testing.T, method, url string, body []byte, header map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// alertPayload is a one-alert Alertmanager delivery of about size bytes.
func alertPayload(t *testing.T, pad int) []byte {
	t.Helper()
	p := map[string]any{
		"version": "4", "receiver": "vigil", "status": "firing", "groupKey": "{}:{alertname=\"VigilTest\"}",
		"alerts": []map[string]any{{
			"status": "firing", "fingerprint": "0123456789abcdef", "startsAt": time.Now().UTC().Format(time.RFC3339),
			"labels":      map[string]string{"alertname": "VigilTest", "cgroup": "/vigil-test"},
			"annotations": map[string]string{"pad": strings.Repeat("x", pad)},
		}},
	}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAPIRejectsHostileRequests: unauthenticated, wrongly authenticated,
// oversized and malformed requests to the real server.
func TestAPIRejectsHostileRequests(t *testing.T) {
	base := startSecureAgent(t, time.Second)
	bearer := map[string]string{"Authorization": "Bearer " + secTestToken}
	alertsAuth := map[string]string{"Authorization": "Bearer " + secTestAlerts, "Content-Type": "application/json"}
	big := bytes.Repeat([]byte("a"), 4096)
	tests := []struct {
		name   string
		method string
		path   string
		body   []byte
		header map[string]string
		want   int
	}{
		{"read open", "GET", "/api/v1/pause", nil, nil, 200},
		{"metrics open", "GET", "/metrics", nil, nil, 200},
		{"pause without token", "POST", "/api/v1/pause", nil, nil, 401},
		{"pause with wrong token", "POST", "/api/v1/pause", nil, map[string]string{"Authorization": "Bearer " + secTestToken + "x"}, 401},
		{"pause with basic auth", "POST", "/api/v1/pause", nil, map[string]string{"Authorization": "Basic " + secTestToken}, 401},
		{"resume without token", "POST", "/api/v1/resume", nil, nil, 401},
		{"alerts without credentials", "POST", "/api/v1/alerts", alertPayload(t, 0), map[string]string{"Content-Type": "application/json"}, 401},
		{"alerts with the API token", "POST", "/api/v1/alerts", alertPayload(t, 0), map[string]string{"Authorization": "Bearer " + secTestToken, "Content-Type": "application/json"}, 401},
		{"alerts with a forged signature", "POST", "/api/v1/alerts", alertPayload(t, 0), map[string]string{"Content-Type": "application/json",
			webhook.HeaderTimestamp: strconv.FormatInt(time.Now().Unix(), 10), webhook.HeaderSignature: "sha256=" + strings.Repeat("0", 64)}, 401},
		{"oversized pause", "POST", "/api/v1/pause", big, bearer, 413},
		{"oversized alerts", "POST", "/api/v1/alerts", alertPayload(t, 4096), alertsAuth, 413},
		{"oversized unauthenticated alerts", "POST", "/api/v1/alerts", big, map[string]string{"Content-Type": "application/json"}, 413},
		{"malformed alerts JSON", "POST", "/api/v1/alerts", []byte(`{"version": "4", "alerts": [`), alertsAuth, 400},
		{"alerts of the wrong type", "POST", "/api/v1/alerts", alertPayload(t, 0), map[string]string{"Authorization": "Bearer " + secTestAlerts, "Content-Type": "text/plain"}, 415},
		{"alerts wrong version", "POST", "/api/v1/alerts", []byte(`{"version":"3","alerts":[]}`), alertsAuth, 422},
		{"unknown endpoint", "POST", "/api/v1/shutdown", nil, bearer, 404},
		{"wrong method", "DELETE", "/api/v1/pause", nil, bearer, 405},
	}
	for _, tt := range tests {
		got, body := doReq(t, tt.method, base+tt.path, tt.body, tt.header)
		if got != tt.want {
			t.Errorf("%s: %s %s = %d %s, want %d", tt.name, tt.method, tt.path, got, body, tt.want)
		}
	}
	// A body sent chunked (no Content-Length) is cut at the limit too.
	req, _ := http.NewRequest("POST", base+"/api/v1/alerts", io.MultiReader(bytes.NewReader(alertPayload(t, 0)), bytes.NewReader(big)))
	req.ContentLength = -1
	req.Header.Set("Authorization", "Bearer "+secTestAlerts)
	req.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 413 {
		t.Errorf("chunked oversized alerts = %v %v, want 413", resp, err)
	} else {
		resp.Body.Close()
	}

	raw := func(req string) string {
		c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, req); err != nil {
			return err.Error()
		}
		line, _ := bufio.NewReader(c).ReadString('\n')
		return line
	}
	for _, tt := range []struct{ name, req, want string }{
		{"garbage request line", "\x00\x01\x02 nonsense\r\n\r\n", "HTTP/1.1 400"},
		{"header larger than the limit", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("b", 2*maxHeaderBytes) + "\r\n\r\n", "HTTP/1.1 431"},
		{"bad content length", "POST /api/v1/pause HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", "HTTP/1.1 400"},
	} {
		if got := raw(tt.req); !strings.HasPrefix(got, tt.want) {
			t.Errorf("%s: answer %q, want %q", tt.name, got, tt.want)
		}
	}

	// After all that the agent still answers and still is not paused.
	if code, body := doReq(t, "GET", base+"/api/v1/pause", nil, nil); code != 200 || strings.Contains(body, `"paused":true`) {
		t.Errorf("GET /api/v1/pause = %d %s, want 200 and not paused", code, body)
	}
	if code, body := doReq(t, "POST", base+"/api/v1/pause", nil, bearer); code != 200 {
		t.Errorf("authenticated pause = %d %s", code, body)
	}
}

// TestAPICutsSlowLoris: clients that dribble headers are cut off by the
// header timeout, and while they hang on the server still serves others.
func TestAPICutsSlowLoris(t *testing.T) {
	const timeout = 300 * time.Millisecond
	base := startSecureAgent(t, timeout)
	addr := strings.TrimPrefix(base, "http://")
	const clients = 20
	type result struct {
		held time.Duration
		err  error
	}
	results := make(chan result, clients)
	for range clients {
		go func() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				results <- result{err: err}
				return
			}
			defer c.Close()
			start := time.Now()
			io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n")
			for i := 0; ; i++ {
				// One header line every 50ms: never finishing the header.
				c.SetWriteDeadline(time.Now().Add(time.Second))
				if _, err := fmt.Fprintf(c, "X-Drip-%d: a\r\n", i); err != nil {
					break
				}
				c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				var b [512]byte
				if n, err := c.Read(b[:]); n > 0 || (err != nil && !isTimeout(err)) {
					break // the server answered (408) or closed
				}
				if time.Since(start) > 10*time.Second {
					results <- result{held: time.Since(start), err: fmt.Errorf("still connected after %v", time.Since(start))}
					return
				}
			}
			results <- result{held: time.Since(start)}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	if code, _ := doReq(t, "GET", base+"/healthz", nil, nil); code != 200 {
		t.Errorf("/healthz = %d while slow clients hang on", code)
	}
	var longest time.Duration
	for range clients {
		r := <-results
		if r.err != nil {
			t.Error(r.err)
		}
		longest = max(longest, r.held)
	}
	// Generous: the timeout is 300ms; the bound only proves it is enforced.
	if longest > 5*time.Second {
		t.Errorf("a slow client was held %v with a %v header timeout", longest, timeout)
	}
	t.Logf("%d slow-loris clients cut after at most %v (header timeout %v)", clients, longest.Round(time.Millisecond), timeout)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestInboundAlertReplay: a signed delivery replayed within the allowed
// skew changes nothing (the alert store is idempotent: it is counted as a
// duplicate); replayed after the skew, or with its body altered, it is
// refused.
func TestInboundAlertReplay(t *testing.T) {
	base := startSecureAgent(t, time.Second)
	body := alertPayload(t, 0)
	signed := func(ts time.Time, b []byte) map[string]string {
		s := strconv.FormatInt(ts.Unix(), 10)
		return map[string]string{"Content-Type": "application/json", webhook.HeaderTimestamp: s,
			webhook.HeaderSignature: webhook.Sign([]byte(secTestSecret), s, b)}
	}
	now := time.Now()
	h := signed(now, body)
	code, first := doReq(t, "POST", base+"/api/v1/alerts", body, h)
	if code != 200 || !strings.Contains(first, `"accepted":1`) {
		t.Fatalf("first delivery = %d %s, want 200 accepted 1", code, first)
	}
	code, replay := doReq(t, "POST", base+"/api/v1/alerts", body, h)
	if code != 200 || strings.Contains(replay, "accepted") || !strings.Contains(replay, `"duplicates":1`) {
		t.Errorf("replay within skew = %d %s, want 200 with 1 duplicate and nothing accepted", code, replay)
	}
	stale := signed(now.Add(-10*time.Minute), body)
	if code, b := doReq(t, "POST", base+"/api/v1/alerts", body, stale); code != 401 {
		t.Errorf("replay of a 10-minute-old delivery = %d %s, want 401", code, b)
	}
	future := signed(now.Add(10*time.Minute), body)
	if code, b := doReq(t, "POST", base+"/api/v1/alerts", body, future); code != 401 {
		t.Errorf("delivery dated 10 minutes ahead = %d %s, want 401", code, b)
	}
	altered := bytes.Replace(body, []byte("VigilTest"), []byte("VigilEvil"), 1)
	if code, b := doReq(t, "POST", base+"/api/v1/alerts", altered, h); code != 401 {
		t.Errorf("replayed signature on an altered body = %d %s, want 401", code, b)
	}
}

package agent

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/remediate/journal"
)

// newTestAgent builds an agent (not running) whose HTTP surface is served
// by an httptest server.
func newTestAgent(t *testing.T, token string) (*Agent, string) {
	t.Helper()
	cfg := testConfig(t)
	if token != "" {
		file := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg.API.TokenFile = file
	}
	cfg.API.MaxBodyBytes = 1024
	a, err := New(Options{Config: cfg, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.newServer().Handler)
	t.Cleanup(srv.Close)
	return a, srv.URL
}

func do(t *testing.T, method, url, auth, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestMutatingEndpointsNeedToken(t *testing.T) {
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		w.Write(b)
	})
	tests := []struct {
		name     string
		token    string // configured token
		auth     string // Authorization header sent
		body     string
		wantCode int
	}{
		{"no token configured", "", "Bearer anything", "x", http.StatusForbidden},
		{"missing header", "s3cret", "", "x", http.StatusUnauthorized},
		{"wrong token", "s3cret", "Bearer s3cre", "x", http.StatusUnauthorized},
		{"wrong scheme", "s3cret", "Basic s3cret", "x", http.StatusUnauthorized},
		{"right token", "s3cret", "Bearer s3cret", "hello", http.StatusOK},
		{"oversized body", "s3cret", "Bearer s3cret", strings.Repeat("x", 2048), http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, url := newTestAgent(t, tt.token)
			a.HandleAuthenticated("POST /api/v1/echo", echo)
			code, body := do(t, "POST", url+"/api/v1/echo", tt.auth, tt.body)
			if code != tt.wantCode {
				t.Fatalf("POST = %d %q, want %d", code, body, tt.wantCode)
			}
			if code == http.StatusOK && body != tt.body {
				t.Errorf("body = %q, want %q", body, tt.body)
			}
		})
	}
}

func TestReadEndpointsBeforeFirstSnapshot(t *testing.T) {
	a, url := newTestAgent(t, "")
	tests := []struct {
		path     string
		wantCode int
		want     string
	}{
		{"/healthz", http.StatusOK, "ok\n"},
		{"/readyz", http.StatusServiceUnavailable, "not ready\nnot ready: snapshot: no snapshot yet\n"},
		{"/api/v1/snapshot", http.StatusServiceUnavailable, `{"error":"no snapshot yet"}` + "\n"},
		{"/nonexistent", http.StatusNotFound, "404 page not found\n"},
	}
	for _, tt := range tests {
		code, body := do(t, "GET", url+tt.path, "", "")
		if code != tt.wantCode || body != tt.want {
			t.Errorf("GET %s = %d %q, want %d %q", tt.path, code, body, tt.wantCode, tt.want)
		}
	}
	// POST to a read endpoint is refused.
	if code, _ := do(t, "POST", url+"/api/v1/snapshot", "", ""); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /api/v1/snapshot = %d, want 405", code)
	}
	// Before the first snapshot /metrics has the self-metrics and no
	// snapshot families, and says not ready.
	code, body := do(t, "GET", url+"/metrics", "", "")
	if code != http.StatusOK || !strings.Contains(body, "vigil_ready 0\n") || strings.Contains(body, "vigil_cgroup_") {
		t.Errorf("/metrics before a snapshot = %d, want vigil_ready 0 and no cgroup families:\n%s", code, body)
	}

	// Readiness conditions set by other components show up, in JSON too.
	a.SetNotReady("journal", "disk full")
	a.SetDegraded("psi_trigger", "refused")
	code, body = do(t, "GET", url+"/readyz?format=json", "", "")
	var st readyStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	want := readyStatus{Ready: false,
		NotReady: []Condition{{"journal", "disk full"}, {"snapshot", "no snapshot yet"}},
		Degraded: []Condition{{"psi_trigger", "refused"}}}
	if code != http.StatusServiceUnavailable || !equalStatus(st, want) {
		t.Errorf("/readyz?format=json = %d %+v, want 503 %+v", code, st, want)
	}
	a.SetNotReady("journal", "")
	a.SetNotReady("snapshot", "")
	a.SetDegraded("psi_trigger", "")
	if code, body := do(t, "GET", url+"/readyz", "", ""); code != http.StatusOK || body != "ready\n" {
		t.Errorf("/readyz after clearing = %d %q", code, body)
	}
	_, body = do(t, "GET", url+"/metrics", "", "")
	for _, line := range []string{"vigil_ready 1\n", `vigil_degraded{reason="psi_trigger"} 0` + "\n"} {
		if !strings.Contains(body, line) {
			t.Errorf("/metrics lacks %q", line)
		}
	}
}

func equalStatus(a, b readyStatus) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// TestSnapshotBuffersNeverTear checks the double buffer under the race
// detector's eye: readers holding a snapshot see it unchanged while the
// writer keeps filling.
func TestSnapshotBuffersNeverTear(t *testing.T) {
	b := newSnapshotBuffers()
	if s, release := b.Acquire(); s != nil {
		release()
		t.Fatal("Acquire before the first fill returned a snapshot")
	}
	done := make(chan struct{})
	errs := make(chan string, 1)
	for r := 0; r < 2; r++ {
		go func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				s, release := b.Acquire()
				if s == nil {
					release()
					continue
				}
				seq := s.Seq
				for i := range s.Cgroups {
					if s.Cgroups[i].Memory.UsageBytes != seq {
						select {
						case errs <- "torn snapshot":
						default:
						}
					}
				}
				release()
			}
		}()
	}
	for seq := uint64(1); seq <= 2000; seq++ {
		b.fill(func(s *collectors.Snapshot) {
			s.Seq = seq
			s.Cgroups = s.Cgroups[:0]
			for i := 0; i < 8; i++ {
				s.Cgroups = append(s.Cgroups, collectors.CgroupSample{Memory: collectors.CgroupMemory{UsageBytes: seq}})
			}
		})
	}
	close(done)
	select {
	case e := <-errs:
		t.Fatal(e)
	default:
	}
	if s, release := b.Acquire(); s == nil || s.Seq != 2000 {
		t.Errorf("latest seq = %v, want 2000", s)
	} else {
		release()
	}
}

// TestRunFailsCleanlyWhenTheAddressIsTaken starts an agent on an address
// already in use: Run returns the error, and the journal is released so a
// second agent can open it.
func TestRunFailsCleanlyWhenTheAddressIsTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := testConfig(t)
	cfg.Listen = ln.Addr().String()
	a, err := New(Options{Config: cfg, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	err = a.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "listen on "+cfg.Listen) {
		t.Fatalf("Run = %v, want a listen error", err)
	}
	j, err := journal.Open(cfg.Remediation.Journal.Path, journal.Options{})
	if err != nil {
		t.Fatalf("journal still held after the failed start: %v", err)
	}
	j.Close()
}

// TestMetricsGzipMatchesPlain scrapes /metrics gzipped (the text streamed
// through the compressor in chunks) and plain: the cgroup series are the
// same, for a body much larger than one chunk.
func TestMetricsGzipMatchesPlain(t *testing.T) {
	a, url := newTestAgent(t, "")
	a.snaps.fill(func(s *collectors.Snapshot) { *s = *testSnapshot(300) })
	scrape := func(encoding string) (series []string, contentEncoding string) {
		t.Helper()
		req, err := http.NewRequest("GET", url+"/metrics", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept-Encoding", encoding) // set by hand: no transparent decompression
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body io.Reader = resp.Body
		if resp.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			body = zr
		}
		b, err := io.ReadAll(body)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, `cgroup="`) {
				series = append(series, line)
			}
		}
		return series, resp.Header.Get("Content-Encoding")
	}
	plain, plainEnc := scrape("identity")
	zipped, zipEnc := scrape("gzip")
	if plainEnc != "" || zipEnc != "gzip" {
		t.Errorf("Content-Encoding plain %q, gzip %q; want \"\" and \"gzip\"", plainEnc, zipEnc)
	}
	if len(plain) < 300 {
		t.Fatalf("%d cgroup series in the plain body, want at least 300", len(plain))
	}
	if strings.Join(plain, "\n") != strings.Join(zipped, "\n") {
		t.Errorf("gzipped body has %d cgroup series, plain %d, or they differ", len(zipped), len(plain))
	}
}

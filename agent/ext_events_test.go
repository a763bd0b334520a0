package agent

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigil-agent/vigil/agent/config"
	"github.com/vigil-agent/vigil/remediate/journal"
	"github.com/vigil-agent/vigil/remediate/webhook"
	"github.com/vigil-agent/vigil/test/cgtest"
	"github.com/vigil-agent/vigil/test/otelcol"
	"github.com/vigil-agent/vigil/test/testenv"
)

// receiver is an outbound webhook receiver that checks every signature.
type receiver struct {
	mu     sync.Mutex
	events []webhook.Event
	bad    []string
}

func (r *receiver) snapshot() ([]webhook.Event, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]webhook.Event(nil), r.events...), append([]string(nil), r.bad...)
}

func newReceiver(t *testing.T, secret []byte) (*receiver, *httptest.Server) {
	r := &receiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		if err := webhook.Verify(secret, req.Header.Get(webhook.HeaderTimestamp), body, req.Header.Get(webhook.HeaderSignature), time.Now(), time.Minute); err != nil {
			r.bad = append(r.bad, err.Error())
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var ev webhook.Event
		if err := json.Unmarshal(body, &ev); err != nil {
			r.bad = append(r.bad, err.Error())
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		r.events = append(r.events, ev)
	}))
	t.Cleanup(srv.Close)
	return r, srv
}

// TestRemediationEventsReachReceivers runs a real ladder on a real cgroup
// with the three consumers on: signed outbound webhooks to a receiver, spans
// to a real OpenTelemetry Collector (trace id in the journal record), and
// the record forwarded to the collector's Fluent Forward receiver.
func TestRemediationEventsReachReceivers(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a measured outcome (15 s)")
	}
	col := otelcol.Start(t)
	g := cgtest.New(t)
	setLimit(t, g, strconv.Itoa(512<<20))

	secret := []byte("0123456789abcdef-test-secret")
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	recv, srv := newReceiver(t, secret)

	cfg := testConfig(t)
	roomForManyCgroups(t, cfg)
	rulesDir := t.TempDir()
	rule := "rules:\n- name: test-events\n  description: the test cgroup holds more than 32 MiB\n  severity: critical\n" +
		"  selector:\n    paths: [\"" + g.Path() + "\"]\n  condition: working_set_bytes > 33554432\n  actions:\n  - action: freeze\n"
	if err := os.WriteFile(filepath.Join(rulesDir, "test.yaml"), []byte(rule), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.Rules.Dirs = []string{rulesDir}
	cfg.Remediation.OptIn = []string{g.Path()}
	cfg.Webhooks.Outbound.Endpoints = []config.OutboundEndpoint{{Name: "test", URL: srv.URL, SecretFile: secretFile}}
	cfg.Webhooks.Outbound.MinBackoff = 100 * time.Millisecond
	cfg.Tracing.Endpoint = col.OTLPHTTP
	cfg.Forward.Address = col.Forward
	a := startAgent(t, Options{Config: cfg})
	// The test cgroup is a child of the test process's own cgroup, which
	// safety refuses as vigil's; a deployed vigil runs in a cgroup of its
	// own (self.cgroup). Name one the test cgroup is not related to.
	sc := safetyConfig(cfg)
	sc.SelfCgroup = "/vigil-agent-under-test"
	a.pipeline.executor.SetSafety(sc)

	cgtest.Start(t, g.Allocator(cgtest.AllocSpec{TotalMiB: 48, StepMiB: 8, Interval: 20 * time.Millisecond}))

	var events []webhook.Event
	testenv.Eventually(t, 40*time.Second, "started, step and outcome events at the receiver", func() bool {
		all, _ := recv.snapshot()
		events = events[:0]
		for _, e := range all { // other tests on the host OOM too (oom.missed)
			if e.Target.Path == g.Path() {
				events = append(events, e)
			}
		}
		has := map[string]bool{}
		for _, e := range events {
			has[e.Type] = true
		}
		return has[webhook.EventRemediationStarted] && has[webhook.EventRemediationStep] && has[webhook.EventRemediationOutcome]
	})
	if _, bad := recv.snapshot(); len(bad) > 0 {
		t.Errorf("deliveries refused by the receiver: %v", bad)
	}
	first := events[0]
	if first.Type != webhook.EventRemediationStarted {
		t.Errorf("first event = %s, want %s", first.Type, webhook.EventRemediationStarted)
	}
	var steps []string
	for _, e := range events {
		if e.RemediationID != first.RemediationID || e.Rule != "test-events" || e.Severity != "critical" || e.Target.Path != g.Path() {
			t.Errorf("event %s: remediation %q rule %q severity %q target %q; want %q test-events critical %q",
				e.Type, e.RemediationID, e.Rule, e.Severity, e.Target.Path, first.RemediationID, g.Path())
		}
		if e.Step != nil {
			steps = append(steps, e.Step.Action+":"+e.Step.Result)
		}
		if e.Type == webhook.EventRemediationOutcome && e.Outcome != journal.OutcomeDryRun {
			t.Errorf("outcome = %q, want %q (the default dry-run)", e.Outcome, journal.OutcomeDryRun)
		}
	}
	if len(steps) < 2 || steps[0] != "freeze:started" || steps[1] != "freeze:ok" {
		t.Errorf("steps = %v, want [freeze:started freeze:ok ...]", steps)
	}

	rec, err := a.pipeline.journal.Get(first.RemediationID)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.TraceID) != 32 {
		t.Fatalf("journal record trace id = %q, want 32 hex digits", rec.TraceID)
	}
	spans := col.WaitSpans(t, 20*time.Second, func(ss []otelcol.Span) bool {
		n := 0
		for _, s := range ss {
			if s.TraceID == rec.TraceID {
				n++
			}
		}
		return n >= 2
	})
	var root, step *otelcol.Span
	for i := range spans {
		s := &spans[i]
		if s.TraceID != rec.TraceID {
			continue
		}
		switch s.Name {
		case "vigil.remediation":
			root = s
		case "vigil.remediation.step":
			step = s
		}
	}
	if root == nil || step == nil {
		t.Fatalf("spans of trace %s: root %v step %v, want both", rec.TraceID, root, step)
	}
	if step.ParentSpanID != root.SpanID {
		t.Errorf("step span parent = %s, want the remediation span %s", step.ParentSpanID, root.SpanID)
	}
	if root.Attrs["vigil.remediation.id"] != rec.ID || root.Attrs["vigil.rule"] != "test-events" {
		t.Errorf("root span attributes = %v", root.Attrs)
	}
	if step.Attrs["vigil.action"] != "freeze" || step.Attrs["vigil.step.result"] != "dry_run" {
		t.Errorf("step span attributes = %v, want action freeze, result dry_run", step.Attrs)
	}

	logs := col.WaitLogs(t, 20*time.Second, func(ls []otelcol.LogRecord) bool {
		for _, l := range ls {
			if forwardedID(l) == rec.ID {
				return true
			}
		}
		return false
	})
	_ = logs

	// The incident report of this record, rendered by a real browser.
	t.Run("rca html", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "incident.html")
		code, stdout, stderr := runCmd(t, "rca", rec.ID, "--db", cfg.Remediation.Journal.Path, "--api", "http://"+a.Addr(), "--html", file)
		if code != 0 {
			t.Fatalf("vigil rca --html = %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
		rec, err := a.pipeline.journal.Get(first.RemediationID) // as rca read it
		if err != nil {
			t.Fatal(err)
		}
		html, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, ext := range []string{" src=", "href=", "url(", "@import"} {
			if strings.Contains(string(html), ext) {
				t.Errorf("report refers to something outside itself (%q): not self-contained", ext)
			}
		}
		dom, png := renderHTML(t, file)
		checkReportDOM(t, dom, len(rec.Steps), "working_set", "limit", "psi_some")
		t.Logf("screenshot: %s", png)
	})
}

// forwardedID is the record id of a forwarded remediation record.
func forwardedID(l otelcol.LogRecord) string {
	for _, m := range []map[string]any{l.Attrs} {
		if v, ok := m["id"].(string); ok {
			return v
		}
	}
	if m, ok := l.Body.(map[string]any); ok {
		if v, ok := m["id"].(string); ok {
			return v
		}
	}
	return ""
}

// roomForManyCgroups lets the agent track every cgroup of a busy shared
// host (other test packages may hold thousands), so that the test's own is
// not left out by the descriptor budget: it raises RLIMIT_NOFILE (root may)
// and max_cgroups for the test.
func roomForManyCgroups(t *testing.T, cfg *config.Config) {
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	want := unix.Rlimit{Cur: 262144, Max: 262144}
	if old.Max > want.Max {
		want = unix.Rlimit{Cur: old.Max, Max: old.Max}
	}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &want); err != nil {
		t.Logf("RLIMIT_NOFILE stays %d: %v", old.Cur, err)
		return
	}
	t.Cleanup(func() { _ = unix.Setrlimit(unix.RLIMIT_NOFILE, &old) })
	cfg.MaxCgroups = 25000
}

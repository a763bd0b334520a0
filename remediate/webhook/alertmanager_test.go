package webhook

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/rules"
	"github.com/vigil-agent/vigil/test/testenv"
)

var update = flag.Bool("update", false, "rewrite testdata/ with payloads captured from the real Alertmanager")

// bodyRecorder keeps every request body that reached the handler.
type bodyRecorder struct {
	next http.Handler
	mu   sync.Mutex
	seen [][]byte
}

func (b *bodyRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	b.mu.Lock()
	b.seen = append(b.seen, body)
	b.mu.Unlock()
	r.Body = io.NopCloser(bytes.NewReader(body))
	b.next.ServeHTTP(w, r)
}

func (b *bodyRecorder) bodies() [][]byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([][]byte(nil), b.seen...)
}

// TestAlertmanagerEndToEnd: alerts posted to a real Alertmanager's v2 API are
// routed, with a bearer token, to the inbound handler; they show up in the
// store as firing with their labels and target, then as resolved.
func TestAlertmanagerEndToEnd(t *testing.T) {
	const token = "e2e-token-0123456789abcdef"
	store := NewAlertStore(StoreOptions{})
	inbound, err := NewInbound(InboundConfig{BearerToken: token}, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := &bodyRecorder{next: inbound}
	mux := http.NewServeMux()
	mux.Handle("POST /api/v1/alerts", rec)
	vigil := httptest.NewServer(mux)
	t.Cleanup(vigil.Close)

	cfg := fmt.Sprintf(`route:
  receiver: vigil
  group_by: [alertname, cgroup]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: vigil
    webhook_configs:
      - url: %s/api/v1/alerts
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials: %s
`, vigil.URL, token)
	amURL := startAlertmanager(t, cfg)

	startsAt := time.Now().Add(-time.Minute).UTC().Truncate(time.Second)
	post := func(endsAt time.Time) {
		alerts := []map[string]any{
			{
				"labels":      map[string]string{"alertname": "PodMemoryLeak", "cgroup": "/kubepods/pod1", "severity": "critical"},
				"annotations": map[string]string{"summary": "leaking"},
				"startsAt":    startsAt,
				"endsAt":      endsAt,
			},
			{
				"labels":   map[string]string{"alertname": "NodeSwapping", "severity": "warning"},
				"startsAt": startsAt,
				"endsAt":   endsAt,
			},
		}
		body, _ := json.Marshal(alerts)
		resp, err := http.Post(amURL+"/api/v2/alerts", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("POST /api/v2/alerts: %s: %s", resp.Status, b)
		}
	}

	post(time.Now().Add(time.Hour))
	testenv.Eventually(t, 30*time.Second, "both alerts firing in the store", func() bool {
		return countStatus(store.Active(time.Now()), "firing") == 2
	})
	byName := map[string]collectors.Alert{}
	for _, a := range store.Active(time.Now()) {
		byName[a.Name] = a
	}
	leak := byName["PodMemoryLeak"]
	if leak.Target != "/kubepods/pod1" || leak.Labels["severity"] != "critical" || leak.Annotations["summary"] != "leaking" ||
		!leak.StartsAt.Equal(startsAt) || leak.Fingerprint == "" {
		t.Errorf("PodMemoryLeak = %+v", leak)
	}
	if node := byName["NodeSwapping"]; node.Target != "" || node.Status != "firing" {
		t.Errorf("NodeSwapping = %+v, want node-wide firing", node)
	}

	post(time.Now().Add(-time.Second))
	testenv.Eventually(t, 30*time.Second, "both alerts resolved in the store", func() bool {
		return countStatus(store.Active(time.Now()), "resolved") == 2
	})

	bodies := rec.bodies()
	for i, b := range bodies {
		if _, err := parseAlertmanager(b); err != nil {
			t.Errorf("delivery %d does not parse: %v\n%s", i, err, b)
		}
	}
	if *update {
		// Seeds for FuzzParseAlertmanager: one real body of each status.
		for _, status := range []string{"firing", "resolved"} {
			for _, body := range bodies {
				var p amPayload
				if json.Unmarshal(body, &p) != nil || p.Status != status {
					continue
				}
				var pretty bytes.Buffer
				json.Indent(&pretty, body, "", "  ")
				path := filepath.Join("testdata", "alertmanager-"+status+".json")
				if err := os.WriteFile(path, append(pretty.Bytes(), '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
				break
			}
		}
	}

	// A repeated delivery of a captured body changes nothing.
	before := store.Active(time.Now())
	resp := postJSON(t, vigil.URL+"/api/v1/alerts", bodies[0], map[string]string{"Authorization": "Bearer " + token})
	if resp.Duplicates == 0 || resp.Accepted != 0 {
		t.Errorf("re-delivery: %+v, want only duplicates", resp)
	}
	if after := store.Active(time.Now()); !sameAlerts(before, after) {
		t.Errorf("re-delivery changed the store:\nbefore %+v\nafter  %+v", before, after)
	}
	m := gatherValues(t, inbound)
	if m[`vigil_inbound_alerts_total{result="accepted"}`] != 4 || m[`vigil_inbound_alerts_total{result="duplicate"}`] < 1 {
		t.Errorf("inbound metrics %v, want 4 accepted (2 alerts firing then resolved) and duplicates", m)
	}
}

func countStatus(alerts []collectors.Alert, status string) int {
	n := 0
	for _, a := range alerts {
		if a.Status == status {
			n++
		}
	}
	return n
}

func sameAlerts(a, b []collectors.Alert) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

func postJSON(t *testing.T, url string, body []byte, headers map[string]string) inboundReply {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r inboundReply
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("decode reply: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %s: %s", url, resp.Status, r.Error)
	}
	return r
}

// startAlertmanager runs a real Alertmanager with cfg on a loopback port and
// returns its base URL.
func startAlertmanager(t *testing.T, cfg string) string {
	t.Helper()
	bin := testenv.RequireTool(t, "prometheus-alertmanager", "prometheus-alertmanager")
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	amAddr := testenv.FreeAddr(t)
	testenv.StartProcess(t, "alertmanager", exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+amAddr,
		"--cluster.listen-address=", // no gossip port
		"--log.level=warn",
	))
	amURL := "http://" + amAddr
	testenv.WaitHTTP(t, amURL+"/-/ready", 30*time.Second)
	return amURL
}

// TestSenderPushesToAlertmanager: an endpoint in Alertmanager format turns a
// remediation's events into one alert on a real Alertmanager, firing from the
// start event and resolved by the outcome; a missed OOM kill is its own alert.
func TestSenderPushesToAlertmanager(t *testing.T) {
	amURL := startAlertmanager(t, `route:
  receiver: blackhole
receivers:
  - name: blackhole
`)
	s, _ := startSender(t, SenderConfig{
		OutboxPath: filepath.Join(t.TempDir(), "outbox.db"),
		Endpoints:  []Endpoint{{Name: "am", URL: amURL + "/api/v2/alerts", Secret: []byte("am-secret-0123456789"), Format: FormatAlertmanager}},
		MinBackoff: 20 * time.Millisecond,
	})
	target := rules.Target{Kind: "cgroup", Path: "/kubepods/podu1", Identity: collectors.Identity{Kind: "pod", PodUID: "u1", Namespace: "shop", Pod: "cart-0"}}
	base := Event{Node: "node-1", RemediationID: "rem-1", Rule: "memory-leak", Severity: "critical", Target: target}
	started, step, outcome := base, base, base
	started.Type, started.Message = EventRemediationStarted, "working set 95% of limit and growing"
	step.Type, step.Step = EventRemediationStep, &EventStep{Index: 0, Action: "throttle-memory", Result: "ok"}
	outcome.Type, outcome.Outcome = EventRemediationOutcome, "oom_avoided"
	oom := Event{Type: EventOOMMissed, Node: "node-1", Target: rules.Target{Kind: "cgroup", Path: "/system.slice/batch.service", Identity: collectors.Identity{Kind: "unit", Unit: "batch.service"}}, Outcome: "oom_killed"}
	for _, ev := range []Event{started, step, oom} {
		if _, err := s.Enqueue(ev); err != nil {
			t.Fatal(err)
		}
	}
	type gettable struct {
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
	}
	active := func() map[string]gettable {
		resp, err := http.Get(amURL + "/api/v2/alerts")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var alerts []gettable
		if err := json.NewDecoder(resp.Body).Decode(&alerts); err != nil {
			t.Fatal(err)
		}
		out := map[string]gettable{}
		for _, a := range alerts {
			out[a.Labels["alertname"]] = a
		}
		return out
	}
	testenv.Eventually(t, 20*time.Second, "both alerts active in Alertmanager", func() bool {
		got := active()
		return got["VigilRemediation"].Annotations["step"] != "" && got["VigilOOMMissed"].Labels != nil
	})
	got := active()
	rem := got["VigilRemediation"]
	for k, want := range map[string]string{"node": "node-1", "rule": "memory-leak", "severity": "critical", "remediation_id": "rem-1", "cgroup": "/kubepods/podu1", "namespace": "shop", "pod": "cart-0", "pod_uid": "u1"} {
		if rem.Labels[k] != want {
			t.Errorf("VigilRemediation label %s = %q, want %q (labels %v)", k, rem.Labels[k], want, rem.Labels)
		}
	}
	if rem.Annotations["step"] != "0 throttle-memory: ok" {
		t.Errorf("VigilRemediation annotations %v", rem.Annotations)
	}
	if u := got["VigilOOMMissed"].Labels["unit"]; u != "batch.service" {
		t.Errorf("VigilOOMMissed labels %v", got["VigilOOMMissed"].Labels)
	}

	if _, err := s.Enqueue(outcome); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "the outcome to resolve the remediation alert", func() bool {
		_, still := active()["VigilRemediation"]
		return !still
	})
	if _, ok := active()["VigilOOMMissed"]; !ok {
		t.Errorf("VigilOOMMissed resolved too early")
	}
}

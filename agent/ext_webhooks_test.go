package agent

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/test/cgtest"
	"github.com/vigil-agent/vigil/test/testenv"
)

// TestInboundAlertsReachTheSnapshot delivers an Alertmanager webhook about
// a real test cgroup and finds the alert, matched to the cgroup, in the
// snapshot that rules evaluate.
func TestInboundAlertsReachTheSnapshot(t *testing.T) {
	g := cgtest.New(t)
	cfg := testConfig(t)
	tokenFile := filepath.Join(t.TempDir(), "alert-token")
	const token = "alertmanager-token-0123456789"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Webhooks.Inbound.TokenFile = tokenFile
	a := startAgent(t, Options{Config: cfg})
	base := "http://" + a.Addr()

	payload := fmt.Sprintf(`{"receiver":"vigil","status":"firing","alerts":[{"status":"firing",
		"labels":{"alertname":"TestWorkloadSlow","cgroup":%q,"severity":"warning"},"annotations":{"summary":"slow"},
		"startsAt":%q,"endsAt":"0001-01-01T00:00:00Z","generatorURL":"","fingerprint":"0123456789abcdef"}],
		"groupLabels":{},"commonLabels":{},"commonAnnotations":{},"externalURL":"http://alertmanager","version":"4",
		"groupKey":"{}:{}","truncatedAlerts":0}`, g.Path(), time.Now().UTC().Format(time.RFC3339))
	post := func(auth string) (int, string) {
		req, err := http.NewRequest("POST", base+"/api/v1/alerts", strings.NewReader(payload))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}
	if code, body := post(""); code != http.StatusUnauthorized {
		t.Errorf("unauthenticated delivery = %d %s, want 401", code, body)
	}
	if code, body := post("Bearer wrong-token-0123456789"); code != http.StatusUnauthorized {
		t.Errorf("wrong token = %d %s, want 401", code, body)
	}
	if code, body := post("Bearer " + token); code != http.StatusOK || !strings.Contains(body, `"accepted":1`) {
		t.Fatalf("delivery = %d %s, want 200 accepted 1", code, body)
	}
	var found collectors.Alert
	testenv.Eventually(t, 10*time.Second, "the alert in the snapshot", func() bool {
		_, body := get(t, base+"/api/v1/snapshot")
		var snap collectors.Snapshot
		if err := json.Unmarshal(body, &snap); err != nil {
			t.Fatal(err)
		}
		for _, al := range snap.Alerts {
			if al.Name == "TestWorkloadSlow" {
				found = al
				return true
			}
		}
		return false
	})
	if found.Target != g.Path() || found.Status != "firing" || found.Labels["severity"] != "warning" {
		t.Errorf("alert = %+v, want firing, matched to %s", found, g.Path())
	}
	// A repeated delivery is idempotent.
	if code, body := post("Bearer " + token); code != http.StatusOK || !strings.Contains(body, `"duplicates":1`) {
		t.Errorf("repeated delivery = %d %s, want a duplicate", code, body)
	}
}

// TestInboundAlertsOffByDefault checks that without a configured secret
// every delivery is refused.
func TestInboundAlertsOffByDefault(t *testing.T) {
	a := startAgent(t, Options{Config: testConfig(t)})
	req, _ := http.NewRequest("POST", "http://"+a.Addr()+"/api/v1/alerts", strings.NewReader(`{"version":"4"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer anything-at-all-0123456789")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("delivery without configuration = %d, want 403", resp.StatusCode)
	}
}

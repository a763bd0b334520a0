package agent

import (
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/test/testenv"
)

// testExtension is registered for every agent of this test binary: it
// mounts an endpoint and an enricher that marks each snapshot with an
// alert, and counts what it saw.
var testExtension struct {
	setups, enriched, stopped atomic.Int64
	// offCycle records, per "kind path" of a trigger, that a partial
	// snapshot for it held that cgroup.
	offCycle sync.Map
}

func init() {
	registerExtension(&Extension{
		// Sorted after the real extensions, so its alert is added to theirs.
		Name: "zz-test",
		Setup: func(a *Agent) error {
			testExtension.setups.Add(1)
			a.Handle("GET /api/v1/test-extension", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Write([]byte("extension\n"))
			}))
			a.AddEnricher(func(snap *collectors.Snapshot) {
				testExtension.enriched.Add(1)
				if snap.Partial && snap.Trigger != nil {
					for i := range snap.Cgroups {
						if snap.Cgroups[i].Path == snap.Trigger.Path {
							testExtension.offCycle.Store(snap.Trigger.Kind+" "+snap.Trigger.Path, true)
						}
					}
				}
				snap.Alerts = append(snap.Alerts, collectors.Alert{Name: "TestAlert", Status: "firing"})
			})
			a.OnStop(func() { testExtension.stopped.Add(1) })
			return nil
		},
	})
}

func TestExtensionIsSetUp(t *testing.T) {
	setups, stopped := testExtension.setups.Load(), testExtension.stopped.Load()
	// Registered before startAgent, so it runs after the agent stopped.
	t.Cleanup(func() {
		if got := testExtension.stopped.Load() - stopped; got != 1 {
			t.Errorf("OnStop ran %d times after the agent stopped, want 1", got)
		}
	})
	a := startAgent(t, Options{Config: testConfig(t)})
	base := "http://" + a.Addr()
	if code, body := get(t, base+"/api/v1/test-extension"); code != http.StatusOK || string(body) != "extension\n" {
		t.Errorf("extension endpoint = %d %q", code, body)
	}
	testenv.Eventually(t, 10*time.Second, "an enriched snapshot", func() bool {
		snap, release := a.Acquire()
		defer release()
		return snap != nil && len(snap.Alerts) > 0 && snap.Alerts[len(snap.Alerts)-1].Name == "TestAlert"
	})
	if got := testExtension.setups.Load() - setups; got != 1 {
		t.Errorf("Setup ran %d times, want 1", got)
	}
	if testExtension.enriched.Load() == 0 {
		t.Errorf("enricher never ran")
	}
	if testExtension.stopped.Load() != stopped {
		t.Errorf("OnStop ran while the agent runs")
	}
}

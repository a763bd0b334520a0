package otelcol

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fluent/fluent-logger-golang/fluent"
)

// TestCollectorRoundTrip sends one OTLP/HTTP JSON span and one Fluent
// Forward record, and reads both back from the file exporter, also across a
// restart on the same ports.
func TestCollectorRoundTrip(t *testing.T) {
	c := Start(t)
	post := func(name string) {
		t.Helper()
		body := `{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"harness"}}]},
"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"` + name + `","kind":2,
"startTimeUnixNano":"` + strconv.FormatInt(time.Now().UnixNano(), 10) + `","endTimeUnixNano":"` + strconv.FormatInt(time.Now().UnixNano()+1000, 10) + `",
"attributes":[{"key":"n","value":{"intValue":"42"}}],"status":{"code":2}}]}]}]}`
		resp, err := http.Post(c.OTLPHTTP+"/v1/traces", "application/json", bytes.NewBufferString(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST /v1/traces: %s", resp.Status)
		}
	}
	post("first")
	host, port, _ := strings.Cut(c.Forward, ":")
	p, _ := strconv.Atoi(port)
	fl, err := fluent.New(fluent.Config{FluentHost: host, FluentPort: p, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	if err := fl.Post("vigil.test", map[string]any{"message": "hello", "pid": 7}); err != nil {
		t.Fatal(err)
	}

	spans := c.WaitSpans(t, 10*time.Second, func(s []Span) bool { return len(s) >= 1 })
	got := spans[0]
	if got.Name != "first" || got.Service != "harness" || got.TraceID != "5b8efff798038103d269b633813fc60c" || got.Attrs["n"] != int64(42) || got.StatusCode != 2 {
		t.Errorf("span = %v (status %d)", got, got.StatusCode)
	}
	logs := c.WaitLogs(t, 10*time.Second, func(l []LogRecord) bool { return len(l) >= 1 })
	if logs[0].Body != "hello" || logs[0].Attrs["fluent.tag"] != "vigil.test" || logs[0].Attrs["pid"] != int64(7) {
		t.Errorf("log record body=%v attrs=%v", logs[0].Body, logs[0].Attrs)
	}

	c.Stop(t)
	c.Restart(t)
	post("second")
	c.WaitSpans(t, 10*time.Second, func(s []Span) bool { return len(s) >= 2 && s[len(s)-1].Name == "second" })
}

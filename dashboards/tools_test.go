package dashboards

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/test/testenv"
)

// promServer is a real Prometheus started by the test.
type promServer struct {
	base string
}

// startPrometheus runs Prometheus on a loopback port with a temp storage dir,
// scraping targets (host:port, may be empty) every second as job "vigil".
func startPrometheus(t *testing.T, targets ...string) *promServer {
	t.Helper()
	bin := testenv.RequireTool(t, "prometheus", "prometheus")
	dir := t.TempDir()
	quoted := make([]string, len(targets))
	for i, tg := range targets {
		quoted[i] = fmt.Sprintf("%q", tg)
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
scrape_configs:
  - job_name: vigil
    static_configs:
      - targets: [%s]
`, strings.Join(quoted, ", "))
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := testenv.FreeAddr(t)
	cmd := exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn",
	)
	testenv.StartProcess(t, "prometheus", cmd)
	p := &promServer{base: "http://" + addr}
	testenv.WaitHTTP(t, p.base+"/-/ready", 30*time.Second)
	return p
}

// promResult is the part of a Prometheus API answer the tests read.
type promResult struct {
	Status    string   `json:"status"`
	ErrorType string   `json:"errorType"`
	Error     string   `json:"error"`
	Warnings  []string `json:"warnings"`
	Data      struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  []any             `json:"value"`
			Values [][]any           `json:"values"`
		} `json:"result"`
	} `json:"data"`
}

// queryRange runs expr over [end-span, end] with the given step.
func (p *promServer) queryRange(ctx context.Context, expr string, end time.Time, span, step time.Duration) (promResult, error) {
	form := url.Values{
		"query": {expr},
		"start": {fmt.Sprintf("%.3f", float64(end.Add(-span).UnixMilli())/1000)},
		"end":   {fmt.Sprintf("%.3f", float64(end.UnixMilli())/1000)},
		"step":  {step.String()},
	}
	return p.call(ctx, "/api/v1/query_range", form)
}

// query runs an instant query at now.
func (p *promServer) query(ctx context.Context, expr string) (promResult, error) {
	return p.call(ctx, "/api/v1/query", url.Values{"query": {expr}})
}

func (p *promServer) call(ctx context.Context, path string, form url.Values) (promResult, error) {
	var res promResult
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.base+path, strings.NewReader(form.Encode()))
	if err != nil {
		return res, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return res, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return res, err
	}
	if err := json.Unmarshal(body, &res); err != nil {
		return res, fmt.Errorf("HTTP %d: %s", resp.StatusCode, body)
	}
	if res.Status != "success" {
		return res, fmt.Errorf("HTTP %d: %s: %s", resp.StatusCode, res.ErrorType, res.Error)
	}
	return res, nil
}

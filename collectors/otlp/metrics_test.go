package otlp

import (
	"bytes"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"
)

func TestMetrics(t *testing.T) {
	clk := &clock{t: time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)}
	r, err := NewReceiver(Options{Window: 10 * time.Second, Step: time.Second, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	pb, _ := proto.Marshal(export("cart", 20, 5))
	post(t, srv.URL, "application/x-protobuf", bytes.Clone(pb), false)
	clk.add(10 * time.Second)
	want := `
# HELP vigil_service_error_ratio Share of the service's requests that failed over the RED window.
# TYPE vigil_service_error_ratio gauge
vigil_service_error_ratio{container="app",namespace="shop",pod="cart-1",service="cart"} 0.25
# HELP vigil_service_requests_per_second Requests per second of the service over the RED window (from received OTLP spans).
# TYPE vigil_service_requests_per_second gauge
vigil_service_requests_per_second{container="app",namespace="shop",pod="cart-1",service="cart"} 2
`
	if err := testutil.CollectAndCompare(r, strings.NewReader(want), "vigil_service_error_ratio", "vigil_service_requests_per_second"); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.CollectAndLint(r); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

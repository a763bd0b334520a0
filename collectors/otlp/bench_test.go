package otlp

import (
	"testing"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// BenchmarkObserve decodes a protobuf request of 300 spans (100 requests)
// and adds it to the RED window.
func BenchmarkObserve(b *testing.B) {
	pb, _ := proto.Marshal(export("cart", 100, 10))
	r, err := NewReceiver(Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(pb)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		var msg collectortrace.ExportTraceServiceRequest
		if err := decode(contentProtobuf, pb, &msg); err != nil {
			b.Fatal(err)
		}
		r.observe(&msg)
	}
	b.ReportMetric(float64(b.N*300)/b.Elapsed().Seconds(), "spans/s")
}

package telemetry

import (
	"net"
	"testing"
	"time"
)

// BenchmarkPostDeadPipeline is the cost of Post when the endpoint is down
// and the buffer is full: the path a dead pipeline puts every caller on.
func BenchmarkPostDeadPipeline(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there any more
	f, err := NewForwarder(ForwarderConfig{Address: addr, BufferRecords: 16, RetryWait: time.Second, Timeout: 100 * time.Millisecond}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	rec := map[string]any{"message": "java.lang.OutOfMemoryError: Java heap space", "pod": "cart-1"}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		f.Post(KindLog, time.Time{}, rec)
	}
}

package podlogs

import (
	"context"
	"os"
	"strings"
	"testing"
)

// BenchmarkTail reads 100k CRI lines (a tenth of them split in two
// partial lines) against two patterns.
func BenchmarkTail(b *testing.B) {
	root := b.TempDir()
	t := &testing.T{}
	p := logFile(t, root, "ns", "pod", "c", 0)
	var sb strings.Builder
	for i := range 100_000 {
		split := 0
		if i%10 == 0 {
			split = 40
		}
		sb.WriteString(cri("stdout", split, "2026-11-25 INFO handled request /api/v1/cart/items id=123456 in 12ms status=200"))
	}
	if err := os.WriteFile(p, []byte(sb.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(sb.Len()))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		tl, err := NewTailer(Options{Root: root, Patterns: memPatterns})
		if err != nil {
			b.Fatal(err)
		}
		if err := tl.Poll(context.Background()); err != nil {
			b.Fatal(err)
		}
		if tl.Stats().Lines != 100_000 {
			b.Fatalf("lines %d", tl.Stats().Lines)
		}
		tl.Close()
	}
	b.ReportMetric(float64(b.N)*100_000/b.Elapsed().Seconds(), "lines/s")
}

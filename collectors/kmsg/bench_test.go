package kmsg

import (
	"testing"
)

// BenchmarkReport parses and assembles the records of one real OOM report.
func BenchmarkReport(b *testing.B) {
	lines := fixtureLinesF(&testing.F{}, "v1-6.18-memcg.kmsg")
	raw := make([][]byte, len(lines))
	for i, l := range lines {
		raw[i] = []byte(l)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		a := assembler{bootTime: testBoot}
		for _, l := range raw {
			r, err := parseRecord(l)
			if err != nil {
				b.Fatal(err)
			}
			a.add(r)
		}
	}
	b.ReportMetric(float64(b.N*len(raw))/b.Elapsed().Seconds(), "records/s")
}

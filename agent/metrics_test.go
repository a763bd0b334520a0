package agent

import (
	"bytes"
	stdgzip "compress/gzip"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/vigil-agent/vigil/collectors"
)

// fixedSource serves one snapshot, for exercising the exporters.
type fixedSource struct{ snap *collectors.Snapshot }

func (f fixedSource) Acquire() (*collectors.Snapshot, func()) { return f.snap, func() {} }

// testSnapshot builds a snapshot of n cgroups with distinct values, plus
// label values that need escaping and limits that are unlimited.
func testSnapshot(n int) *collectors.Snapshot {
	s := &collectors.Snapshot{Seq: 7, Hierarchy: collectors.Hierarchy{Mode: "hybrid", Version: 1}}
	s.Node.MemTotalBytes = 24 << 30
	s.Node.MemAvailableBytes = 20 << 30
	s.Node.UsedRatio = 1 - 20.0/24
	s.Node.VMStat.OOMKill = 3
	s.Node.MemoryPressure = collectors.Pressure{Present: true, Some: collectors.PSIRecord{Avg10: 1.5, Total: 2500000}}
	for i := 0; i < n; i++ {
		c := collectors.CgroupSample{
			Path: fmt.Sprintf("/kubepods/burstable/pod%08d/%064x", i, i),
			Identity: collectors.Identity{Kind: "container", PodUID: fmt.Sprintf("%08d-0000-0000-0000-000000000000", i),
				ContainerID: fmt.Sprintf("%064x", i), QoS: "burstable"},
		}
		if i%4 != 3 {
			// Named by the Kubernetes enricher; every fourth is unknown to
			// the API server and keeps empty names.
			c.Identity.Namespace, c.Identity.Pod, c.Identity.Container = fmt.Sprintf("team-%d", i%5), fmt.Sprintf("web-%d", i), "app"
		}
		c.Memory.UsageBytes = uint64(100<<20 + i)
		c.Memory.MaxBytes = collectors.Bytes(256 << 20)
		c.Memory.EffectiveLimitBytes = collectors.Bytes(256 << 20)
		c.Memory.HighBytes = collectors.Unlimited
		c.Memory.SoftLimitBytes = collectors.Unlimited
		c.Memory.SwapMaxBytes = collectors.Unlimited
		c.Memory.MemswLimitBytes = collectors.Unlimited
		c.Stat.InactiveFile = uint64(10<<20 + i)
		c.Stat.Pgfault = uint64(1000 * i)
		c.Events.OOMKill = uint64(i % 3)
		c.Derived.WorkingSetBytes = 90 << 20
		c.Derived.HeadroomBytes = collectors.Bytes(166 << 20)
		c.Derived.UsageRatio = 90.0 / 256
		c.Derived.GrowthBytesPerSecond = 1234.5
		c.Derived.SecondsToLimit = collectors.Float(math.Inf(1))
		c.Pressure = collectors.Pressure{Present: true, Some: collectors.PSIRecord{Avg10: 0.25, Total: 123456}}
		s.Cgroups = append(s.Cgroups, c)
	}
	if n > 1 {
		s.Cgroups[1].Path = "/system.slice/we\"ird\\name\nunit.service"
		s.Cgroups[1].Identity = collectors.Identity{Kind: "unit", Unit: "we\"ird.service"}
	}
	return s
}

// parseText parses Prometheus text output into families by name.
func parseText(t testing.TB, b []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("parsing metrics: %v\n%s", err, b)
	}
	return mfs
}

// series flattens families into "name{sorted labels}" -> value.
func series(mfs map[string]*dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	for name, mf := range mfs {
		for _, m := range mf.Metric {
			var labels []string
			for _, l := range m.Label {
				if l.GetValue() != "" {
					labels = append(labels, l.GetName()+"="+l.GetValue())
				}
			}
			sort.Strings(labels)
			var v float64
			switch {
			case m.Gauge != nil:
				v = m.Gauge.GetValue()
			case m.Counter != nil:
				v = m.Counter.GetValue()
			}
			out[name+"{"+strings.Join(labels, ",")+"}"] = v
		}
	}
	return out
}

func gatherText(t testing.TB, c prometheus.Collector) []byte {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&buf, mf); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// TestFastPathMatchesCollector checks that the text fast path exports
// exactly what the const-metric collector exports: same families, types,
// help, label sets and values.
func TestFastPathMatchesCollector(t *testing.T) {
	snap := testSnapshot(5)
	want := parseText(t, gatherText(t, newSnapshotCollector(fixedSource{snap}, true)))

	var tw cgroupTextWriter
	tw.appendCgroupFamilies(snap)
	fast := append(gatherText(t, newSnapshotCollector(fixedSource{snap}, false)), tw.buf...)
	got := parseText(t, fast)

	if len(got) != len(want) {
		t.Errorf("fast path has %d families, collector %d", len(got), len(want))
	}
	for name, w := range want {
		g, ok := got[name]
		if !ok {
			t.Errorf("fast path lacks family %s", name)
			continue
		}
		if g.GetType() != w.GetType() || g.GetHelp() != w.GetHelp() {
			t.Errorf("%s: type/help %v %q, want %v %q", name, g.GetType(), g.GetHelp(), w.GetType(), w.GetHelp())
		}
	}
	gs, ws := series(got), series(want)
	for k, wv := range ws {
		gv, ok := gs[k]
		if !ok {
			t.Errorf("fast path lacks series %s", k)
			continue
		}
		if gv != wv && !(math.IsNaN(gv) && math.IsNaN(wv)) {
			t.Errorf("%s = %v, want %v", k, gv, wv)
		}
	}
	if len(gs) != len(ws) {
		t.Errorf("fast path has %d series, collector %d", len(gs), len(ws))
	}
}

// TestExportsEverySignal checks the families against the signal tables:
// every signal with a Metric is exported with its type, no other, except the
// families of the other cgroup version (constants there).
func TestExportsEverySignal(t *testing.T) {
	for _, version := range []int{2, 1} {
		snap := testSnapshot(2)
		snap.Hierarchy.Version = version
		var tw cgroupTextWriter
		tw.appendCgroupFamilies(snap)
		mfs := parseText(t, append(gatherText(t, newSnapshotCollector(fixedSource{snap}, false)), tw.buf...))
		for _, s := range collectors.CgroupSignals {
			_, got := mfs[s.Metric]
			if want := s.Version == 0 || s.Version == version; s.Metric != "" && got != want {
				t.Errorf("cgroup v%d: family %s exported %v, want %v (signal of v%d)", version, s.Metric, got, want, s.Version)
			}
		}
	}
	snap := testSnapshot(2)
	snap.Hierarchy.Version = 0 // unknown: every family
	var tw cgroupTextWriter
	tw.appendCgroupFamilies(snap)
	mfs := parseText(t, append(gatherText(t, newSnapshotCollector(fixedSource{snap}, false)), tw.buf...))
	want := map[string]dto.MetricType{}
	for _, s := range collectors.CgroupSignals {
		if s.Metric != "" {
			want[s.Metric] = typeOf(s.Counter)
		}
	}
	for _, s := range collectors.NodeSignals {
		if s.Metric != "" {
			want[s.Metric] = typeOf(s.Counter)
		}
	}
	for name, typ := range want {
		mf, ok := mfs[name]
		if !ok {
			t.Errorf("metric %s not exported", name)
			continue
		}
		if mf.GetType() != typ {
			t.Errorf("metric %s has type %v, want %v", name, mf.GetType(), typ)
		}
	}
	for name := range mfs {
		if _, ok := want[name]; !ok {
			t.Errorf("metric %s exported but not in the signal tables", name)
		}
	}
	// A cgroup series carries its identity labels, escaped.
	ws := mfs["vigil_cgroup_memory_working_set_bytes"]
	if got := len(ws.Metric); got != 2 {
		t.Fatalf("working set series = %d, want 2", got)
	}
	labels := map[string]string{}
	for _, l := range ws.Metric[1].Label {
		labels[l.GetName()] = l.GetValue()
	}
	if labels["cgroup"] != snap.Cgroups[1].Path || labels["unit"] != "we\"ird.service" {
		t.Errorf("labels = %v, want cgroup %q unit %q", labels, snap.Cgroups[1].Path, "we\"ird.service")
	}
	// A container the Kubernetes enricher named carries namespace, pod and
	// container; the unit has them empty.
	labels = map[string]string{}
	for _, l := range ws.Metric[0].Label {
		labels[l.GetName()] = l.GetValue()
	}
	for k, want := range map[string]string{"namespace": "team-0", "pod": "web-0", "container": "app", "pod_uid": snap.Cgroups[0].Identity.PodUID} {
		if labels[k] != want {
			t.Errorf("container series label %s = %q, want %q (labels %v)", k, labels[k], want, labels)
		}
	}
	for _, l := range ws.Metric[1].Label {
		switch l.GetName() {
		case "namespace", "pod", "container":
			if l.GetValue() != "" {
				t.Errorf("unit series label %s = %q, want empty", l.GetName(), l.GetValue())
			}
		}
	}
}

func typeOf(counter bool) dto.MetricType {
	if counter {
		return dto.MetricType_COUNTER
	}
	return dto.MetricType_GAUGE
}

func TestAppendLabelValueRepairsInvalidUTF8(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/plain", "/plain"},
		{`a"b`, `a\"b`},
		{`a\b`, `a\\b`},
		{"a\nb", `a\nb`},
		{"bad\xffbyte", "bad\uFFFDbyte"},
	}
	for _, tt := range tests {
		if got := string(appendLabelValue(nil, tt.in)); got != tt.want {
			t.Errorf("appendLabelValue(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestAppendFloat(t *testing.T) {
	tests := []struct {
		in   float64
		want string
	}{
		{0, "0"}, {1, "1"}, {1048576, "1048576"}, {0.25, "0.25"}, {-3, "-3"},
		{math.Inf(1), "+Inf"}, {math.Inf(-1), "-Inf"}, {math.NaN(), "NaN"},
		{1 << 60, "1.152921504606847e+18"},
	}
	for _, tt := range tests {
		if got := string(appendFloat(nil, tt.in)); got != tt.want {
			t.Errorf("appendFloat(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// BenchmarkScrape compares the two ways of exporting the cgroup families
// of a 1000-cgroup snapshot (~40 series each): const metrics through the
// registry and text encoder, and the direct text writer /metrics uses.
func BenchmarkScrape(b *testing.B) {
	for _, n := range []int{100, 1000} {
		snap := testSnapshot(n)
		b.Run(fmt.Sprintf("constmetrics/cgroups=%d", n), func(b *testing.B) {
			reg := prometheus.NewRegistry()
			reg.MustRegister(newSnapshotCollector(fixedSource{snap}, true))
			var buf bytes.Buffer
			b.ReportAllocs()
			for b.Loop() {
				buf.Reset()
				mfs, err := reg.Gather()
				if err != nil {
					b.Fatal(err)
				}
				for _, mf := range mfs {
					expfmt.MetricFamilyToText(&buf, mf)
				}
			}
			b.ReportMetric(float64(buf.Len()), "bytes/scrape")
		})
		b.Run(fmt.Sprintf("fastpath/cgroups=%d", n), func(b *testing.B) {
			var tw cgroupTextWriter
			b.ReportAllocs()
			for b.Loop() {
				tw.buf = tw.buf[:0]
				tw.appendCgroupFamilies(snap)
			}
			b.ReportMetric(float64(len(tw.buf)), "bytes/scrape")
		})
		b.Run(fmt.Sprintf("fastpath+gzip/cgroups=%d", n), func(b *testing.B) {
			var tw cgroupTextWriter
			var out bytes.Buffer
			gz, _ := gzip.NewWriterLevel(&out, gzip.BestSpeed)
			b.ReportAllocs()
			for b.Loop() {
				tw.buf = tw.buf[:0]
				tw.appendCgroupFamilies(snap)
				out.Reset()
				gz.Reset(&out)
				gz.Write(tw.buf)
				gz.Close()
			}
			b.ReportMetric(float64(out.Len()), "gzip_bytes/scrape")
			b.ReportMetric(float64(cap(tw.buf)+out.Cap()), "held_bytes")
		})
		// What the /metrics handler does: the text goes through gzip in
		// chunks, only the compressed body is held.
		var out, stdOut bytes.Buffer
		gz, _ := gzip.NewWriterLevel(&out, gzip.BestSpeed)
		b.Run(fmt.Sprintf("fastpath+gzip/streamed/cgroups=%d", n), func(b *testing.B) { benchStreamed(b, snap, gz, &out) })
		// The same with the standard library's gzip (what /metrics used).
		std, _ := stdgzip.NewWriterLevel(&stdOut, stdgzip.BestSpeed)
		b.Run(fmt.Sprintf("fastpath+gzip/streamed/stdlib/cgroups=%d", n), func(b *testing.B) { benchStreamed(b, snap, std, &stdOut) })
	}
}

// resetWriter is a compressor that can start over on another writer (both
// gzip packages' Writer).
type resetWriter interface {
	io.WriteCloser
	Reset(io.Writer)
}

// benchStreamed is what the /metrics handler does: the text goes through
// gz in chunks into out; only the compressed body is held.
func benchStreamed(b *testing.B, snap *collectors.Snapshot, gz resetWriter, out *bytes.Buffer) {
	var tw cgroupTextWriter
	b.ReportAllocs()
	for b.Loop() {
		tw.buf = tw.buf[:0]
		out.Reset()
		gz.Reset(out)
		if err := tw.writeCgroupFamilies(snap, gz); err != nil {
			b.Fatal(err)
		}
		gz.Close()
	}
	b.ReportMetric(float64(out.Len()), "gzip_bytes/scrape")
	b.ReportMetric(float64(cap(tw.buf)+out.Cap()), "held_bytes")
}

// chunkRecorder keeps what is written to it and the largest single write.
type chunkRecorder struct {
	bytes.Buffer
	largest int
}

func (c *chunkRecorder) Write(p []byte) (int, error) {
	c.largest = max(c.largest, len(p))
	return c.Buffer.Write(p)
}

// TestStreamedFamiliesMatchBuffered checks that writing the cgroup families
// in chunks gives the same text as rendering them whole, in chunks of about
// textChunk bytes.
func TestStreamedFamiliesMatchBuffered(t *testing.T) {
	for _, n := range []int{0, 1, 5, 300} {
		t.Run(fmt.Sprintf("cgroups=%d", n), func(t *testing.T) {
			snap := testSnapshot(n)
			var whole cgroupTextWriter
			whole.appendCgroupFamilies(snap)
			var streamed cgroupTextWriter
			var out chunkRecorder
			if err := streamed.writeCgroupFamilies(snap, &out); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), whole.buf) {
				t.Errorf("streamed text (%d bytes) differs from the whole text (%d bytes)", out.Len(), len(whole.buf))
			}
			if len(streamed.buf) != 0 {
				t.Errorf("%d bytes left in the buffer after streaming, want 0", len(streamed.buf))
			}
			if limit := textChunk + 4096; out.largest > limit {
				t.Errorf("largest write %d bytes, want <= %d", out.largest, limit)
			}
		})
	}
}

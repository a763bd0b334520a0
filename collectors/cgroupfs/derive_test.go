package cgroupfs

import (
	"log/slog"
	"math"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/collectors"
)

const sec = int64(time.Second)

func TestRingSlope(t *testing.T) {
	tests := []struct {
		name    string
		samples [][2]int64 // unix ns, bytes
		since   int64
		want    float64
	}{
		{name: "empty", want: 0},
		{name: "one sample", samples: [][2]int64{{10 * sec, 100}}, want: 0},
		{name: "flat", samples: [][2]int64{{1 * sec, 5}, {2 * sec, 5}, {3 * sec, 5}}, want: 0},
		{name: "linear 1 MiB/s", samples: [][2]int64{{1 * sec, 1 << 20}, {2 * sec, 2 << 20}, {3 * sec, 3 << 20}, {4 * sec, 4 << 20}}, want: 1 << 20},
		{name: "shrinking", samples: [][2]int64{{1 * sec, 4000}, {2 * sec, 3000}, {3 * sec, 2000}}, want: -1000},
		{name: "noisy fit", samples: [][2]int64{{0, 0}, {1 * sec, 10}, {2 * sec, 30}, {3 * sec, 30}}, want: 11},
		{name: "window keeps the recent slope", since: 10 * sec,
			samples: [][2]int64{{1 * sec, 1000000}, {10 * sec, 100}, {11 * sec, 200}, {12 * sec, 300}}, want: 100},
		{name: "uneven spacing", samples: [][2]int64{{0, 0}, {500 * int64(time.Millisecond), 50}, {3 * sec, 300}}, want: 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r ring
			for _, s := range tt.samples {
				r.add(s[0], uint64(s[1]), 0)
			}
			if got := r.slope(tt.since); math.Abs(got-tt.want) > 1e-6*math.Max(1, math.Abs(tt.want)) {
				t.Errorf("slope = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRingSpacing(t *testing.T) {
	var r ring
	spacing := 2 * sec
	// A burst of off-cycle samples between ticks replaces the newest sample
	// instead of pushing the window's history out.
	r.add(0, 0, spacing)
	r.add(2*sec, 200, spacing)
	for i := int64(1); i <= 100; i++ {
		r.add(2*sec+i*int64(time.Millisecond), 200+uint64(i), spacing)
	}
	if r.n != 3 {
		t.Fatalf("ring holds %d samples after a burst, want 3", r.n)
	}
	if got := r.t[r.at(2)]; got != 0 {
		t.Errorf("oldest sample at %d, want 0", got)
	}
	// The clock going back is ignored.
	r.add(sec, 5, spacing)
	if r.n != 3 || r.t[r.at(0)] != 2*sec+100*int64(time.Millisecond) {
		t.Errorf("sample from the past was stored: n=%d newest=%d", r.n, r.t[r.at(0)])
	}
	// The ring wraps without growing.
	for i := range int64(1000) {
		r.add(10*sec+i*3*sec, uint64(i), spacing)
	}
	if r.n != ringSize {
		t.Errorf("n = %d, want %d", r.n, ringSize)
	}
	if got := r.slope(0); math.Abs(got-1.0/3) > 1e-9 {
		t.Errorf("slope after wrapping = %v, want 1/3", got)
	}
}

func TestRefaultRate(t *testing.T) {
	var r refaultRate
	steps := []struct {
		t     int64
		count uint64
		want  float64
	}{
		{1 * sec, 100, 0},                           // first sample: no rate yet
		{2 * sec, 300, 200},                         // 200 in 1 s
		{2*sec + int64(time.Millisecond), 900, 200}, // too close: previous rate kept
		{4 * sec, 700, 200},                         // 400 in 2 s since the 2 s sample
		{5 * sec, 10, 0},                            // counter went back: 0, new base
		{6 * sec, 20, 10},
	}
	for i, s := range steps {
		if got := r.update(s.t, s.count); got != s.want {
			t.Errorf("step %d: rate %v, want %v", i, got, s.want)
		}
	}
}

func TestDerive(t *testing.T) {
	inf := collectors.Float(math.Inf(1))
	tests := []struct {
		name        string
		ver         version
		parentLimit uint64
		parentRoom  uint64 // what the parent may still grow by; 0: unlimited
		sample      collectors.CgroupSample
		prevWS      uint64 // working set one second before
		want        collectors.Derived
		wantLimit   collectors.Bytes
	}{
		{
			name: "v2 unlimited", ver: v2{}, parentLimit: collectors.Unlimited,
			sample: collectors.CgroupSample{
				Memory: collectors.CgroupMemory{UsageBytes: 1000, MaxBytes: collectors.Unlimited, HighBytes: collectors.Unlimited},
				Stat:   collectors.MemoryStat{InactiveFile: 300, File: 500, Shmem: 50, FileDirty: 20, FileWriteback: 10},
			},
			prevWS:    700,
			wantLimit: collectors.Unlimited,
			want:      collectors.Derived{WorkingSetBytes: 700, HeadroomBytes: collectors.Unlimited, SecondsToLimit: inf, ReclaimableBytes: 420},
		},
		{
			name: "v2 memory.high is tighter than max and the parent", ver: v2{}, parentLimit: 5000,
			sample: collectors.CgroupSample{
				Memory: collectors.CgroupMemory{UsageBytes: 1200, MaxBytes: 4000, HighBytes: 2000},
				Stat:   collectors.MemoryStat{InactiveFile: 200},
			},
			prevWS:    900,
			wantLimit: 2000,
			want: collectors.Derived{WorkingSetBytes: 1000, HeadroomBytes: 1000, GrowthBytesPerSecond: 100,
				SecondsToLimit: 10, UsageRatio: 0.5},
		},
		{
			name: "v2 parent limit wins", ver: v2{}, parentLimit: 1500,
			sample: collectors.CgroupSample{
				Memory: collectors.CgroupMemory{UsageBytes: 1000, MaxBytes: 4000, HighBytes: collectors.Unlimited},
			},
			prevWS:    1000,
			wantLimit: 1500,
			want:      collectors.Derived{WorkingSetBytes: 1000, HeadroomBytes: 500, SecondsToLimit: inf, UsageRatio: 1000.0 / 1500},
		},
		{
			name: "v1 hierarchical limit", ver: v1{}, parentLimit: collectors.Unlimited,
			sample: collectors.CgroupSample{
				Memory: collectors.CgroupMemory{UsageBytes: 3000, MaxBytes: collectors.Unlimited},
				Stat:   collectors.MemoryStat{HierarchicalMemoryLimit: 2000, InactiveFile: 500, File: 100, Shmem: 200},
			},
			prevWS:    2500,
			wantLimit: 2000,
			want:      collectors.Derived{WorkingSetBytes: 2500, HeadroomBytes: 0, SecondsToLimit: inf, UsageRatio: 1.25},
		},
		{
			name: "over the limit and growing: no time left", ver: v1{}, parentLimit: collectors.Unlimited,
			sample: collectors.CgroupSample{
				Memory: collectors.CgroupMemory{UsageBytes: 3000, MaxBytes: 2000},
			},
			prevWS:    2000,
			wantLimit: 2000,
			want:      collectors.Derived{WorkingSetBytes: 3000, HeadroomBytes: 0, GrowthBytesPerSecond: 1000, SecondsToLimit: 0, UsageRatio: 1.5},
		},
		{
			name: "siblings under a limited parent leave less room than the parent's limit", ver: v2{}, parentLimit: 4000, parentRoom: 500,
			sample: collectors.CgroupSample{
				Memory: collectors.CgroupMemory{UsageBytes: 1000, MaxBytes: collectors.Unlimited, HighBytes: collectors.Unlimited},
			},
			prevWS:    900,
			wantLimit: 1500,
			want: collectors.Derived{WorkingSetBytes: 1000, HeadroomBytes: 500, GrowthBytesPerSecond: 100, SecondsToLimit: 5,
				UsageRatio: 1000.0 / 1500},
		},
		{
			name: "its own limit is tighter than the room its parent leaves", ver: v2{}, parentLimit: 4000, parentRoom: 3000,
			sample: collectors.CgroupSample{
				Memory: collectors.CgroupMemory{UsageBytes: 1000, MaxBytes: 1200, HighBytes: collectors.Unlimited},
			},
			prevWS:    1000,
			wantLimit: 1200,
			want:      collectors.Derived{WorkingSetBytes: 1000, HeadroomBytes: 200, SecondsToLimit: inf, UsageRatio: 1000.0 / 1200},
		},
		{
			name: "inactive file above usage clamps", ver: v2{}, parentLimit: collectors.Unlimited,
			sample: collectors.CgroupSample{
				Memory: collectors.CgroupMemory{UsageBytes: 100, MaxBytes: 1000, HighBytes: collectors.Unlimited},
				Stat:   collectors.MemoryStat{InactiveFile: 200},
			},
			wantLimit: 1000,
			want:      collectors.Derived{WorkingSetBytes: 0, HeadroomBytes: 1000, SecondsToLimit: inf},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Collector{ver: tt.ver, window: int64(30 * time.Second), spacing: 0, log: slog.Default()}
			room := tt.parentRoom
			if room == 0 {
				room = collectors.Unlimited
			}
			parent := &cgroup{capLimit: tt.parentLimit, room: room}
			cg := &cgroup{parent: parent}
			now := time.Unix(1000, 0)
			cg.growth.add(now.Add(-time.Second).UnixNano(), tt.prevWS, 0)
			s := tt.sample
			c.derive(cg, &s, now)
			if s.Memory.EffectiveLimitBytes != tt.wantLimit {
				t.Errorf("effective limit %d, want %d", s.Memory.EffectiveLimitBytes, tt.wantLimit)
			}
			if cg.effLimit != uint64(tt.wantLimit) {
				t.Errorf("effective limit kept for children %d, want %d", cg.effLimit, tt.wantLimit)
			}
			if s.Derived != tt.want {
				t.Errorf("derived\n got %+v\nwant %+v", s.Derived, tt.want)
			}
		})
	}
}

package node

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/collectors"
)

func TestParseMeminfo(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    memInfo
		wantErr bool
	}{
		{
			name: "kB converted, unknown keys ignored",
			in:   "MemTotal:       1000 kB\nMemFree:  10 kB\nMemAvailable:  600 kB\nHugePages_Total:       0\nSomethingNew: 5 kB\n",
			want: memInfo{MemTotal: 1024000, MemFree: 10240, MemAvailable: 614400, haveMemTotal: true, haveMemFree: true, haveMemAvailable: true},
		},
		{
			name: "MemAvailable estimated before 3.14",
			in:   "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 10 kB\nCached: 200 kB\n",
			want: memInfo{MemTotal: 1024000, MemFree: 102400, Buffers: 10240, Cached: 204800, MemAvailable: 317440,
				haveMemTotal: true, haveMemFree: true, haveBuffers: true, haveCached: true},
		},
		{name: "no MemTotal", in: "MemFree: 1 kB\n", wantErr: true},
		{name: "bad number", in: "MemTotal: 12x kB\n", wantErr: true},
		{name: "no colon", in: "MemTotal 12 kB\n", wantErr: true},
		{name: "overflow", in: "MemTotal: 18446744073709551615 kB\n", wantErr: true},
		{name: "empty", in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMeminfo([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseVMStat(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    collectors.VMStat
		wantErr bool
	}{
		{
			name: "split counters summed, throttle not",
			in: "pgscan_kswapd 10\npgscan_direct 5\npgscan_direct_throttle 99\npgsteal_kswapd 8\npgsteal_direct 4\n" +
				"workingset_refault_anon 1\nworkingset_refault_file 2\nworkingset_activate_anon 3\nworkingset_activate_file 4\n" +
				"allocstall_dma 1\nallocstall_normal 2\nallocstall_movable 3\noom_kill 7\npgmajfault 9\n",
			want: collectors.VMStat{PgscanKswapd: 10, PgscanDirect: 5, PgstealKswapd: 8, PgstealDirect: 4,
				WorkingsetRefaultAnon: 1, WorkingsetRefaultFile: 2, WorkingsetActivate: 7, AllocStall: 6, OOMKill: 7, Pgmajfault: 9},
		},
		{
			name: "pre-4.8 zone split and pre-5.9 single refault",
			in:   "pgscan_kswapd_dma 1\npgscan_kswapd_normal 2\npgscan_direct_normal 3\npgsteal_kswapd_normal 4\nworkingset_refault 5\nworkingset_activate 6\nallocstall 7\n",
			want: collectors.VMStat{PgscanKswapd: 3, PgscanDirect: 3, PgstealKswapd: 4, WorkingsetRefaultFile: 5, WorkingsetActivate: 6, AllocStall: 7},
		},
		{name: "bad number", in: "oom_kill -1\n", wantErr: true},
		{name: "malformed", in: "oom_kill\n", wantErr: true},
		{name: "nothing known", in: "nr_free_pages 10\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseVMStat([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParsersDoNotAllocate(t *testing.T) {
	meminfo, _ := os.ReadFile("testdata/proc/meminfo")
	vmstat, _ := os.ReadFile("testdata/proc/vmstat")
	if n := testing.AllocsPerRun(100, func() { _, _ = parseMeminfo(meminfo) }); n != 0 {
		t.Errorf("parseMeminfo allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = parseVMStat(vmstat) }); n != 0 {
		t.Errorf("parseVMStat allocates %v times", n)
	}
}

func FuzzParseMeminfo(f *testing.F) {
	for _, p := range []string{"testdata/proc/meminfo", "testdata/proc-6.1/meminfo"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("MemTotal: 1 kB\nMemAvailable: 5 kB\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseMeminfo(b)
		if err != nil {
			return
		}
		if !m.haveMemTotal {
			t.Fatalf("success without MemTotal on %q", b)
		}
		if !m.haveMemAvailable && m.MemAvailable > m.MemTotal {
			t.Fatalf("estimated MemAvailable %d > MemTotal %d", m.MemAvailable, m.MemTotal)
		}
	})
}

func FuzzParseVMStat(f *testing.F) {
	for _, p := range []string{"testdata/proc/vmstat", "testdata/proc-6.1/vmstat"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("allocstall_normal 1\nallocstall_movable 2\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := parseVMStat(b)
		if err != nil {
			return
		}
		// Every parsed counter must have come from a line of the input.
		if s.OOMKill != 0 && !strings.Contains(string(b), "oom_kill ") {
			t.Fatalf("oom_kill %d without an oom_kill line", s.OOMKill)
		}
	})
}

func BenchmarkCollect(b *testing.B) {
	c, err := New("/proc")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	var s collectors.NodeSample
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Second)
		if err := c.Collect(now, &s); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseVMStat(b *testing.B) {
	vmstat, err := os.ReadFile("testdata/proc/vmstat")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(vmstat)))
	for b.Loop() {
		if _, err := parseVMStat(vmstat); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCollectReadFile is the baseline BenchmarkCollect is measured
// against: the same files and parsers with os.ReadFile on every tick.
func BenchmarkCollectReadFile(b *testing.B) {
	files := []string{"/proc/meminfo", "/proc/vmstat", "/proc/pressure/memory", "/proc/pressure/cpu", "/proc/pressure/io"}
	b.ReportAllocs()
	for b.Loop() {
		for i, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				b.Skip(err)
			}
			switch i {
			case 0:
				_, err = parseMeminfo(data)
			case 1:
				_, err = parseVMStat(data)
			default:
				_, err = collectors.ParsePressure(data)
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}

package cgroupfs

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-agent/vigil/collectors"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

func TestParseLimit(t *testing.T) {
	tests := []struct {
		in      string
		want    uint64
		wantErr bool
	}{
		{"max\n", collectors.Unlimited, false},
		{"max", collectors.Unlimited, false},
		{"268435456\n", 268435456, false},
		{"0\n", 0, false},
		{"9223372036854771712\n", collectors.Unlimited, false}, // v1 page counter max, 4 KiB pages
		{"9223372036854710272\n", collectors.Unlimited, false}, // 64 KiB pages
		{"9223372036853727230\n", 9223372036853727230, false},  // just below the floor: a real number
		{"18446744073709551615\n", collectors.Unlimited, false},
		{"18446744073709551616\n", 0, true},
		{"", 0, true},
		{"\n", 0, true},
		{"-1\n", 0, true},
		{"12 34\n", 0, true},
		{"maximum\n", 0, true},
	}
	for _, tt := range tests {
		t.Run(strings.TrimSpace(tt.in), func(t *testing.T) {
			got, err := parseLimit([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
}

func TestParseMemoryStat(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		version int
		want    collectors.MemoryStat
		wantErr bool
	}{
		{
			name:    "v1 uses the hierarchical totals",
			version: 1,
			in: "cache 100\nrss 200\ninactive_file 7\nhierarchical_memory_limit 268435456\nhierarchical_memsw_limit 9223372036854771712\n" +
				"total_cache 1000\ntotal_rss 2000\ntotal_rss_huge 4\ntotal_shmem 5\ntotal_mapped_file 6\ntotal_dirty 8\ntotal_writeback 9\n" +
				"total_inactive_file 70\ntotal_active_file 71\ntotal_inactive_anon 72\ntotal_active_anon 73\ntotal_unevictable 74\n" +
				"total_swap 11\ntotal_pgfault 12\ntotal_pgmajfault 13\ntotal_workingset_refault_anon 14\ntotal_workingset_refault_file 15\n" +
				"total_workingset_activate_anon 16\ntotal_workingset_activate_file 17\ntotal_workingset_restore_anon 18\n" +
				"total_workingset_restore_file 19\ntotal_workingset_nodereclaim 20\n",
			want: collectors.MemoryStat{
				Anon: 2000, File: 1000, AnonTHP: 4, Shmem: 5, FileMapped: 6, FileDirty: 8, FileWriteback: 9,
				InactiveFile: 70, ActiveFile: 71, InactiveAnon: 72, ActiveAnon: 73, Unevictable: 74, Swap: 11,
				Pgfault: 12, Pgmajfault: 13, WorkingsetRefaultAnon: 14, WorkingsetRefaultFile: 15,
				WorkingsetActivateAnon: 16, WorkingsetActivateFile: 17, WorkingsetRestoreAnon: 18,
				WorkingsetRestoreFile: 19, WorkingsetNodereclaim: 20,
				HierarchicalMemoryLimit: 268435456, HierarchicalMemswLimit: collectors.Unlimited,
			},
		},
		{
			name:    "v1 before 5.9: file refaults only",
			version: 1,
			in:      "total_workingset_refault 5\ntotal_workingset_activate 6\ntotal_workingset_restore 7\n",
			want:    collectors.MemoryStat{WorkingsetRefaultFile: 5, WorkingsetActivateFile: 6, WorkingsetRestoreFile: 7},
		},
		{
			name:    "v2",
			version: 2,
			in: "anon 1\nfile 2\nkernel 99\nkernel_stack 3\npagetables 98\nsock 4\nshmem 5\nfile_mapped 6\nfile_dirty 7\nfile_writeback 8\n" +
				"anon_thp 9\ninactive_anon 10\nactive_anon 11\ninactive_file 12\nactive_file 13\nunevictable 14\nslab_reclaimable 15\n" +
				"slab_unreclaimable 16\nslab 31\nworkingset_refault_anon 17\nworkingset_refault_file 18\nworkingset_activate_anon 19\n" +
				"workingset_activate_file 20\nworkingset_restore_anon 21\nworkingset_restore_file 22\nworkingset_nodereclaim 23\n" +
				"pgscan 24\npgsteal 25\npgfault 26\npgmajfault 27\nthp_fault_alloc 0\n",
			want: collectors.MemoryStat{
				Anon: 1, File: 2, KernelStack: 3, Sock: 4, Shmem: 5, FileMapped: 6, FileDirty: 7, FileWriteback: 8, AnonTHP: 9,
				InactiveAnon: 10, ActiveAnon: 11, InactiveFile: 12, ActiveFile: 13, Unevictable: 14, SlabReclaimable: 15,
				SlabUnreclaimable: 16, Slab: 31, WorkingsetRefaultAnon: 17, WorkingsetRefaultFile: 18, WorkingsetActivateAnon: 19,
				WorkingsetActivateFile: 20, WorkingsetRestoreAnon: 21, WorkingsetRestoreFile: 22, WorkingsetNodereclaim: 23,
				Pgscan: 24, Pgsteal: 25, Pgfault: 26, Pgmajfault: 27,
			},
		},
		{
			name:    "v2 ignores v1 total keys",
			version: 2,
			in:      "anon 1\ntotal_rss 500\n",
			want:    collectors.MemoryStat{Anon: 1},
		},
		{
			name:    "bad value keeps the rest",
			version: 2,
			in:      "anon x\nfile 2\n",
			want:    collectors.MemoryStat{File: 2},
			wantErr: true,
		},
		{
			name:    "line without value",
			version: 2,
			in:      "anon\nfile 2\n",
			want:    collectors.MemoryStat{File: 2},
			wantErr: true,
		},
		{name: "empty", version: 2, in: "", want: collectors.MemoryStat{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := collectors.MemoryStat{Anon: 12345} // parse must reset
			err := parseMemoryStat([]byte(tt.in), &got, tt.version)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseEvents(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    collectors.MemoryEvents
		wantErr bool
	}{
		{"6.x", "low 1\nhigh 2\nmax 3\noom 4\noom_kill 5\noom_group_kill 6\n", collectors.MemoryEvents{Low: 1, High: 2, Max: 3, OOM: 4, OOMKill: 5, OOMGroupKill: 6}, false},
		{"5.4 without oom_group_kill", "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\n", collectors.MemoryEvents{Max: 7, OOM: 1, OOMKill: 1}, false},
		{"unknown keys", "low 1\nsock_throttled 9\n", collectors.MemoryEvents{Low: 1}, false},
		{"bad number", "oom_kill -1\nmax 3\n", collectors.MemoryEvents{Max: 3}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got collectors.MemoryEvents
			err := parseEvents([]byte(tt.in), &got)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseOOMControl(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    collectors.MemoryEvents
		wantErr bool
	}{
		{"killed", "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", collectors.MemoryEvents{OOMKill: 3}, false},
		{"killer disabled, stuck", "oom_kill_disable 1\nunder_oom 1\noom_kill 0\n", collectors.MemoryEvents{OOMKillDisable: 1, UnderOOM: 1}, false},
		{"before 4.13", "oom_kill_disable 0\nunder_oom 0\n", collectors.MemoryEvents{}, false},
		{"empty", "", collectors.MemoryEvents{}, true},
		{"garbage", "hello\n", collectors.MemoryEvents{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got collectors.MemoryEvents
			err := parseOOMControl([]byte(tt.in), &got)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestParsersDoNotAllocate: the sweep calls them on every cgroup every tick.
func TestParsersDoNotAllocate(t *testing.T) {
	stat1 := mustRead(t, "testdata/v1/limited/memory.stat")
	stat2 := mustRead(t, "testdata/v2/limited/memory.stat")
	events := mustRead(t, "testdata/v2/oom/memory.events")
	oom := mustRead(t, "testdata/v1/oom/memory.oom_control")
	maxLimit, v1Max, value := []byte("max\n"), []byte("9223372036854771712\n"), []byte("1234\n")
	var st collectors.MemoryStat
	var ev collectors.MemoryEvents
	allocs := testing.AllocsPerRun(100, func() {
		_ = parseMemoryStat(stat1, &st, 1)
		_ = parseMemoryStat(stat2, &st, 2)
		_ = parseEvents(events, &ev)
		_ = parseOOMControl(oom, &ev)
		_, _ = parseLimit(maxLimit)
		_, _ = parseLimit(v1Max)
		_, _ = parseValue(value)
	})
	if allocs != 0 {
		t.Errorf("parsers allocate %v times per run, want 0", allocs)
	}
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// goldenFixture is what the parsers make of one fixture directory.
type goldenFixture struct {
	Stat    collectors.MemoryStat   `json:"stat"`
	Events  collectors.MemoryEvents `json:"events"`
	Limits  map[string]any          `json:"limits"`
	Values  map[string]uint64       `json:"values"`
	Errors  []string                `json:"errors,omitempty"`
	Version int                     `json:"version"`
}

// TestGoldenFixtures parses every captured file in testdata/v1 and testdata/v2
// and compares with testdata/golden (rewrite with -update).
func TestGoldenFixtures(t *testing.T) {
	for _, version := range []int{1, 2} {
		dirs, err := filepath.Glob(filepath.Join("testdata", "v"+string(rune('0'+version)), "*"))
		if err != nil || len(dirs) == 0 {
			t.Fatalf("no fixtures for v%d: %v", version, err)
		}
		for _, dir := range dirs {
			name := "v" + string(rune('0'+version)) + "-" + filepath.Base(dir)
			t.Run(name, func(t *testing.T) {
				got := parseFixture(t, dir, version)
				b, err := json.MarshalIndent(got, "", "  ")
				if err != nil {
					t.Fatal(err)
				}
				b = append(b, '\n')
				golden := filepath.Join("testdata", "golden", name+".json")
				if *update {
					if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(golden, b, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run with -update to create)", err)
				}
				if !bytes.Equal(b, want) {
					t.Errorf("%s differs from %s:\n%s", dir, golden, b)
				}
			})
		}
	}
}

func parseFixture(t *testing.T, dir string, version int) goldenFixture {
	g := goldenFixture{Limits: map[string]any{}, Values: map[string]uint64{}, Version: version}
	note := func(file string, err error) {
		if err != nil {
			g.Errors = append(g.Errors, file+": "+err.Error())
		}
	}
	files, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b := mustRead(t, filepath.Join(dir, f.Name()))
		switch name := f.Name(); name {
		case "memory.stat":
			note(name, parseMemoryStat(b, &g.Stat, version))
		case "memory.events":
			note(name, parseEvents(b, &g.Events))
		case "memory.oom_control":
			note(name, parseOOMControl(b, &g.Events))
		case "memory.pressure":
			p, err := collectors.ParsePressure(b)
			note(name, err)
			g.Limits[name] = p
		case "memory.max", "memory.high", "memory.swap.max", "memory.low", "memory.min",
			"memory.limit_in_bytes", "memory.soft_limit_in_bytes", "memory.memsw.limit_in_bytes":
			v, err := parseLimit(b)
			note(name, err)
			g.Limits[name] = collectors.Bytes(v)
		default:
			v, err := parseValue(b)
			note(name, err)
			g.Values[name] = v
		}
	}
	return g
}

func FuzzParseMemoryStat(f *testing.F) {
	addSeeds(f, "memory.stat")
	f.Fuzz(func(t *testing.T, b []byte) {
		var st collectors.MemoryStat
		for _, v := range []int{1, 2} {
			err := parseMemoryStat(b, &st, v)
			if len(b) == 0 && err != nil {
				t.Errorf("empty input: %v", err)
			}
		}
	})
}

func FuzzParseEvents(f *testing.F) {
	addSeeds(f, "memory.events")
	f.Fuzz(func(t *testing.T, b []byte) {
		var ev collectors.MemoryEvents
		_ = parseEvents(b, &ev)
		if ev.OOMKillDisable != 0 || ev.UnderOOM != 0 {
			t.Errorf("memory.events set v1 fields: %+v", ev)
		}
	})
}

func FuzzParseOOMControl(f *testing.F) {
	addSeeds(f, "memory.oom_control")
	f.Fuzz(func(t *testing.T, b []byte) {
		var ev collectors.MemoryEvents
		if err := parseOOMControl(b, &ev); err == nil && len(bytes.TrimSpace(b)) == 0 {
			t.Error("empty input accepted")
		}
		if ev.Low != 0 || ev.High != 0 || ev.Max != 0 || ev.OOM != 0 {
			t.Errorf("oom_control set v2 fields: %+v", ev)
		}
	})
}

func FuzzParseLimit(f *testing.F) {
	for _, s := range []string{"max\n", "9223372036854771712\n", "268435456\n", "0", ""} {
		f.Add([]byte(s))
	}
	addSeeds(f, "memory.limit_in_bytes", "memory.max", "memory.high")
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := parseLimit(b)
		if err != nil && v != 0 {
			t.Errorf("error %v with value %d", err, v)
		}
		if err == nil && v >= v1UnlimitedFloor && v != collectors.Unlimited {
			t.Errorf("%q: %d near the page counter max is not Unlimited", b, v)
		}
	})
}

// addSeeds adds every fixture file with one of the names as a fuzz seed.
func addSeeds(f *testing.F, names ...string) {
	for _, name := range names {
		files, _ := filepath.Glob(filepath.Join("testdata", "v*", "*", name))
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
}

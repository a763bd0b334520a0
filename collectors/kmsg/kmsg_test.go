package kmsg

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/test/cgtest"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestMain(m *testing.M) { cgtest.Main(m) }

var testBoot = time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)

// readAll runs a non-following reader over path and returns its events.
func readAll(t *testing.T, path string, opts Options) ([]OOMEvent, *Reader) {
	t.Helper()
	var got []OOMEvent
	opts.Handler = func(evs []OOMEvent) { got = append(got, evs...) }
	if opts.BootID == "" {
		opts.BootID = "test-boot"
	}
	if opts.BootTime.IsZero() {
		opts.BootTime = testBoot
	}
	r, err := NewReader(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	return got, r
}

// TestFixtures checks the key fields of every real report, then the whole
// event against the golden file.
func TestFixtures(t *testing.T) {
	tests := []struct {
		file string
		want []OOMEvent // only the fields compared below
	}{
		{"v1-6.18-memcg.kmsg", []OOMEvent{{
			Seq: 418, StartSeq: 341, Constraint: ConstraintMemcg,
			CgroupPath: "/process_api/bf5bafa857a100623259ac31bb1b18a6/vigil-test-02f4e422",
			OOMMemcg:   "/process_api/bf5bafa857a100623259ac31bb1b18a6/vigil-test-02f4e422",
			PID:        4040, Comm: "cgtest.test", TotalVMKiB: 1327664, AnonRSSKiB: 65024, FileRSSKiB: 2696, PgtablesKiB: 220,
			InvokerComm: "cgtest.test", GFPMask: "0xcc0", MemcgUsageKiB: 65536, MemcgLimitKiB: 65536, MemcgFailcnt: 117,
		}}},
		{"v2-6.1-memcg.kmsg", []OOMEvent{{
			Seq: 309, StartSeq: 275, Constraint: ConstraintMemcg, CgroupPath: "/vigil-test-f0e2f9a3", OOMMemcg: "/vigil-test-f0e2f9a3",
			PID: 123, Comm: "pkg.test", TotalVMKiB: 1328768, AnonRSSKiB: 65048, FileRSSKiB: 2024, PgtablesKiB: 216,
			InvokerComm: "pkg.test", GFPMask: "0xcc0", MemcgUsageKiB: 65536, MemcgLimitKiB: 65536, MemcgFailcnt: 50,
		}}},
		{"v1-5.2-memcg.kmsg", []OOMEvent{{
			Seq: 90046, StartSeq: 90001, Constraint: ConstraintMemcg, CgroupPath: "/leaker", OOMMemcg: "/leaker",
			PID: 23793, Comm: "leaker", TotalVMKiB: 2623712, AnonRSSKiB: 506500, FileRSSKiB: 1268,
			InvokerComm: "leaker", GFPMask: "0x100cca", MemcgUsageKiB: 524288, MemcgLimitKiB: 524288, MemcgFailcnt: 1240247,
		}}},
		{"v1-4.18-el8-memcg.kmsg", []OOMEvent{{
			Seq: 4140, StartSeq: 4101, Constraint: ConstraintMemcg,
			CgroupPath: "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podd63c4bbe_5f18_11ec_bdcd_d094668d7dd6.slice/docker-083afd1a06b8b612ab5d974e12200d7fd1d35be6a44f0e368179399ef6c6e84d.scope",
			OOMMemcg:   "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podd63c4bbe_5f18_11ec_bdcd_d094668d7dd6.slice/docker-083afd1a06b8b612ab5d974e12200d7fd1d35be6a44f0e368179399ef6c6e84d.scope",
			PID:        7093, Comm: "java", TotalVMKiB: 11451920, AnonRSSKiB: 1968776, ShmemRSSKiB: 16356,
			InvokerComm: "java", GFPMask: "0x6200ca", MemcgUsageKiB: 32461120, MemcgLimitKiB: 33554432,
		}}},
		{"v1-3.10-el7-global.kmsg", []OOMEvent{{
			Seq: 2206, StartSeq: 2201, Constraint: ConstraintNone, Global: true, OOMMemcg: "/",
			PID: 21945, Comm: "tidb-server", UID: 1000, TotalVMKiB: 33027492, AnonRSSKiB: 31303276,
			InvokerComm: "tidb-server", GFPMask: "0x201da",
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", tt.file)
			got, r := readAll(t, path, Options{})
			if len(got) != len(tt.want) {
				t.Fatalf("got %d events, want %d: %+v", len(got), len(tt.want), got)
			}
			for i, w := range tt.want {
				g := got[i]
				gk := OOMEvent{Seq: g.Seq, StartSeq: g.StartSeq, Constraint: g.Constraint, Global: g.Global, CgroupPath: g.CgroupPath, OOMMemcg: g.OOMMemcg,
					PID: g.PID, Comm: g.Comm, UID: g.UID, TotalVMKiB: g.TotalVMKiB, AnonRSSKiB: g.AnonRSSKiB, FileRSSKiB: g.FileRSSKiB, ShmemRSSKiB: g.ShmemRSSKiB,
					PgtablesKiB: g.PgtablesKiB, InvokerComm: g.InvokerComm, GFPMask: g.GFPMask, MemcgUsageKiB: g.MemcgUsageKiB, MemcgLimitKiB: g.MemcgLimitKiB, MemcgFailcnt: g.MemcgFailcnt}
				if !reflect.DeepEqual(gk, w) {
					t.Errorf("event %d:\n got %+v\nwant %+v", i, gk, w)
				}
				if want := testBoot.Add(g.Monotonic); !g.Time.Equal(want) {
					t.Errorf("Time = %v, want boot+ts %v", g.Time, want)
				}
				if len(g.Report) < 2 || !strings.Contains(g.Report[len(g.Report)-1], "Kill") {
					t.Errorf("report evidence missing: %q", g.Report)
				}
			}
			if s := r.Stats(); s.Malformed != 0 || s.Gaps != 0 || s.Events != uint64(len(tt.want)) {
				t.Errorf("stats %+v", s)
			}
			golden(t, path+".golden.json", got)
		})
	}
}

func golden(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, '\n')
	if *update {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if !bytes.Equal(b, want) {
		t.Errorf("%s differs from the output (run with -update to see the diff in git):\n%s", path, b)
	}
}

func TestParseRecord(t *testing.T) {
	tests := []struct {
		in   string
		want Record
		err  bool
	}{
		{in: "6,417,268313832,-;hello", want: Record{Priority: 6, Seq: 417, Monotonic: 268313832 * time.Microsecond, Flags: "-", Message: "hello"}},
		{in: "6,12,5,-,caller=T1;a;b\n", want: Record{Priority: 6, Seq: 12, Monotonic: 5 * time.Microsecond, Flags: "-", Message: "a;b"}},
		{in: "6,190,3,-;ACPI: PCI Root\n SUBSYSTEM=acpi\n DEVICE=+acpi:PNP0A08:00\n", want: Record{Priority: 6, Seq: 190, Monotonic: 3 * time.Microsecond, Flags: "-", Message: "ACPI: PCI Root",
			Dict: map[string]string{"SUBSYSTEM": "acpi", "DEVICE": "+acpi:PNP0A08:00"}}},
		{in: `4,1,1,-;tab\x09here \x4`, want: Record{Priority: 4, Seq: 1, Monotonic: time.Microsecond, Flags: "-", Message: "tab\there \\x4"}},
		{in: "no semicolon", err: true},
		{in: "6,x,1,-;m", err: true},
		{in: "6,1;m", err: true},
		{in: "-1,1,1,-;m", err: true},
	}
	for _, tt := range tests {
		got, err := parseRecord([]byte(tt.in))
		if (err != nil) != tt.err {
			t.Errorf("parseRecord(%q) err = %v, want err %v", tt.in, err, tt.err)
			continue
		}
		if !tt.err && !reflect.DeepEqual(got, tt.want) {
			t.Errorf("parseRecord(%q)\n got %+v\nwant %+v", tt.in, got, tt.want)
		}
	}
}

// writeRecords writes kmsg-format lines to a file in dir.
func writeRecords(t *testing.T, path string, lines []string, appendTo bool) {
	t.Helper()
	flags := os.O_CREATE | os.O_WRONLY | os.O_TRUNC
	if appendTo {
		flags = os.O_CREATE | os.O_WRONLY | os.O_APPEND
	}
	f, err := os.OpenFile(path, flags, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, l := range lines {
		fmt.Fprintln(f, l)
	}
}

// fixtureLines returns the records of a fixture, renumbered from seq.
func fixtureLines(t *testing.T, file string, seq uint64) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if strings.HasPrefix(l, " ") {
			out = append(out, l)
			continue
		}
		f := strings.SplitN(l, ",", 3)
		out = append(out, fmt.Sprintf("%s,%d,%s", f[0], seq, f[2]))
		seq++
	}
	return out
}

// TestRestartResumesWithoutDuplicates stops a reader in the middle of a
// report, restarts it from the persisted cursor, and checks that every kill
// is delivered exactly once.
func TestRestartResumesWithoutDuplicates(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "kmsg")
	cursor := filepath.Join(dir, "cursor.json")
	first := fixtureLines(t, "v1-6.18-memcg.kmsg", 100) // 81 records: 100..180, kill at 180
	second := fixtureLines(t, "v1-5.2-memcg.kmsg", 181) // 47 records: 181..227, kill at 226
	cut := 20                                           // stop after 20 lines of the second report
	writeRecords(t, log, append(append([]string{}, first...), second[:cut]...), false)

	got1, r1 := readAll(t, log, Options{CursorFile: cursor})
	if len(got1) != 1 || got1[0].PID != 4040 {
		t.Fatalf("first run: %+v", got1)
	}
	c := r1.Cursor()
	if c.Seq != 180 || c.LastEventSeq != 180 {
		t.Errorf("cursor after a partial report = %+v, want Seq 180 (before the report in progress), LastEventSeq 180", c)
	}
	if saved, err := LoadCursor(cursor); err != nil || saved != c {
		t.Errorf("saved cursor %+v, %v; want %+v", saved, err, c)
	}

	writeRecords(t, log, second[cut:], true)
	got2, r2 := readAll(t, log, Options{CursorFile: cursor})
	if len(got2) != 1 || got2[0].PID != 23793 || got2[0].StartSeq != 181 || got2[0].CgroupPath != "/leaker" {
		t.Fatalf("second run: %+v", got2)
	}
	if s := r2.Stats(); s.Skipped != 180-100+1 || s.Gaps != 0 {
		t.Errorf("second run stats %+v, want %d skipped and no gap", s, 180-100+1)
	}
	// A third run delivers nothing new.
	got3, _ := readAll(t, log, Options{CursorFile: cursor})
	if len(got3) != 0 {
		t.Errorf("third run delivered %d events again", len(got3))
	}
	// Another boot: the cursor does not apply.
	got4, _ := readAll(t, log, Options{CursorFile: cursor, BootID: "other-boot"})
	if len(got4) != 2 {
		t.Errorf("new boot: %d events, want 2", len(got4))
	}
}

func TestSequenceGaps(t *testing.T) {
	lines := fixtureLines(t, "v1-6.18-memcg.kmsg", 10)
	// Drop three records of the memory dump and five before the last line.
	lines = append(append(lines[:30:30], lines[33:70]...), lines[75:]...)
	path := filepath.Join(t.TempDir(), "kmsg")
	writeRecords(t, path, lines, false)
	got, r := readAll(t, path, Options{})
	if len(got) != 1 || got[0].PID != 4040 {
		t.Fatalf("events %+v", got)
	}
	s := r.Stats()
	if s.Gaps != 2 || s.MissedRecords != 8 {
		t.Errorf("Gaps=%d MissedRecords=%d, want 2 and 8", s.Gaps, s.MissedRecords)
	}
}

func TestContinuationLinesAndNoise(t *testing.T) {
	lines := []string{
		"6,1,100,-;ACPI: PCI Root Bridge [PCI0] (domain 0000 [bus 00-ff])",
		" SUBSYSTEM=acpi",
		" DEVICE=+acpi:PNP0A08:00",
		"garbage line",
	}
	lines = append(lines, fixtureLines(t, "v1-6.18-memcg.kmsg", 2)...)
	path := filepath.Join(t.TempDir(), "kmsg")
	writeRecords(t, path, lines, false)
	got, r := readAll(t, path, Options{})
	if len(got) != 1 || got[0].CgroupPath != "/process_api/bf5bafa857a100623259ac31bb1b18a6/vigil-test-02f4e422" {
		t.Fatalf("events %+v", got)
	}
	if s := r.Stats(); s.Malformed != 1 || s.Records != 82 {
		t.Errorf("stats %+v, want 1 malformed and 82 records", s)
	}
}

func TestIncompleteReportIsAbandoned(t *testing.T) {
	lines := fixtureLines(t, "v1-6.18-memcg.kmsg", 1)
	// The first report loses its kill line; a second report follows.
	lines = append(lines[:len(lines)-1:len(lines)-1], fixtureLines(t, "v1-5.2-memcg.kmsg", uint64(len(lines)))...)
	path := filepath.Join(t.TempDir(), "kmsg")
	writeRecords(t, path, lines, false)
	got, r := readAll(t, path, Options{})
	if len(got) != 1 || got[0].PID != 23793 || got[0].CgroupPath != "/leaker" {
		t.Fatalf("events %+v", got)
	}
	if s := r.Stats(); s.IncompleteReports != 1 {
		t.Errorf("IncompleteReports = %d, want 1", s.IncompleteReports)
	}
}

func TestFollowFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kmsg")
	writeRecords(t, path, nil, false)
	events := make(chan OOMEvent, 4)
	r, err := NewReader(path, Options{Follow: true, BootID: "b", BootTime: testBoot, PollInterval: 10 * time.Millisecond,
		Handler: func(evs []OOMEvent) {
			for _, e := range evs {
				events <- e
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	writeRecords(t, path, fixtureLines(t, "v1-5.2-memcg.kmsg", 1), true)
	select {
	case e := <-events:
		if e.PID != 23793 {
			t.Errorf("event %+v", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event from a followed file")
	}
}

// TestGroupKill covers memory.oom.group: one report, several kills.
func TestGroupKill(t *testing.T) {
	lines := []string{
		"4,1,1000,-;stress invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
		"6,2,1001,-;memory: usage 131072kB, limit 131072kB, failcnt 7",
		"6,3,1002,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,2,oom_memcg=/app.slice,task_memcg=/app.slice/a.service,task=stress,pid=10,uid=0",
		"3,4,1003,-;Memory cgroup out of memory: Killed process 10 (stress) total-vm:1000kB, anon-rss:900kB, file-rss:10kB, shmem-rss:0kB, UID:0 pgtables:40kB oom_score_adj:0",
		"6,5,1004,-;Tasks in /app.slice are going to be killed due to memory.oom.group set",
		"3,6,1005,-;Memory cgroup out of memory: Killed process 11 (helper) total-vm:500kB, anon-rss:400kB, file-rss:10kB, shmem-rss:0kB, UID:0 pgtables:20kB oom_score_adj:0",
	}
	path := filepath.Join(t.TempDir(), "kmsg")
	writeRecords(t, path, lines, false)
	got, _ := readAll(t, path, Options{})
	if len(got) != 2 {
		t.Fatalf("got %d events, want 2: %+v", len(got), got)
	}
	if got[0].MemsAllowed != "0,2" || got[0].CgroupPath != "/app.slice/a.service" {
		t.Errorf("first kill %+v", got[0])
	}
	if got[1].PID != 11 || !got[1].GroupKill || got[1].CgroupPath != "/app.slice" || got[1].Constraint != ConstraintMemcg || got[1].OOMMemcg != "/app.slice" {
		t.Errorf("group kill %+v", got[1])
	}
}

func FuzzParseRecord(f *testing.F) {
	for _, file := range []string{"v1-6.18-memcg.kmsg", "v1-5.2-memcg.kmsg"} {
		for _, l := range fixtureLinesF(f, file) {
			f.Add([]byte(l))
		}
	}
	f.Add([]byte("6,190,3,-;ACPI\n SUBSYSTEM=acpi\n DEVICE=+acpi:PNP0A08:00\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseRecord(b)
		if err != nil {
			return
		}
		var a assembler
		a.add(r)
	})
}

// FuzzAssembler feeds arbitrary record sequences to the report assembler.
func FuzzAssembler(f *testing.F) {
	for _, file := range []string{"v1-6.18-memcg.kmsg", "v1-5.2-memcg.kmsg", "v1-4.18-el8-memcg.kmsg", "v1-3.10-el7-global.kmsg"} {
		f.Add([]byte(strings.Join(fixtureLinesF(f, file), "\n")))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a := assembler{bootTime: testBoot}
		for _, l := range bytes.Split(b, []byte{'\n'}) {
			r, err := parseRecord(l)
			if err != nil {
				continue
			}
			if ev, ok := a.add(r); ok && ev.Seq != r.Seq {
				t.Fatalf("event seq %d from record %d", ev.Seq, r.Seq)
			}
		}
	})
}

func fixtureLinesF(f *testing.F, file string) []string {
	b, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		f.Fatal(err)
	}
	return strings.Split(strings.TrimRight(string(b), "\n"), "\n")
}

// TestIdentityAttribution: a kill in a kubepods container cgroup names the
// pod and the container.
func TestIdentityAttribution(t *testing.T) {
	got, _ := readAll(t, filepath.Join("testdata", "v1-4.18-el8-memcg.kmsg"), Options{})
	if len(got) != 1 {
		t.Fatalf("%d events", len(got))
	}
	id := got[0].Identity
	if id.Kind != "container" || id.QoS != "burstable" || id.PodUID != "d63c4bbe-5f18-11ec-bdcd-d094668d7dd6" ||
		id.ContainerID != "083afd1a06b8b612ab5d974e12200d7fd1d35be6a44f0e368179399ef6c6e84d" || id.Runtime != "docker" {
		t.Errorf("identity %+v", id)
	}
}

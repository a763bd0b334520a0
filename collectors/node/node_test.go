package node

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/collectors"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// TestCollectGolden collects from captured proc trees and compares the whole
// NodeSample with its golden JSON.
func TestCollectGolden(t *testing.T) {
	for _, tc := range []struct{ name, root string }{
		{"proc", "testdata/proc"},         // this host, kernel 6.18
		{"proc-6.1", "testdata/proc-6.1"}, // the cgroup v2 microVM, Debian kernel 6.1
		{"nopsi", "testdata/proc-nopsi"},  // kernel without /proc/pressure
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.root)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			var got collectors.NodeSample
			if err := c.Collect(time.Unix(1000, 0), &got); err != nil {
				t.Fatal(err)
			}
			gotJSON, err := json.MarshalIndent(got, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", tc.name+".golden.json")
			if *update {
				if err := os.WriteFile(golden, append(gotJSON, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(bytes.TrimSpace(gotJSON), bytes.TrimSpace(want)) {
				t.Errorf("sample differs from %s (run with -update to accept):\n%s", golden, gotJSON)
			}
		})
	}
}

// TestCollectMatchesFixture checks the parsed values against the fixture's
// own text, key by key, independently of the parser.
func TestCollectMatchesFixture(t *testing.T) {
	c, err := New("testdata/proc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var got collectors.NodeSample
	if err := c.Collect(time.Now(), &got); err != nil {
		t.Fatal(err)
	}
	meminfo := readFixture(t, "testdata/proc/meminfo")
	vmstat := readFixture(t, "testdata/proc/vmstat")
	tests := []struct {
		name string
		got  uint64
		want uint64
	}{
		{"MemTotal", got.MemTotalBytes, kb(t, meminfo, "MemTotal")},
		{"MemFree", got.MemFreeBytes, kb(t, meminfo, "MemFree")},
		{"MemAvailable", got.MemAvailableBytes, kb(t, meminfo, "MemAvailable")},
		{"Cached", got.CachedBytes, kb(t, meminfo, "Cached")},
		{"Inactive(file)", got.InactiveFileBytes, kb(t, meminfo, `Inactive\(file\)`)},
		{"Active(anon)", got.ActiveAnonBytes, kb(t, meminfo, `Active\(anon\)`)},
		{"Committed_AS", got.CommittedASBytes, kb(t, meminfo, "Committed_AS")},
		{"pgmajfault", got.VMStat.Pgmajfault, counter(t, vmstat, "pgmajfault")},
		{"oom_kill", got.VMStat.OOMKill, counter(t, vmstat, "oom_kill")},
		{"workingset_refault_file", got.VMStat.WorkingsetRefaultFile, counter(t, vmstat, "workingset_refault_file")},
		{"workingset_activate", got.VMStat.WorkingsetActivate,
			counter(t, vmstat, "workingset_activate_anon") + counter(t, vmstat, "workingset_activate_file")},
		{"allocstall", got.VMStat.AllocStall, counter(t, vmstat, "allocstall_dma") + counter(t, vmstat, "allocstall_dma32") +
			counter(t, vmstat, "allocstall_normal") + counter(t, vmstat, "allocstall_movable") + counter(t, vmstat, "allocstall_device")},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %d, want %d", tt.name, tt.got, tt.want)
		}
	}
	if !got.MemoryPressure.Present || !got.CPUPressure.Present || !got.IOPressure.Present {
		t.Errorf("pressure present = %v/%v/%v, want all true", got.MemoryPressure.Present, got.CPUPressure.Present, got.IOPressure.Present)
	}
	if got.Hostname != string(bytes.TrimSpace(readFixture(t, "testdata/proc/sys/kernel/hostname"))) {
		t.Errorf("hostname %q does not come from the proc root", got.Hostname)
	}
}

// TestCollectDerived rewrites the counters of a real fixture between two
// Collects and checks the derived signals.
func TestCollectDerived(t *testing.T) {
	root := t.TempDir()
	meminfo := readFixture(t, "testdata/proc/meminfo")
	vmstat := readFixture(t, "testdata/proc/vmstat")
	writeFile(t, filepath.Join(root, "meminfo"), meminfo)
	writeFile(t, filepath.Join(root, "vmstat"), vmstat)
	c, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })

	t0 := time.Unix(5000, 0)
	var s collectors.NodeSample
	if err := c.Collect(t0, &s); err != nil {
		t.Fatal(err)
	}
	if s.RefaultsPerSecond != 0 || s.OOMKillsDelta != 0 {
		t.Errorf("first Collect: refaults/s %v, oom delta %d, want 0 and 0", s.RefaultsPerSecond, s.OOMKillsDelta)
	}
	total, avail := kb(t, meminfo, "MemTotal"), kb(t, meminfo, "MemAvailable")
	if want := 1 - float64(avail)/float64(total); s.UsedRatio != want {
		t.Errorf("UsedRatio = %v, want %v", s.UsedRatio, want)
	}

	bumped := bump(t, vmstat, "oom_kill", 3)
	bumped = bump(t, bumped, "workingset_refault_file", 400)
	bumped = bump(t, bumped, "workingset_refault_anon", 100)
	writeFile(t, filepath.Join(root, "vmstat"), bumped)
	if err := c.Collect(t0.Add(2*time.Second), &s); err != nil {
		t.Fatal(err)
	}
	if s.OOMKillsDelta != 3 {
		t.Errorf("OOMKillsDelta = %d, want 3", s.OOMKillsDelta)
	}
	if s.RefaultsPerSecond != 250 {
		t.Errorf("RefaultsPerSecond = %v, want 250 (500 refaults over 2 s)", s.RefaultsPerSecond)
	}
	if s.MemoryPressure.Present {
		t.Errorf("MemoryPressure.Present = true for a root without pressure/")
	}

	// A counter going backwards (host rebooted under a long-lived sample
	// stream) gives 0, not a wrapped huge delta.
	writeFile(t, filepath.Join(root, "vmstat"), vmstat)
	if err := c.Collect(t0.Add(3*time.Second), &s); err != nil {
		t.Fatal(err)
	}
	if s.OOMKillsDelta != 0 || s.RefaultsPerSecond != 0 {
		t.Errorf("after counter reset: OOMKillsDelta %d, RefaultsPerSecond %v, want 0 and 0", s.OOMKillsDelta, s.RefaultsPerSecond)
	}
}

func TestNewErrors(t *testing.T) {
	root := t.TempDir()
	if _, err := New(root); err == nil {
		t.Error("New on an empty root succeeded")
	}
	writeFile(t, filepath.Join(root, "meminfo"), []byte("garbage\n"))
	writeFile(t, filepath.Join(root, "vmstat"), readFixture(t, "testdata/proc/vmstat"))
	c, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var s collectors.NodeSample
	if err := c.Collect(time.Now(), &s); err == nil {
		t.Error("Collect on a garbage meminfo succeeded")
	}
}

// TestCollectRealProc reads this machine's /proc and checks that the values
// are sane and consistent with each other and with gopsutil's view.
func TestCollectRealProc(t *testing.T) {
	c, err := New("/proc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var s collectors.NodeSample
	t0 := time.Now()
	if err := c.Collect(t0, &s); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name string
		ok   bool
	}{
		{"MemTotal > 0", s.MemTotalBytes > 0},
		{"MemAvailable <= MemTotal", s.MemAvailableBytes <= s.MemTotalBytes},
		{"MemFree <= MemTotal", s.MemFreeBytes <= s.MemTotalBytes},
		{"SwapFree <= SwapTotal", s.SwapFreeBytes <= s.SwapTotalBytes},
		{"Inactive(file) <= Cached+Buffers+Shmem", s.InactiveFileBytes <= s.CachedBytes+s.BuffersBytes+s.ShmemBytes},
		{"SReclaimable <= Slab", s.SReclaimableBytes <= s.SlabBytes},
		{"0 <= UsedRatio < 1", s.UsedRatio >= 0 && s.UsedRatio < 1},
		{"pgsteal_kswapd <= pgscan_kswapd", s.VMStat.PgstealKswapd <= s.VMStat.PgscanKswapd},
		{"hostname set", s.Hostname != ""},
	}
	for _, ck := range checks {
		if !ck.ok {
			t.Errorf("%s: false (sample %+v)", ck.name, s)
		}
	}
	if _, err := os.Stat("/proc/pressure/memory"); err == nil && !s.MemoryPressure.Present {
		t.Error("/proc/pressure/memory exists but MemoryPressure.Present is false")
	}
	prev := s
	time.Sleep(50 * time.Millisecond)
	if err := c.Collect(time.Now(), &s); err != nil {
		t.Fatal(err)
	}
	if s.VMStat.Pgmajfault < prev.VMStat.Pgmajfault || s.VMStat.OOMKill < prev.VMStat.OOMKill {
		t.Errorf("counters went backwards: %+v then %+v", prev.VMStat, s.VMStat)
	}
	if s.OOMKillsDelta != s.VMStat.OOMKill-prev.VMStat.OOMKill {
		t.Errorf("OOMKillsDelta %d != %d - %d", s.OOMKillsDelta, s.VMStat.OOMKill, prev.VMStat.OOMKill)
	}

	facts, err := c.Facts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("facts: %+v", facts)
	if facts.MemTotalBytes != s.MemTotalBytes {
		t.Errorf("gopsutil MemTotal %d != ours %d", facts.MemTotalBytes, s.MemTotalBytes)
	}
	if facts.Hostname != s.Hostname || facts.KernelVersion == "" || facts.OS != "linux" {
		t.Errorf("facts %+v: want hostname %q, a kernel version and os linux", facts, s.Hostname)
	}
	if facts.CPUs < 1 {
		t.Errorf("CPUs = %d", facts.CPUs)
	}
	if facts.BootTime.IsZero() || facts.BootTime.After(t0) || t0.Sub(facts.BootTime) > 10*365*24*time.Hour {
		t.Errorf("boot time %v not sane relative to now %v", facts.BootTime, t0)
	}
	if osrel, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil && string(bytes.TrimSpace(osrel)) != facts.KernelVersion {
		t.Errorf("kernel %q, /proc/sys/kernel/osrelease %q", facts.KernelVersion, bytes.TrimSpace(osrel))
	}
}

// TestFactsHonourProcRoot points Facts at a captured proc root: memory,
// boot time, CPU count and host ID must come from there through gopsutil's
// context environment, not from the real /proc.
func TestFactsHonourProcRoot(t *testing.T) {
	c, err := New("testdata/proc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	got, err := c.Facts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// gopsutil derives the boot time from uptime (now - /proc/uptime), so a
	// fixture root gives a boot time that moves with the clock and differs
	// from the real one by the fixture's age.
	now := time.Now()
	var uptime float64
	if _, err := fmt.Sscan(string(readFixture(t, "testdata/proc/uptime")), &uptime); err != nil {
		t.Fatal(err)
	}
	if want := now.Add(-time.Duration(uptime * float64(time.Second))); got.BootTime.Sub(want).Abs() > 2*time.Second {
		t.Errorf("BootTime = %v, want about %v (now - fixture uptime)", got.BootTime, want)
	}
	tests := []struct {
		name      string
		got, want any
	}{
		{"MemTotalBytes", got.MemTotalBytes, kb(t, readFixture(t, "testdata/proc/meminfo"), "MemTotal")},
		{"CPUs", got.CPUs, len(regexp.MustCompile(`(?m)^processor\s*:`).FindAll(readFixture(t, "testdata/proc/cpuinfo"), -1))},
		{"HostID", got.HostID, string(bytes.TrimSpace(readFixture(t, "testdata/proc/sys/kernel/random/boot_id")))},
		{"Hostname", got.Hostname, string(bytes.TrimSpace(readFixture(t, "testdata/proc/sys/kernel/hostname")))},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

func readFixture(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func kb(t testing.TB, meminfo []byte, keyRE string) uint64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + keyRE + `:\s+(\d+) kB$`).FindSubmatch(meminfo)
	if m == nil {
		t.Fatalf("meminfo fixture has no %s", keyRE)
	}
	v, _ := strconv.ParseUint(string(m[1]), 10, 64)
	return v * 1024
}

func counter(t testing.TB, vmstat []byte, key string) uint64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + key + ` (\d+)$`).FindSubmatch(vmstat)
	if m == nil {
		t.Fatalf("vmstat fixture has no %s", key)
	}
	v, _ := strconv.ParseUint(string(m[1]), 10, 64)
	return v
}

func bump(t testing.TB, vmstat []byte, key string, by uint64) []byte {
	t.Helper()
	v := counter(t, vmstat, key)
	re := regexp.MustCompile(`(?m)^` + key + ` \d+$`)
	return re.ReplaceAll(vmstat, []byte(key+" "+strconv.FormatUint(v+by, 10)))
}

// TestCollectDoesNotAllocate: the per-tick path on the real /proc is
// allocation-free once the buffer has grown to fit.
func TestCollectDoesNotAllocate(t *testing.T) {
	c, err := New("/proc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var s collectors.NodeSample
	now := time.Now()
	if err := c.Collect(now, &s); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(50, func() {
		now = now.Add(time.Second)
		if err := c.Collect(now, &s); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Collect allocates %v times per call", n)
	}
}

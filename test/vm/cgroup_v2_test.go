package vmtest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/test/cgtest"
	"github.com/vigil-agent/vigil/test/testenv"
)

// stepAllocEnv turns a re-executed test binary into a step allocator: it
// reads a number of MiB per stdin line, allocates and touches them, and
// prints "held <total MiB>". The test decides when each step happens.
const stepAllocEnv = "VIGIL_VMTEST_STEPALLOC"

func TestMain(m *testing.M) {
	if os.Getenv(stepAllocEnv) == "1" {
		os.Exit(runStepAllocator(os.Stdin, os.Stdout))
	}
	cgtest.Main(m)
}

func runStepAllocator(in io.Reader, out io.Writer) int {
	var keep [][]byte
	held := 0
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		n, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
		if err != nil || n < 0 {
			fmt.Fprintln(os.Stderr, "step allocator: bad step", sc.Text())
			return 2
		}
		for i := 0; i < n; i++ {
			b := make([]byte, 1<<20)
			for j := 0; j < len(b); j += 4096 {
				b[j] = 1
			}
			keep = append(keep, b)
		}
		held += n
		fmt.Fprintf(out, "held %d\n", held)
	}
	_ = keep
	return 0
}

// TestCgroupV2VM runs this package's TestV2* tests in the cgroup v2 microVM.
func TestCgroupV2VM(t *testing.T) { Run(t, "^TestV2") }

func TestV2Hierarchy(t *testing.T) {
	RequireGuest(t)
	if v := cgtest.Version(); v != 2 {
		t.Fatalf("cgtest.Version() = %d, want 2", v)
	}
	own, err := cgtest.OwnPath("")
	if err != nil {
		t.Fatal(err)
	}
	if own != "/" {
		t.Errorf("guest test process is in cgroup %q, want /", own)
	}
	tests := []struct {
		file string
		want []string
	}{
		{"cgroup.controllers", []string{"cpu", "io", "memory", "pids"}},
		{"cgroup.subtree_control", []string{"cpu", "io", "memory", "pids"}},
	}
	for _, tt := range tests {
		b, err := os.ReadFile(filepath.Join(cgtest.Root, tt.file))
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Fields(string(b))
		for _, w := range tt.want {
			if !slices.Contains(got, w) {
				t.Errorf("%s = %q, missing %q", tt.file, got, w)
			}
		}
	}
	// Per-cgroup PSI needs CONFIG_PSI and no psi=0 on the command line.
	if _, err := os.Stat("/proc/pressure/memory"); err != nil {
		t.Errorf("PSI: %v", err)
	}
}

func TestV2MemoryFiles(t *testing.T) {
	RequireGuest(t)
	g := cgtest.New(t)
	cgtest.Start(t, g.Allocator(cgtest.AllocSpec{TotalMiB: 32, StepMiB: 8}))
	testenv.Eventually(t, 30*time.Second, "memory.current >= 32 MiB", func() bool {
		return g.ReadUint(t, "", "memory.current") >= 32<<20
	})

	current := g.ReadUint(t, "", "memory.current")
	if current > 256<<20 {
		t.Errorf("memory.current = %d, want about 32 MiB", current)
	}
	if peak := g.ReadUint(t, "", "memory.peak"); peak < current {
		t.Errorf("memory.peak %d < memory.current %d", peak, current)
	}
	for _, tt := range []struct{ file, want string }{
		{"memory.max", "max"},
		{"memory.high", "max"},
		{"memory.low", "0"},
		{"memory.min", "0"},
		{"memory.swap.max", "max"},
	} {
		if got := g.Read(t, "", tt.file); got != tt.want {
			t.Errorf("%s = %q, want %q", tt.file, got, tt.want)
		}
	}

	// memory.stat is flushed from per-CPU counters lazily (every 2 s at
	// most), so it can lag memory.current for a moment.
	var stat map[string]uint64
	testenv.Eventually(t, 10*time.Second, "memory.stat anon >= 32 MiB", func() bool {
		stat = keyed(t, g.Read(t, "", "memory.stat"))
		return stat["anon"] >= 32<<20
	})
	if current := g.ReadUint(t, "", "memory.current"); stat["anon"] > current {
		t.Errorf("memory.stat anon = %d > memory.current %d", stat["anon"], current)
	}
	for _, k := range []string{"file", "kernel", "kernel_stack", "sock", "shmem", "file_mapped", "inactive_anon",
		"active_anon", "inactive_file", "active_file", "pgfault", "pgmajfault", "workingset_refault_anon", "pgscan"} {
		if _, ok := stat[k]; !ok {
			t.Errorf("memory.stat has no %q", k)
		}
	}
	if stat["pgfault"] == 0 {
		t.Error("memory.stat pgfault = 0 after 32 MiB of page faults")
	}

	events := keyed(t, g.Read(t, "", "memory.events"))
	for _, k := range []string{"low", "high", "max", "oom", "oom_kill", "oom_group_kill"} {
		v, ok := events[k]
		if !ok {
			t.Errorf("memory.events has no %q", k)
		} else if v != 0 {
			t.Errorf("memory.events %s = %d, want 0 without limits", k, v)
		}
	}

	psi := g.Read(t, "", "memory.pressure")
	for _, kind := range []string{"some", "full"} {
		if _, err := psiTotal(psi, kind); err != nil {
			t.Errorf("memory.pressure: %v", err)
		}
	}

	// Limits read back in bytes; "max" removes them.
	for _, tt := range []struct{ file, write, want string }{
		{"memory.max", "256M", "268435456"},
		{"memory.high", "200M", "209715200"},
		{"memory.low", "8M", "8388608"},
		{"memory.high", "max", "max"},
		{"memory.max", "max", "max"},
	} {
		g.Write(t, "", tt.file, tt.write)
		if got := g.Read(t, "", tt.file); got != tt.want {
			t.Errorf("after writing %q to %s: read %q, want %q", tt.write, tt.file, got, tt.want)
		}
	}
}

func TestV2OOMKillAtMemoryMax(t *testing.T) {
	RequireGuest(t)
	g := cgtest.New(t)
	// memory.high stays at max: throttling without swap under TCG would
	// take minutes before the OOM kill.
	g.Write(t, "", "memory.max", "64M")
	cmd := g.Allocator(cgtest.AllocSpec{TotalMiB: 200, StepMiB: 4})
	cgtest.Start(t, cmd)
	err := cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("allocator of 200 MiB under memory.max=64M: wait = %v, want killed", err)
	}
	if ws := exit.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("allocator ended with %v, want SIGKILL from the OOM killer", ws)
	}
	events := keyed(t, g.Read(t, "", "memory.events"))
	for _, k := range []string{"max", "oom", "oom_kill"} {
		if events[k] < 1 {
			t.Errorf("memory.events %s = %d, want >= 1", k, events[k])
		}
	}
	if events["high"] != 0 {
		t.Errorf("memory.events high = %d, want 0 with memory.high=max", events["high"])
	}
	if peak := g.ReadUint(t, "", "memory.peak"); peak > 65<<20 || peak < 48<<20 { // charges may overshoot by a page or so
		t.Errorf("memory.peak = %d, want close to the 64 MiB limit", peak)
	}
	testenv.Eventually(t, 10*time.Second, "cgroup.events populated 0", func() bool {
		return keyed(t, g.Read(t, "", "cgroup.events"))["populated"] == 0
	})
}

func TestV2MemoryHighThrottles(t *testing.T) {
	RequireGuest(t)
	g := cgtest.New(t)
	alloc := newStepAllocator(t, g)
	alloc.step(t, 48, 30*time.Second)

	if n := keyed(t, g.Read(t, "", "memory.events"))["high"]; n != 0 {
		t.Fatalf("memory.events high = %d before memory.high was set", n)
	}
	psiBefore, err := psiTotal(g.Read(t, "", "memory.pressure"), "some")
	if err != nil {
		t.Fatal(err)
	}
	// Set memory.high just above the current usage, then go about 2 MiB
	// over it: without swap, farther over stalls for minutes under TCG.
	current := g.ReadUint(t, "", "memory.current")
	high := (current + 1<<20) &^ 4095
	g.Write(t, "", "memory.high", strconv.FormatUint(high, 10))
	if got := g.ReadUint(t, "", "memory.high"); got != high {
		t.Fatalf("memory.high = %d, want %d", got, high)
	}
	start := time.Now()
	alloc.step(t, 3, 90*time.Second)
	t.Logf("3 MiB with memory.high %d bytes above usage took %s", high-current, time.Since(start).Round(time.Millisecond))

	if n := keyed(t, g.Read(t, "", "memory.events"))["high"]; n == 0 {
		t.Errorf("memory.events high = 0 after allocating past memory.high")
	}
	psiAfter, err := psiTotal(g.Read(t, "", "memory.pressure"), "some")
	if err != nil {
		t.Fatal(err)
	}
	if psiAfter <= psiBefore {
		t.Errorf("memory.pressure some total = %d after throttling, was %d: want it to rise", psiAfter, psiBefore)
	}
	if events := keyed(t, g.Read(t, "", "memory.events")); events["oom_kill"] != 0 || events["max"] != 0 {
		t.Errorf("memory.events = %v: memory.high must throttle, not OOM", events)
	}
}

func TestV2CgroupKill(t *testing.T) {
	RequireGuest(t)
	g := cgtest.New(t)
	// cgroup.kill is recursive: processes in both children die.
	var (
		cmds     []*exec.Cmd
		children []*cgtest.Group
	)
	for _, name := range []string{"a", "b"} {
		c := g.Child(t, name)
		children = append(children, c)
		for range 2 {
			cmd := c.Command("sleep", "1000")
			cgtest.Start(t, cmd)
			cmds = append(cmds, cmd)
		}
		// A grandchild process the test never started directly.
		cmd := c.Command("/bin/sh", "-c", "sleep 1000 & wait")
		cgtest.Start(t, cmd)
		cmds = append(cmds, cmd)
	}
	// Each child: two sleeps, the shell and its sleep. A process still on its
	// way in when cgroup.kill is written would survive it.
	for _, c := range children {
		testenv.Eventually(t, 10*time.Second, c.Path()+" has 4 processes", func() bool { return len(c.Procs(t)) == 4 })
	}

	g.Write(t, "", "cgroup.kill", "1")
	for _, cmd := range cmds {
		err := cmd.Wait()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Errorf("%v: wait = %v, want killed by SIGKILL", cmd.Args, err)
		}
	}
	testenv.Eventually(t, 10*time.Second, "cgroup.events populated 0", func() bool {
		return keyed(t, g.Read(t, "", "cgroup.events"))["populated"] == 0
	})
}

func TestV2CgroupFreeze(t *testing.T) {
	RequireGuest(t)
	g := cgtest.New(t)
	// The ticker writes a counter to a file: once cgroup.events says frozen,
	// every task of the group is stopped, so the file must not change.
	counter := filepath.Join(t.TempDir(), "ticks")
	cmd := g.Command("/bin/sh", "-c", `i=0; while :; do i=$((i+1)); echo $i > "$1"; sleep 0.02; done`, "ticker", counter)
	cgtest.Start(t, cmd)
	read := func() string {
		b, _ := os.ReadFile(counter)
		return strings.TrimSpace(string(b))
	}
	ticks := func() int { n, _ := strconv.Atoi(read()); return n }
	testenv.Eventually(t, 10*time.Second, "ticker running", func() bool { return ticks() > 3 })

	g.Write(t, "", "cgroup.freeze", "1")
	testenv.Eventually(t, 10*time.Second, "cgroup.events frozen 1", func() bool {
		return keyed(t, g.Read(t, "", "cgroup.events"))["frozen"] == 1
	})
	frozenAt := read()
	time.Sleep(500 * time.Millisecond)
	if got := read(); got != frozenAt {
		t.Errorf("counter moved from %q to %q while frozen", frozenAt, got)
	}
	if n := len(g.Procs(t)); n == 0 {
		t.Error("no process left in the frozen group")
	}

	g.Write(t, "", "cgroup.freeze", "0")
	testenv.Eventually(t, 10*time.Second, "cgroup.events frozen 0", func() bool {
		return keyed(t, g.Read(t, "", "cgroup.events"))["frozen"] == 0
	})
	was, _ := strconv.Atoi(frozenAt)
	testenv.Eventually(t, 10*time.Second, "ticker running again after thaw", func() bool { return ticks() > was+3 })
}

func TestV2PidsMax(t *testing.T) {
	RequireGuest(t)
	g := cgtest.New(t)
	g.Write(t, "", "pids.max", "4")
	// The shell and up to three sleeps fit; the other forks fail.
	cmd := g.Command("/bin/sh", "-c", "for i in 1 2 3 4 5 6; do sleep 5 & done; wait")
	cgtest.Start(t, cmd)
	testenv.Eventually(t, 10*time.Second, "pids.events max >= 1", func() bool {
		return keyed(t, g.Read(t, "", "pids.events"))["max"] >= 1
	})
	if n := g.ReadUint(t, "", "pids.current"); n > 4 {
		t.Errorf("pids.current = %d above pids.max 4", n)
	}
	g.Write(t, "", "cgroup.kill", "1")
}

// stepAllocator drives a step allocator process in a group.
type stepAllocator struct {
	in    io.WriteCloser
	lines chan string
	held  int
}

func newStepAllocator(t *testing.T, g *cgtest.Group) *stepAllocator {
	t.Helper()
	cmd := g.Command(os.Args[0])
	cmd.Env = append(os.Environ(), stepAllocEnv+"=1")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	a := &stepAllocator{in: in, lines: make(chan string, 16)}
	cgtest.Start(t, cmd)
	go func() { // ends at EOF, when the process exits or is killed
		defer close(a.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			a.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		in.Close()
		_ = cmd.Process.Kill()
		for range a.lines {
		}
	})
	return a
}

// step allocates mib more and waits until the allocator reports holding them.
func (a *stepAllocator) step(t *testing.T, mib int, within time.Duration) {
	t.Helper()
	if _, err := fmt.Fprintln(a.in, mib); err != nil {
		t.Fatalf("step allocator: %v", err)
	}
	a.held += mib
	want := fmt.Sprintf("held %d", a.held)
	timeout := time.After(within)
	for {
		select {
		case line, ok := <-a.lines:
			if !ok {
				t.Fatalf("step allocator exited before %q", want)
			}
			if line == want {
				return
			}
		case <-timeout:
			t.Fatalf("step allocator: no %q within %s", want, within)
		}
	}
}

// keyed parses "key value" lines (memory.stat, memory.events, cgroup.events).
func keyed(t *testing.T, s string) map[string]uint64 {
	t.Helper()
	m := map[string]uint64{}
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		v, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		m[f[0]] = v
	}
	return m
}

// psiTotal returns total= of the some/full line of a pressure file.
func psiTotal(s, kind string) (uint64, error) {
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) != 5 || f[0] != kind {
			continue
		}
		for _, kv := range f[1:4] {
			if k, _, ok := strings.Cut(kv, "="); !ok || !strings.HasPrefix(k, "avg") {
				return 0, fmt.Errorf("%q: field %q is not avgN=", line, kv)
			}
		}
		if v, ok := strings.CutPrefix(f[4], "total="); ok {
			return strconv.ParseUint(v, 10, 64)
		}
		return 0, fmt.Errorf("%q: no total=", line)
	}
	return 0, fmt.Errorf("no %q line in %q", kind, s)
}

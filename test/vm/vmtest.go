// Package vmtest runs vigil's cgroup v2 tests on a real cgroup v2 kernel: a
// QEMU microVM (TCG) booting a stock Debian 6.1 kernel whose root is the
// host's root filesystem, read-only over 9p, with a cgroup2 hierarchy that
// has the memory, cpu, io and pids controllers enabled.
//
// A package's host test calls Run, which re-runs the package's own test
// binary inside the VM and reports every guest test as a subtest:
//
//	func TestCgroupV2VM(t *testing.T) { vmtest.Run(t, "^TestV2") }
//
//	func TestV2MemoryHigh(t *testing.T) {
//		vmtest.RequireGuest(t)
//		...
//	}
//
// Exec is the lower-level call: boot, run a shell script, collect its exit
// status and the files it left in the writable share. The kernel and the
// initramfs are built once and cached (see CacheDir); one VM runs at a time
// on the machine.
package vmtest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// GuestEnv is set to 1 in the environment of everything Run starts in the VM.
const GuestEnv = "VIGIL_VM_GUEST"

// SkipEnv, set to 1, makes Run skip instead of booting the VM (for machines
// without QEMU; CI does not set it).
const SkipEnv = "VIGIL_SKIP_VM"

// TimeoutEnv overrides the VM run timeout of Run (a Go duration, e.g. 8m).
const TimeoutEnv = "VIGIL_VM_TIMEOUT"

// ConsoleEnv names a file that receives a live copy of the guest's serial
// console while Run runs (kernel messages, MonitorEnv's reports): the way
// to watch a guest that stops making progress.
const ConsoleEnv = "VIGIL_VM_CONSOLE"

// MonitorEnv, a Go duration, makes the guest report on its console at that
// period: uptime, load, memory, and every task running or in
// uninterruptible sleep with its kernel stack.
const MonitorEnv = "VIGIL_VM_MONITOR"

// InGuest reports whether this process runs inside the cgroup v2 microVM.
func InGuest() bool { return os.Getenv(GuestEnv) == "1" }

// RequireGuest skips t unless it runs inside the microVM.
func RequireGuest(t testing.TB) {
	t.Helper()
	if !InGuest() {
		t.Skip("runs inside the cgroup v2 microVM (see TestCgroupV2VM)")
	}
}

// guestBinary is the test binary's path inside the guest: stable and
// executable, so tests can re-execute os.Args[0] for helper processes.
const guestBinary = GuestOutDir + "/pkg.test"

// Run re-runs the current test binary inside the microVM with
// -test.run=pattern, in the same package directory, and reports each guest
// top-level test as a subtest of t with the same name, outcome and output.
// It skips when already in the guest or when VIGIL_SKIP_VM=1.
func Run(t *testing.T, pattern string) {
	t.Helper()
	if InGuest() {
		t.Skip("already inside the cgroup v2 microVM")
	}
	if os.Getenv(SkipEnv) == "1" {
		t.Skip(SkipEnv + "=1: the cgroup v2 microVM tests are skipped")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("vmtest: test binary: %v", err)
	}
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatalf("vmtest: %v", err)
	}
	ctx := t.Context()
	vmTimeout := DefaultTimeout
	if s := os.Getenv(TimeoutEnv); s != "" {
		if vmTimeout, err = time.ParseDuration(s); err != nil {
			t.Fatalf("vmtest: %s=%q: %v", TimeoutEnv, s, err)
		}
	}
	if dl, ok := t.Deadline(); ok {
		// Fail with our own message (console tail) before go test's timeout
		// panics the whole binary.
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl.Add(-5*time.Second))
		defer cancel()
		vmTimeout = min(vmTimeout, time.Until(dl)-10*time.Second)
		if vmTimeout < 30*time.Second {
			t.Fatalf("vmtest: only %s left before the test deadline", time.Until(dl).Round(time.Second))
		}
	}
	// The guest binary times out first, so its panic names the stuck test.
	guestTimeout := vmTimeout - 20*time.Second
	if guestTimeout < vmTimeout/2 {
		guestTimeout = vmTimeout / 2
	}

	out, err := os.MkdirTemp("", "vigil-vm-")
	if err != nil {
		t.Fatalf("vmtest: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(out) })
	script := guestScript(cwd, pattern, guestTimeout, testing.Short(), passEnv())
	if s := os.Getenv(MonitorEnv); s != "" {
		every, err := time.ParseDuration(s)
		if err != nil || every < time.Second {
			t.Fatalf("vmtest: %s=%q: want a duration of at least 1s", MonitorEnv, s)
		}
		script = monitorScript(every) + script
	}
	spec := Spec{
		Script:  script,
		Files:   map[string]string{exe: filepath.Base(guestBinary)},
		Timeout: vmTimeout,
		OutDir:  out,
		Logf:    t.Logf,
	}
	if path := os.Getenv(ConsoleEnv); path != "" {
		f, err := os.Create(path)
		if err != nil {
			t.Fatalf("vmtest: %s: %v", ConsoleEnv, err)
		}
		defer f.Close()
		spec.Console = f
	}
	res, err := Exec(ctx, spec)
	outFile := filepath.Join(out, "test.out")
	if err != nil {
		if b, rerr := os.ReadFile(outFile); rerr == nil && len(b) > 0 {
			t.Logf("guest test output so far (tail):\n%s", tail(string(b), 60))
		}
		if errors.Is(err, ErrQEMUMissing) {
			t.Fatalf("%v\n(on a machine that cannot run QEMU, set %s=1 to skip the VM tests)", err, SkipEnv)
		}
		t.Fatal(err)
	}
	t.Logf("microVM: kernel %s, boot %.1fs, run %.1fs (total %.1fs), guest exit status %d",
		res.Kernel, res.Boot.Seconds(), (res.Elapsed - res.Boot).Seconds(), res.Elapsed.Seconds(), res.ExitCode)
	rep, err := ReadTestReport(outFile)
	if err != nil {
		t.Fatalf("%v; console tail:\n%s", err, tail(res.Console, 30))
	}
	report(t, pattern, rep, res)
}

// report turns the guest's results into subtests of t.
func report(t *testing.T, pattern string, rep TestReport, res Result) {
	t.Helper()
	failed := false
	for _, tr := range rep.Tests {
		if tr.Status == Fail || tr.Status == Unfinished {
			failed = true
		}
		t.Run(tr.Name, func(t *testing.T) {
			if len(tr.Output) > 0 {
				t.Logf("inside the VM (%s):\n%s", tr.Elapsed, strings.Join(tr.Output, "\n"))
			}
			switch tr.Status {
			case Fail:
				t.Errorf("%s failed inside the cgroup v2 VM", tr.Name)
			case Unfinished:
				msg := fmt.Sprintf("%s did not finish inside the cgroup v2 VM (guest exit status %d)", tr.Name, res.ExitCode)
				if len(rep.Other) > 0 {
					msg += "; output after it:\n" + strings.Join(rep.Other, "\n")
				}
				t.Error(msg)
			case Skip:
				reason := "skipped inside the VM"
				if n := len(tr.Output); n > 0 {
					reason += ": " + strings.TrimSpace(tr.Output[n-1])
				}
				t.Skip(reason)
			}
		})
	}
	if (res.ExitCode != 0 || len(rep.Tests) == 0) && len(rep.Other) > 0 {
		t.Logf("guest output outside tests:\n%s", strings.Join(rep.Other, "\n"))
	}
	switch {
	case len(rep.Tests) == 0:
		t.Errorf("no guest test matched %q (guest exit status %d); console tail:\n%s",
			pattern, res.ExitCode, tail(res.Console, 20))
	case res.ExitCode != 0 && !failed:
		t.Errorf("the guest test binary exited with status %d although no test failed; console tail:\n%s",
			res.ExitCode, tail(res.Console, 20))
	}
}

// passEnv returns the VIGIL_* variables of this process (but not the
// harness's own) for the guest.
func passEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "VIGIL_") && k != GuestEnv && k != SkipEnv && k != TimeoutEnv && !strings.HasPrefix(k, "VIGIL_VM_") {
			env = append(env, kv)
		}
	}
	return env
}

// guestScript is run.sh for Run: the test binary's output goes to a file in
// the share, apart from kernel messages on the console.
func guestScript(dir, pattern string, timeout time.Duration, short bool, env []string) string {
	var b strings.Builder
	b.WriteString("set -u\n")
	fmt.Fprintf(&b, "export %s=1 HOME=/tmp/home GOCACHE=/tmp/gocache GOTMPDIR=/tmp TMPDIR=/tmp\n", GuestEnv)
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		fmt.Fprintf(&b, "export %s=%s\n", k, shellQuote(v))
	}
	b.WriteString("mkdir -p \"$HOME\" \"$GOCACHE\"\n")
	if rel, ok := strings.CutPrefix(dir, "/tmp/"); ok {
		// The guest's /tmp is a tmpfs; the host's original /tmp is visible
		// read-only at /run/host-tmp (see init.sh): put the package
		// directory back at its own path.
		fmt.Fprintf(&b, "mkdir -p %s && mount -o bind %s %s || exit 126\n",
			shellQuote(dir), shellQuote("/run/host-tmp/"+rel), shellQuote(dir))
	}
	fmt.Fprintf(&b, "cd %s || exit 126\n", shellQuote(dir))
	args := []string{
		guestBinary,
		"-test.run=" + pattern,
		"-test.v",
		"-test.count=1",
		"-test.timeout=" + timeout.Round(time.Second).String(),
	}
	if short {
		args = append(args, "-test.short")
	}
	if f := flag.Lookup("test.failfast"); f != nil && f.Value.String() == "true" {
		args = append(args, "-test.failfast")
	}
	for i, a := range args {
		args[i] = shellQuote(a)
	}
	fmt.Fprintf(&b, "%s >%s/test.out 2>&1\n", strings.Join(args, " "), GuestOutDir)
	return b.String()
}

// monitorScript starts a background loop in the guest that reports, every
// period, on the console: uptime, load, free memory, and each task running
// (R) or in uninterruptible sleep (D) with its kernel stack. Shell builtins
// only, apart from sleep and cat: a fork costs tens of ms under TCG.
func monitorScript(every time.Duration) string {
	return fmt.Sprintf(`(
while :; do
  sleep %d
  read up _ < /proc/uptime; read l1 l5 l15 rq _ < /proc/loadavg
  while read k v _; do case $k in MemAvailable:) avail=$v;; esac; done < /proc/meminfo
  echo "vm-monitor: up ${up}s load $l1 $l5 $l15 tasks $rq MemAvailable ${avail}kB"
  for p in /proc/[0-9]*; do
    read -r st < $p/stat 2>/dev/null || continue
    set -- $st
    case $3 in R|D) echo "vm-monitor: pid $1 $2 state $3"; cat $p/stack 2>/dev/null;; esac
  done
done >/dev/console 2>&1 ) &
`, int(every.Seconds()))
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

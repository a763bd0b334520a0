package vmtest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultTimeout bounds one VM run (boot + script) when Spec.Timeout is 0.
const DefaultTimeout = 5 * time.Minute

// GuestOutDir is where the writable share appears inside the guest.
const GuestOutDir = "/tmp/out"

// Spec describes one VM run.
type Spec struct {
	// Script is the body of run.sh, run by /bin/sh inside the guest, chrooted
	// into the host root (read-only). /tmp is a tmpfs; GuestOutDir is the
	// writable share. Its exit status is Result.ExitCode.
	Script string
	// Files are copied into the share before boot: host path -> name in the
	// share (seen as GuestOutDir/<name> in the guest; modes are kept).
	// The names run.sh and rc are reserved.
	Files map[string]string
	// Timeout bounds the VM run from QEMU start to power-off (DefaultTimeout
	// when 0). Waiting for the machine-wide VM lock does not count; ctx
	// bounds that.
	Timeout time.Duration
	// OutDir is the host directory to share; it must not contain ','. When
	// empty, Exec creates one and the caller removes Result.OutDir.
	OutDir string
	// Console, if set, receives a live copy of the serial console.
	Console io.Writer
	// Logf receives progress messages (package install, kernel download,
	// waiting for the VM lock). Nil discards them.
	Logf func(format string, args ...any)
}

// Result is what a VM run left behind.
type Result struct {
	// ExitCode is the exit status of run.sh inside the guest.
	ExitCode int
	// Console is the serial console (kernel messages and the script's
	// output that was not redirected), with \r removed.
	Console string
	// OutDir is the host path of the writable share: result files are there.
	OutDir string
	// Kernel is the guest kernel version.
	Kernel string
	// Boot is the host time from QEMU start to the guest starting run.sh.
	Boot time.Duration
	// Elapsed is the host time from QEMU start to its exit.
	Elapsed time.Duration
}

// Exec boots the cgroup v2 microVM, runs spec.Script inside it and returns
// its exit status. Only one VM runs at a time on the machine: Exec waits for
// an exclusive lock in CacheDir() first. A VM that outlives spec.Timeout or
// ctx is killed (ErrTimeout, with the console tail); QEMU is also killed if
// this process dies.
func Exec(ctx context.Context, spec Spec) (Result, error) {
	logf := spec.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	var res Result
	img, err := prepare(ctx, logf)
	if err != nil {
		return res, err
	}
	res.Kernel = img.Kernel
	res.OutDir = spec.OutDir
	if res.OutDir == "" {
		if res.OutDir, err = os.MkdirTemp("", "vigil-vm-"); err != nil {
			return res, fmt.Errorf("vmtest: %w", err)
		}
	}
	if strings.Contains(res.OutDir, ",") {
		return res, fmt.Errorf("vmtest: share %q contains ',' (a QEMU option separator)", res.OutDir)
	}
	if err := fillShare(res.OutDir, spec); err != nil {
		return res, err
	}
	unlock, err := lockFile(ctx, img.LockFile, logf, "VM")
	if err != nil {
		return res, err
	}
	defer unlock()

	timeout := spec.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	runCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	console, boot, runErr := runQEMU(runCtx, img, res.OutDir, spec.Console)
	res.Elapsed = time.Since(boot.start)
	res.Boot = boot.toScript
	res.Console = console
	if runCtx.Err() != nil {
		why := fmt.Sprintf("after %s", timeout)
		if ctx.Err() != nil {
			why = "(" + ctx.Err().Error() + ")"
		}
		return res, fmt.Errorf("vmtest: %w %s; console tail:\n%s", ErrTimeout, why, tail(console, 30))
	}
	rc, err := os.ReadFile(filepath.Join(res.OutDir, "rc"))
	if err != nil {
		return res, fmt.Errorf("vmtest: the VM stopped without reporting an exit status (qemu: %v); console tail:\n%s", runErr, tail(console, 30))
	}
	if res.ExitCode, err = strconv.Atoi(strings.TrimSpace(string(rc))); err != nil {
		return res, fmt.Errorf("vmtest: bad exit status file %q: %w", rc, err)
	}
	return res, nil
}

func fillShare(dir string, spec Spec) error {
	_ = os.Remove(filepath.Join(dir, "rc"))
	for src, name := range spec.Files {
		if name == "run.sh" || name == "rc" || filepath.IsAbs(name) || strings.Contains(name, "..") {
			return fmt.Errorf("vmtest: invalid share name %q for %s", name, src)
		}
		dst := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("vmtest: %w", err)
		}
		_ = os.Remove(dst)
		// A hard link is instant for a big test binary; copy across filesystems.
		if err := os.Link(src, dst); err != nil {
			if err := copyFile(src, dst); err != nil {
				return fmt.Errorf("vmtest: copy %s into the share: %w", src, err)
			}
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "run.sh"), []byte(spec.Script), 0o755); err != nil {
		return fmt.Errorf("vmtest: %w", err)
	}
	return nil
}

type bootTimes struct {
	start    time.Time
	toScript time.Duration
}

// runQEMU runs the VM until it powers off or ctx ends, and returns the
// console.
func runQEMU(ctx context.Context, img *image, outDir string, live io.Writer) (string, bootTimes, error) {
	args := []string{
		// thread=single: the two vCPUs run in one host thread, in turn.
		// With multi-threaded TCG the guest intermittently stopped for
		// good under a loop of starting and SIGKILLing a multi-threaded
		// process (the whole-binary kill -9 test): the console showed an
		// RCU stall with one CPU idle and the grace-period kthread starved
		// on the other, i.e. a CPU waiting forever on a cross-CPU call
		// (TLB shootdown at exit) that never ran. 200 kills pass with it.
		"-M", "microvm", "-accel", "tcg,thread=single", "-cpu", "max", "-smp", "2", "-m", "1024",
		"-nodefaults", "-nographic", "-serial", "stdio", "-no-reboot",
		"-kernel", img.Vmlinux, "-initrd", img.Initramfs,
		// The guest TSC under TCG runs at the host rate; giving it avoids a
		// silent boot hang when PIT calibration fails (microvm has no HPET).
		// tsc=reliable keeps it as the clocksource: the boot-time sync
		// check otherwise marks it unstable under emulation and the guest
		// falls back to refined-jiffies, whose 4 ms steps every guest-side
		// timing (benchmarks, test deadlines) then inherits.
		"-append", fmt.Sprintf("console=ttyS0 quiet panic=-1 tsc_early_khz=%d tsc=reliable clocksource=tsc", hostTSCkHz()),
		"-fsdev", "local,id=host,path=/,security_model=none,readonly=on,multidevs=remap",
		"-device", "virtio-9p-device,fsdev=host,mount_tag=host",
		"-fsdev", "local,id=out,path=" + outDir + ",security_model=none",
		"-device", "virtio-9p-device,fsdev=out,mount_tag=out",
	}
	var (
		console consoleBuffer
		boot    bootTimes
		waitErr error
	)
	console.live = live
	console.onStart = func() { boot.toScript = time.Since(boot.start) }

	// Pdeathsig is tied to the thread that forks; keep that thread alive
	// (locked to this goroutine) until QEMU is reaped, so QEMU dies with us
	// even when the test binary panics or is killed.
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		cmd := exec.CommandContext(ctx, img.QEMU, args...)
		cmd.Stdin = nil
		cmd.Stdout = &console
		cmd.Stderr = &console
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = 5 * time.Second
		boot.start = time.Now()
		if err := cmd.Start(); err != nil {
			waitErr = fmt.Errorf("vmtest: start %s: %w", img.QEMU, err)
			return
		}
		waitErr = cmd.Wait()
		// Whatever QEMU left in its group goes too.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}()
	<-done
	return console.String(), boot, waitErr
}

// hostTSCkHz reads the CPU clock from /proc/cpuinfo (2 GHz if unknown).
func hostTSCkHz() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == "cpu MHz" {
			if mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && mhz > 0 {
				return int(mhz * 1000)
			}
		}
	}
	return 2000000
}

// maxConsole bounds the console kept in memory.
const maxConsole = 8 << 20

// consoleBuffer collects the serial console, drops \r, copies it to live and
// notices the VM-START line init prints before running the script.
type consoleBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	line    []byte
	live    io.Writer
	onStart func()
	started bool
}

func (c *consoleBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	clean := bytes.ReplaceAll(p, []byte("\r"), nil)
	if c.buf.Len() > maxConsole {
		// A runaway guest: keep the newest half (the tail is what errors show).
		keep := append([]byte("[console truncated]\n"), c.buf.Bytes()[c.buf.Len()/2:]...)
		c.buf.Reset()
		c.buf.Write(keep)
	}
	c.buf.Write(clean)
	if c.live != nil {
		_, _ = c.live.Write(clean)
	}
	if !c.started {
		c.line = append(c.line, clean...)
		sc := bufio.NewScanner(bytes.NewReader(c.line))
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "VM-START") {
				c.started = true
				c.line = nil
				if c.onStart != nil {
					c.onStart()
				}
				break
			}
		}
		if i := bytes.LastIndexByte(c.line, '\n'); i >= 0 {
			c.line = c.line[i+1:]
		}
	}
	return len(p), nil
}

func (c *consoleBuffer) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	vmtest "github.com/vigil-agent/vigil/test/vm"
)

// runEarlyOOMHelper runs inside the v2 microVM: it allocates page by page
// until MemAvailable drops below pct% of MemTotal (rereading /proc/meminfo
// every 64 pages), stops there, and waits for earlyoom's SIGTERM. It prints
// "<crossing ns> <SIGTERM ns>" (Unix ns), or "<crossing ns> never".
func runEarlyOOMHelper(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "vmhelper: want the percentage")
		return 2
	}
	pct, err := strconv.ParseFloat(args[0], 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmhelper:", err)
		return 2
	}
	term := make(chan time.Time, 1)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	go func() { <-sigs; term <- time.Now() }()
	total, _ := meminfo("MemTotal:")
	threshold := uint64(pct / 100 * float64(total))
	var chunks [][]byte
	const page, chunk = 4096, 1 << 20
	var crossed time.Time
	for crossed.IsZero() {
		b := make([]byte, chunk)
		for i := 0; i < chunk; i += page {
			b[i] = 1
			if (i/page)%64 == 0 {
				if avail, _ := meminfo("MemAvailable:"); avail < threshold {
					crossed = time.Now()
					break
				}
			}
		}
		chunks = append(chunks, b)
		select {
		case t := <-term:
			fmt.Printf("early %d\n", t.UnixNano())
			return 0
		default:
		}
	}
	select {
	case t := <-term:
		fmt.Printf("%d %d\n", crossed.UnixNano(), t.UnixNano())
	case <-time.After(30 * time.Second):
		fmt.Printf("%d never\n", crossed.UnixNano())
	}
	chunks[0][0] = 2
	return 0
}

// meminfo returns a /proc/meminfo field in bytes.
func meminfo(key string) (uint64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == key {
			kb, err := strconv.ParseUint(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("meminfo: no %s", key)
}

// cmdLatencyVM measures earlyoom in the cgroup v2 microVM (test/vm): a
// helper drives MemAvailable under earlyoom's threshold, and the time to
// earlyoom's SIGTERM is taken from the helper's side.
func cmdLatencyVM(ctx context.Context, log *slog.Logger, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("latency-vm", flag.ContinueOnError)
	trials := fs.Int("trials", 40, "crossings (each allocates about half the guest's 1 GiB under TCG)")
	pct := fs.Float64("m", 50, "earlyoom -m: SIGTERM when MemAvailable is below this percentage")
	if err := fs.Parse(args); err != nil {
		return err
	}
	earlyoom, err := earlyOOMBinary(ctx)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "vigil-bench-vm-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	root, err := repoRoot()
	if err != nil {
		return err
	}
	bin := filepath.Join(work, "bench")
	if _, err := goBuild(ctx, log, root, bin, "./bench"); err != nil {
		return err
	}
	script := fmt.Sprintf(`%[1]s -m %[2]g,1 -s 100,100 -r 0 --prefer '^bench$' > %[3]s/earlyoom.log 2>&1 &
EO=$!
sleep 2
i=0
while [ $i -lt %[4]d ]; do %[3]s/bench vmhelper %[2]g >> %[3]s/trials.txt; i=$((i+1)); done
kill $EO
`, earlyoom, *pct, vmtest.GuestOutDir, *trials)
	res, err := vmtest.Exec(ctx, vmtest.Spec{Script: script, Files: map[string]string{bin: "bench"},
		Timeout: time.Duration(*trials)*15*time.Second + time.Minute, Logf: func(f string, a ...any) { log.Info(fmt.Sprintf(f, a...)) }})
	if res.OutDir != "" {
		defer os.RemoveAll(res.OutDir)
	}
	if err != nil {
		return err
	}
	b, _ := os.ReadFile(filepath.Join(res.OutDir, "trials.txt"))
	var lat []time.Duration
	never, early := 0, 0
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		if f[0] == "early" {
			early++
			continue
		}
		c, err1 := strconv.ParseInt(f[0], 10, 64)
		t, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 != nil || err2 != nil {
			never++
			continue
		}
		lat = append(lat, time.Duration(t-c))
	}
	d := distOf(lat)
	fmt.Fprintf(stdout, "earlyoom 1.7 in the cgroup v2 microVM (TCG, 2 vCPU, 1 GiB), -m %g: MemAvailable crossing → SIGTERM received\n\n", *pct)
	fmt.Fprintln(stdout, "| observer | trials | p50 | p99 | max |")
	fmt.Fprintln(stdout, "|---|---:|---:|---:|---:|")
	fmt.Fprintf(stdout, "| earlyoom (v2 microVM) | %d | %s | %s | %s |\n", d.N, fmtDur(d.P50), fmtDur(d.P99), fmtDur(d.Max))
	fmt.Fprintf(stdout, "\nNo SIGTERM within 30 s: %d; SIGTERM before the helper saw the crossing: %d; guest exit %d, boot %v, elapsed %v\n",
		never, early, res.ExitCode, res.Boot, res.Elapsed)
	return nil
}

// earlyOOMBinary is Debian's earlyoom, unpacked (never installed: its
// package would start a host-wide service) into the bench cache. The guest
// sees the host's root read-only, so the path works there too.
func earlyOOMBinary(ctx context.Context) (string, error) {
	cache, err := cacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "earlyoom-1.7")
	bin := filepath.Join(dir, "usr", "bin", "earlyoom")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	tmp, err := os.MkdirTemp("", "vigil-bench-deb-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	dl := exec.CommandContext(ctx, "apt-get", "download", "earlyoom")
	dl.Dir = tmp
	if b, err := dl.CombinedOutput(); err != nil {
		return "", fmt.Errorf("apt-get download earlyoom (run apt-get update first?): %w: %s", err, b)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "earlyoom_*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("apt-get download earlyoom left %d packages", len(debs))
	}
	if b, err := exec.CommandContext(ctx, "dpkg", "-x", debs[0], dir).CombinedOutput(); err != nil {
		return "", fmt.Errorf("dpkg -x %s: %w: %s", debs[0], err, b)
	}
	return bin, nil
}

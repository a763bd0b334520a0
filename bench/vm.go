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
	"slices"
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

// cmdLatencyVM measures earlyoom and oomd in the cgroup v2 microVM
// (test/vm), one after the other in one boot. earlyoom: a helper drives
// MemAvailable under earlyoom's threshold and stamps earlyoom's SIGTERM
// itself. oomd: a helper in a child cgroup with memory.max drives its
// memory.current above oomd's memory_above threshold; oomd SIGKILLs it and
// its parent stamps the death.
func cmdLatencyVM(ctx context.Context, log *slog.Logger, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("latency-vm", flag.ContinueOnError)
	trials := fs.Int("trials", 40, "crossings per peer (each allocates a few hundred MiB under TCG)")
	peerList := fs.String("peers", "earlyoom,oomd", "peers to measure, comma-separated: earlyoom, oomd")
	pct := fs.Float64("m", 50, "earlyoom -m: SIGTERM when MemAvailable is below this percentage")
	limitMiB := fs.Uint64("oomd-limit", 256, "memory.max of each oomd trial cgroup, MiB")
	ratio := fs.Float64("oomd-ratio", 0.9, "oomd's memory_above threshold as a fraction of memory.max (rounded down to KiB)")
	interval := fs.Int("oomd-interval", 1, "oomd --interval, seconds (oomd 0.5's own default is 5; Debian's service passes 1)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	peers := map[string]bool{}
	for _, p := range strings.Split(*peerList, ",") {
		if p != "earlyoom" && p != "oomd" {
			return fmt.Errorf("latency-vm: unknown peer %q (want earlyoom, oomd)", p)
		}
		peers[p] = true
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
	files := map[string]string{bin: "bench"}
	var script strings.Builder
	// The guest's clock source sets the resolution of every stamp.
	fmt.Fprintf(&script, "cat /sys/devices/system/clocksource/clocksource0/current_clocksource > %s/clocksource\n", vmtest.GuestOutDir)
	if peers["earlyoom"] {
		earlyoom, err := earlyOOMBinary(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(&script, `%[1]s -m %[2]g,1 -s 100,100 -r 0 --prefer '^bench$' > %[3]s/earlyoom.log 2>&1 &
EO=$!
sleep 2
i=0
while [ $i -lt %[4]d ]; do %[3]s/bench vmhelper %[2]g >> %[3]s/earlyoom-trials.txt; i=$((i+1)); done
kill $EO
`, earlyoom, *pct, vmtest.GuestOutDir, *trials)
	}
	limit := *limitMiB << 20
	thresholdKiB := uint64(*ratio*float64(limit)) >> 10
	if peers["oomd"] {
		oomd, libPath, err := oomdBinary(ctx)
		if err != nil {
			return err
		}
		cfg, err := oomdConfig(thresholdKiB)
		if err != nil {
			return err
		}
		cfgFile := filepath.Join(work, "oomd.json")
		if err := os.WriteFile(cfgFile, cfg, 0o644); err != nil {
			return err
		}
		files[cfgFile] = "oomd.json"
		fmt.Fprintf(&script, `LD_LIBRARY_PATH=%[1]s %[2]s --interval %[3]d --config %[4]s/oomd.json --kmsg-override %[4]s/oomd-kmsg.log > %[4]s/oomd.log 2>&1 &
OD=$!
sleep 2
if kill -0 $OD; then
  %[4]s/bench vmoomd -trials %[5]d -limit %[6]d -threshold %[7]d -interval %[3]ds > %[4]s/oomd-trials.txt 2>> %[4]s/oomd.log
  sleep 1  # let oomd finish logging the last kill
  kill $OD
  %[4]s/bench vmoomd -self-kill -trials %[5]d -limit %[6]d -threshold %[7]d > %[4]s/reap-trials.txt 2>> %[4]s/oomd.log
else
  echo "bench: oomd exited within 2 s of its start" >> %[4]s/oomd.log
fi
`, libPath, oomd, *interval, vmtest.GuestOutDir, *trials, limit, thresholdKiB<<10)
	}
	res, err := vmtest.Exec(ctx, vmtest.Spec{Script: script.String(), Files: files,
		Timeout: time.Duration(len(peers)**trials)*35*time.Second + 2*time.Minute, Logf: func(f string, a ...any) { log.Info(fmt.Sprintf(f, a...)) }})
	if res.OutDir != "" {
		defer os.RemoveAll(res.OutDir)
	}
	if err != nil {
		return err
	}
	clock, _ := os.ReadFile(filepath.Join(res.OutDir, "clocksource"))
	fmt.Fprintf(stdout, "Crossing → signal in the cgroup v2 microVM (TCG, 2 vCPU, 1 GiB, kernel %s, clock source %s), %d trials per peer\n\n",
		res.Kernel, strings.TrimSpace(string(clock)), *trials)
	fmt.Fprintln(stdout, "| observer | trials | p50 | p99 | max |")
	fmt.Fprintln(stdout, "|---|---:|---:|---:|---:|")
	var notes []string
	for _, p := range []struct{ name, row, file, note string }{
		{"earlyoom", fmt.Sprintf("earlyoom 1.7, `-m %g,1`: MemAvailable crossing → SIGTERM received", *pct), "earlyoom-trials.txt",
			"earlyoom: no SIGTERM within 30 s: %d; SIGTERM before the helper saw the crossing: %d; other: %d"},
		{"oomd", fmt.Sprintf("oomd %s, `--interval %d`, memory_above %d KiB (%g × memory.max %d MiB): memory.current crossing → SIGKILLed helper reaped", oomdVersion, *interval, thresholdKiB, *ratio, *limitMiB), "oomd-trials.txt",
			"oomd: no SIGKILL within 30 s: %d; killed before the helper saw the crossing: %d; died another way (exit, other signal, kernel OOM kill): %d"},
		{"oomd", "the same helper SIGKILLed by its parent (oomd stopped) → reaped: the exit part of the oomd row", "reap-trials.txt",
			"parent's own kills: not reaped within 30 s: %d; -: %d; died another way: %d"},
	} {
		if !peers[p.name] {
			continue
		}
		b, _ := os.ReadFile(filepath.Join(res.OutDir, p.file))
		tr := parseVMTrials(b)
		d := distOf(tr.lat)
		fmt.Fprintf(stdout, "| %s | %d | %s | %s | %s |\n", p.row, d.N, fmtDur(d.P50), fmtDur(d.P99), fmtDur(d.Max))
		notes = append(notes, fmt.Sprintf(p.note, tr.never, tr.early, tr.other)+"; "+spread(tr.lat))
		if d.N == 0 {
			logTail, _ := os.ReadFile(filepath.Join(res.OutDir, p.name+".log"))
			notes = append(notes, fmt.Sprintf("%s measured nothing; the tail of its log:\n%s", p.name, tailLines(string(logTail), 20)))
		}
	}
	if peers["oomd"] {
		kills, _ := os.ReadFile(filepath.Join(res.OutDir, "oomd-kmsg.log"))
		lines := strings.Split(strings.TrimSpace(string(kills)), "\n")
		notes = append(notes, fmt.Sprintf("oomd's kill log (--kmsg-override): %d lines, the last: %s", len(lines), lines[len(lines)-1]))
	}
	fmt.Fprintf(stdout, "\n%s\nguest exit %d, boot %v, elapsed %v\n", strings.Join(notes, "\n"), res.ExitCode, res.Boot, res.Elapsed)
	return nil
}

// vmTrials is what the guest helpers reported, one line per trial.
type vmTrials struct {
	lat                 []time.Duration
	never, early, other int
}

// parseVMTrials reads "<crossing ns> <signal ns>", "<crossing ns> never",
// "early <ns>" and "<crossing ns> other <why>" lines.
func parseVMTrials(b []byte) vmTrials {
	var tr vmTrials
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) < 2:
		case f[0] == "early":
			tr.early++
		case f[1] == "never":
			tr.never++
		case f[1] == "other":
			tr.other++
		default:
			c, err1 := strconv.ParseInt(f[0], 10, 64)
			t, err2 := strconv.ParseInt(f[1], 10, 64)
			if err1 != nil || err2 != nil {
				tr.other++
				continue
			}
			tr.lat = append(tr.lat, time.Duration(t-c))
		}
	}
	return tr
}

// spread is min, p25, p75 and p90 (nearest rank, as in the tables).
func spread(v []time.Duration) string {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return "no samples"
	}
	return fmt.Sprintf("min %s, p25 %s, p75 %s, p90 %s", fmtDur(s[0]), fmtDur(percentile(s, .25)), fmtDur(percentile(s, .75)), fmtDur(percentile(s, .9)))
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// earlyOOMBinary is Debian's earlyoom unpacked into the bench cache.
func earlyOOMBinary(ctx context.Context) (string, error) {
	dir, err := cachedDeb(ctx, "earlyoom", "1.7")
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "usr", "bin", "earlyoom"), nil
}

// cachedDeb is <bench cache>/<pkg>-<version>: Debian's package unpacked
// there once (never installed: earlyoom's and oomd's packages would start
// host-wide services). The guest sees the host's root read-only, so paths
// under it work there too.
func cachedDeb(ctx context.Context, pkg, version string) (string, error) {
	cache, err := cacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, pkg+"-"+version)
	if _, err := os.Stat(dir); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	staging, err := os.MkdirTemp(cache, "."+pkg+"-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(staging)
	if err := unpackDeb(ctx, pkg, version, staging); err != nil {
		return "", err
	}
	if err := os.Rename(staging, dir); err != nil {
		return "", fmt.Errorf("cache %s: %w", pkg, err)
	}
	return dir, nil
}

// unpackDeb downloads Debian's pkg with apt-get and unpacks it into dir
// with dpkg -x; a non-empty version must prefix the package's version.
func unpackDeb(ctx context.Context, pkg, version, dir string) error {
	tmp, err := os.MkdirTemp("", "vigil-bench-deb-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	dl := exec.CommandContext(ctx, "apt-get", "download", pkg)
	dl.Dir = tmp
	if b, err := dl.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get download %s (run apt-get update first?): %w: %s", pkg, err, b)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, pkg+"_*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("apt-get download %s left %d packages", pkg, len(debs))
	}
	// <pkg>_<version>_<arch>.deb, an epoch's ':' written as %3a.
	if got := strings.Split(filepath.Base(debs[0]), "_")[1]; !strings.HasPrefix(got, version) {
		return fmt.Errorf("apt-get download %s gave version %s, want %s", pkg, got, version)
	}
	if b, err := exec.CommandContext(ctx, "dpkg", "-x", debs[0], dir).CombinedOutput(); err != nil {
		return fmt.Errorf("dpkg -x %s: %w: %s", debs[0], err, b)
	}
	return nil
}

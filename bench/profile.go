package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// cmdProfile runs vigil (with pprof) over N cgroups under a 1 Hz scrape and
// saves a CPU profile of the measured window and a heap profile at its end.
func cmdProfile(ctx context.Context, log *slog.Logger, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("profile", flag.ContinueOnError)
	n := fs.Int("n", 1000, "cgroups")
	dur := fs.Duration("duration", 30*time.Second, "CPU profile length")
	out := fs.String("out", "bench-profile", "directory for cpu.pprof, heap.pprof and the vigil binary")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	root, err := repoRoot()
	if err != nil {
		return err
	}
	bin, _ := filepath.Abs(filepath.Join(*out, "vigil"))
	if _, err := goBuild(ctx, log, root, bin, "./bench/vigilprof"); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "vigil-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	f, err := newFarm()
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.addChildren(*n); err != nil {
		return err
	}
	addr, err := freePort()
	if err != nil {
		return err
	}
	paddr, err := freePort()
	if err != nil {
		return err
	}
	cfg := filepath.Join(work, "vigil.yaml")
	if err := os.WriteFile(cfg, []byte("remediation:\n  journal:\n    path: "+filepath.Join(work, "journal.db")+"\n"), 0o644); err != nil {
		return err
	}
	proc, err := startPeer(peer{Name: "vigil", Argv: []string{bin, "--config", cfg, "--listen", addr, "--tick", "1s"},
		Env: []string{"VIGIL_BENCH_PPROF=" + paddr}, Dir: work}, filepath.Join(work, "vigil.log"))
	if err != nil {
		return err
	}
	defer proc.stop()
	sc := newScraper(addr, "/metrics")
	scrapeCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-scrapeCtx.Done():
				return
			case <-t.C:
				_, _, _, _ = sc.scrape(scrapeCtx)
			}
		}
	}()
	time.Sleep(5 * time.Second) // start-up and first discovery
	get := func(path, file string, timeout time.Duration) error {
		c := &http.Client{Timeout: timeout}
		resp, err := c.Get("http://" + paddr + path)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		fh, err := os.Create(filepath.Join(*out, file))
		if err != nil {
			return err
		}
		defer fh.Close()
		_, err = io.Copy(fh, resp.Body)
		return err
	}
	log.Info("profiling", "cgroups", *n, "seconds", dur.Seconds())
	if err := get(fmt.Sprintf("/debug/pprof/profile?seconds=%d", int(dur.Seconds())), "cpu.pprof", *dur+30*time.Second); err != nil {
		return err
	}
	if err := get("/debug/pprof/heap?gc=1", "heap.pprof", 30*time.Second); err != nil {
		return err
	}
	rss, hwm, _ := memStatus(proc.pid())
	fmt.Fprintf(stdout, "vigil over %d bench cgroups: RSS %.1f MiB (peak %.1f MiB)\n", *n, mib(rss), mib(hwm))
	for _, args := range [][]string{
		{"tool", "pprof", "-top", "-nodecount=25", bin, filepath.Join(*out, "cpu.pprof")},
		{"tool", "pprof", "-top", "-sample_index=inuse_space", "-nodecount=25", bin, filepath.Join(*out, "heap.pprof")},
	} {
		b, err := exec.CommandContext(ctx, "go", args...).CombinedOutput()
		fmt.Fprintf(stdout, "\n$ go %v\n%s", args[1:4], b)
		if err != nil {
			return err
		}
	}
	return nil
}

// Command scenarios runs vigil's memory-incident scenarios (slow leak,
// sudden spike, page-cache thrash, allocation storm, crash loop, node
// pressure) on real cgroups, side by side under no agent, earlyoom, oomd and
// vigil with its shipped rules, on cgroup v1 (this host) and cgroup v2 (the
// test/vm microVM), and writes the results table (SCENARIOS.md).
//
//	go run ./test/scenarios -matrix                       # everything, writes SCENARIOS.md
//	go run ./test/scenarios -matrix -scenarios leak,thrash -agents none,vigil -cgroups 1
//	scenarios cell -scenario leak -agent vigil -vigil PATH # one cell here, JSON on stdout
//
// Every scenario cgroup is created under this process's own cgroup and
// removed at the end, with every process started in it.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if os.Getenv(workEnv) == "1" && len(os.Args) > 1 && os.Args[1] == "work" {
		os.Exit(runWork(os.Args[2:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if len(os.Args) > 1 && os.Args[1] == "cell" {
		if err := cmdCell(ctx, log, os.Args[2:]); err != nil {
			log.Error("cell", "err", err)
			os.Exit(1)
		}
		return
	}
	if err := cmdMatrix(ctx, log, os.Args[1:]); err != nil {
		log.Error("matrix", "err", err)
		os.Exit(1)
	}
}

// cmdCell runs one cell on this machine and prints its CellResult as JSON.
func cmdCell(ctx context.Context, log *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("cell", flag.ContinueOnError)
	var o cellOptions
	fs.StringVar(&o.Scenario, "scenario", "", "scenario name")
	fs.StringVar(&o.Agent, "agent", "none", "none, earlyoom, oomd or vigil")
	fs.StringVar(&o.Vigil, "vigil", "", "vigil binary")
	fs.StringVar(&o.EarlyOOM, "earlyoom", "", "earlyoom binary")
	fs.StringVar(&o.OOMD, "oomd", "", "oomd binary")
	fs.StringVar(&o.Rules, "rules", "", "vigil rules directory that replaces the shipped rules")
	fs.StringVar(&o.DataDir, "data", os.TempDir(), "directory for the thrash file (not tmpfs)")
	fs.StringVar(&o.WorkDir, "work", "", "directory for configs, logs and the journal (default: a temporary one)")
	fs.DurationVar(&o.Window, "window", 0, "override the scenario's window")
	fs.BoolVar(&o.OwnView, "own-view", true, "cgroup v1: run vigil with host_root set to a view of this process's own cgroup subtree")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.WorkDir == "" {
		d, err := os.MkdirTemp("", "vigil-scenario-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		o.WorkDir = d
	} else if err := os.MkdirAll(o.WorkDir, 0o755); err != nil {
		return err
	}
	o.Log = log
	start := time.Now()
	res, err := runCell(ctx, o)
	if err != nil {
		res.Skipped = "error: " + err.Error()
	}
	log.Info("cell", "took", time.Since(start).Round(time.Second))
	enc := json.NewEncoder(os.Stdout)
	return enc.Encode(res)
}

// Command bench measures vigil against its peers on this machine: resource
// cost side by side with cAdvisor and node_exporter over N real cgroups
// (sidebyside), detection and action latency of a real memory crossing
// against 1 s and 10 s pollers (latency), and the Go micro-benchmarks of
// vigil's packages (micro). BENCHMARKS.md at the repository root shows the
// commands and the results.
//
// Every cgroup it creates is a child of its own memory cgroup, named
// vigil-bench-<random>; every process it starts dies with it
// (PR_SET_PDEATHSIG) and is killed by pid when a run ends or on SIGINT and
// SIGTERM. Peer builds are cached in $XDG_CACHE_HOME/vigil-test/bench.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if spec, ok := os.LookupEnv(helperEnv); ok {
		os.Exit(runHelper(spec))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: bench sidebyside|latency|latency-vm|micro|profile [flags]  (-h for each)")
		return 2
	}
	var err error
	switch args[0] {
	case "sidebyside":
		err = cmdSideBySide(ctx, log, args[1:], stdout)
	case "latency":
		err = cmdLatency(ctx, log, args[1:], stdout)
	case "latency-vm":
		err = cmdLatencyVM(ctx, log, args[1:], stdout)
	case "vmhelper":
		return runEarlyOOMHelper(args[1:])
	case "vmoomd":
		return runOOMDTrials(args[1:])
	case "profile":
		err = cmdProfile(ctx, log, args[1:], stdout)
	case "micro":
		err = cmdMicro(ctx, log, args[1:], stdout)
	default:
		fmt.Fprintf(stderr, "bench: unknown command %q\n", args[0])
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	return 0
}

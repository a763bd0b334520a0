// Command vigil is a per-node memory observability and auto-recovery agent:
// it watches cgroup and node memory, evaluates rules, acts before the kernel
// OOM killer does, and journals every action. See README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/vigil-agent/vigil/agent"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run parses the top-level flags and dispatches to the command named by the
// first argument. It returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("vigil", flag.ContinueOnError)
	fs.SetOutput(stderr)
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() { usage(stderr, fs) }
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			usage(stdout, fs)
			return 0
		}
		return 2
	}
	if *showVersion {
		return agent.LookupCommand("version").Run(ctx, nil, stdout, stderr)
	}
	if fs.NArg() == 0 {
		usage(stderr, fs)
		return 2
	}
	name, rest := fs.Arg(0), fs.Args()[1:]
	if name == "help" {
		if len(rest) == 0 {
			usage(stdout, fs)
			return 0
		}
		name, rest = rest[0], []string{"--help"}
	}
	cmd := agent.LookupCommand(name)
	if cmd == nil {
		fmt.Fprintf(stderr, "vigil: unknown command %q\n\n", name)
		usage(stderr, fs)
		return 2
	}
	return cmd.Run(ctx, rest, stdout, stderr)
}

func usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintln(w, "vigil watches cgroup and node memory, evaluates rules and acts before the kernel OOM killer.")
	fmt.Fprintln(w, "\nUsage: vigil [--help] [--version] <command> [flags]\n\nCommands:")
	for _, c := range agent.Commands() {
		fmt.Fprintf(w, "  %-14s %s\n", c.Name, c.Summary)
	}
	fmt.Fprintln(w, "\nRun `vigil <command> --help` for a command's flags.")
}

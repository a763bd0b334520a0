package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func init() {
	registerCommand(&Command{
		Name:    "run",
		Summary: "run the agent: collect every tick, evaluate rules, remediate, serve /metrics and the API",
		Run:     runCommand,
	})
}

func runCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := NewFlagSet("run", "[--config FILE] [--host-root DIR] [--listen ADDR] [--tick D] [flags]", stderr)
	flags := addConfigFlags(fs, true)
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(stderr, fs, "unexpected argument %q", fs.Arg(0))
	}
	cfg, err := flags.load()
	if err != nil {
		fmt.Fprintln(stderr, "vigil run:", err)
		return 1
	}
	level := new(slog.LevelVar)
	level.Set(ParseLevel(cfg.Log.Level))
	logger := NewLogger(stderr, cfg.Log.Format, level)
	a, err := New(Options{Config: cfg, Reload: flags.load, Logger: logger, LogLevel: level})
	if err != nil {
		fmt.Fprintln(stderr, "vigil run:", err)
		return 1
	}

	// SIGHUP reloads; the goroutine ends with ctx.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				logger.Info("SIGHUP: reloading config", "file", flags.file)
				a.Reload()
			}
		}
	}()

	if err := a.Run(ctx); err != nil {
		logger.Error("vigil run failed", "err", err)
		return 1
	}
	return 0
}

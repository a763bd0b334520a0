package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/vigil-agent/vigil/collectors"
)

func init() {
	registerCommand(&Command{
		Name:    "record",
		Summary: "write this host's snapshot stream to a file (JSON lines) for `vigil rules replay`",
		Run:     recordCommand,
	})
}

func recordCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := NewFlagSet("record", "--out FILE [--duration D] [--count N] [--tick D] [--host-root DIR]", stderr)
	flags := addConfigFlags(fs, false)
	out := fs.String("out", "", "output `file` (\"-\" for stdout); one JSON snapshot per line")
	duration := fs.Duration("duration", 0, "stop after this long (0: until interrupted)")
	count := fs.Int("count", 0, "stop after this many snapshots (0: no limit)")
	tick := fs.Duration("tick", 0, "interval between snapshots (default: the config's tick, 1s)")
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(stderr, fs, "unexpected argument %q", fs.Arg(0))
	}
	if *out == "" {
		return usageError(stderr, fs, "--out is required")
	}
	if *duration < 0 || *tick < 0 || *count < 0 {
		return usageError(stderr, fs, "negative duration, count or tick")
	}
	cfg, err := flags.load()
	if err != nil {
		fmt.Fprintln(stderr, "vigil record:", err)
		return 1
	}
	if *tick > 0 {
		cfg.Tick = *tick
	}
	logger := NewLogger(stderr, "text", levelVar(slog.LevelWarn))
	s, err := newSampler(cfg, logger)
	if err != nil {
		fmt.Fprintln(stderr, "vigil record:", err)
		return 1
	}
	defer s.close()

	var w io.Writer = stdout
	if *out != "-" {
		f, err := os.Create(*out)
		if err != nil {
			fmt.Fprintln(stderr, "vigil record:", err)
			return 1
		}
		defer f.Close()
		w = f
	}
	n, err := record(ctx, s, cfg.Tick, cfg.DiscoveryInterval, *duration, *count, w)
	if err != nil {
		fmt.Fprintln(stderr, "vigil record:", err)
		return 1
	}
	fmt.Fprintf(stderr, "vigil record: %d snapshots written to %s\n", n, *out)
	return 0
}

// record writes one JSON line per tick until duration has passed or count
// snapshots are written (0: no limit), or ctx ends. Each line is flushed, so an interrupted recording
// holds only whole snapshots.
func record(ctx context.Context, s *sampler, tick, discovery, duration time.Duration, count int, w io.Writer) (int, error) {
	bw := bufio.NewWriterSize(w, 1<<20)
	enc := json.NewEncoder(bw)
	var snap collectors.Snapshot
	start := time.Now()
	var deadline <-chan time.Time
	if duration > 0 {
		t := time.NewTimer(duration)
		defer t.Stop()
		deadline = t.C
	}
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	var nextDiscovery time.Time
	n := 0
	for now := start; ; {
		if !now.Before(nextDiscovery) {
			if _, _, err := s.discover(); err != nil {
				return n, err
			}
			nextDiscovery = now.Add(discovery)
		}
		if errs := s.sweep(now, &snap); errs.err() != nil {
			return n, errs.err()
		}
		if err := enc.Encode(&snap); err != nil {
			return n, err
		}
		if err := bw.Flush(); err != nil {
			return n, err
		}
		n++
		if count > 0 && n >= count {
			return n, nil
		}
		select {
		case <-ctx.Done():
			return n, nil
		case <-deadline:
			return n, nil
		case now = <-ticker.C:
		}
	}
}

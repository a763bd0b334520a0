package agent

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/vigil-agent/vigil/agent/config"
)

// parseFlags parses args and reports whether the command should go on;
// when it should not, code is the exit status (0 for --help).
func parseFlags(fs *flag.FlagSet, args []string) (ok bool, code int) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return false, 0
		}
		return false, 2
	}
	return true, 0
}

// configFlags are the flags every command that reads the host shares:
// --config plus the overrides. Flags override the file; only flags given
// on the command line override.
type configFlags struct {
	fs       *flag.FlagSet
	full     bool
	file     string
	hostRoot string
	listen   string
	tick     time.Duration
	disc     time.Duration
	logLevel string
	logFmt   string
	dryRun   bool
}

// addConfigFlags defines --config and --host-root; full adds the flags of
// `vigil run`.
func addConfigFlags(fs *flag.FlagSet, full bool) *configFlags {
	d := config.Default()
	f := &configFlags{fs: fs, full: full}
	fs.StringVar(&f.file, "config", "", "config `file` (default: the embedded default, which observes everything and acts on nothing)")
	fs.StringVar(&f.hostRoot, "host-root", d.HostRoot, "`dir` where the host's / is mounted (/host in a DaemonSet)")
	if full {
		fs.StringVar(&f.listen, "listen", d.Listen, "HTTP `address` for /metrics, /healthz, /readyz and /api")
		fs.DurationVar(&f.tick, "tick", d.Tick, "collection `interval`")
		fs.DurationVar(&f.disc, "discovery-interval", d.DiscoveryInterval, "how often to look for new and removed cgroups")
		fs.StringVar(&f.logLevel, "log-level", d.Log.Level, "log `level`: debug, info, warn, error")
		fs.StringVar(&f.logFmt, "log-format", d.Log.Format, "log `format`: text or json")
		fs.BoolVar(&f.dryRun, "dry-run", d.Remediation.DryRun, "record decisions without acting (overrides remediation.dry_run)")
	}
	return f
}

// load reads the config file (or the default) and applies the flags that
// were set. It is called again on every reload.
func (f *configFlags) load() (*config.Config, error) {
	cfg := config.Default()
	if f.file != "" {
		var err error
		if cfg, err = config.Load(f.file); err != nil {
			return nil, err
		}
	}
	f.fs.Visit(func(fl *flag.Flag) {
		name := fl.Name
		if !f.full && name != "host-root" {
			return // a command's own flag of the same name
		}
		switch name {
		case "host-root":
			cfg.HostRoot = f.hostRoot
			if abs, err := filepath.Abs(f.hostRoot); err == nil {
				cfg.HostRoot = abs
			}
		case "listen":
			cfg.Listen = f.listen
		case "tick":
			cfg.Tick = f.tick
		case "discovery-interval":
			cfg.DiscoveryInterval = f.disc
		case "log-level":
			cfg.Log.Level = f.logLevel
		case "log-format":
			cfg.Log.Format = f.logFmt
		case "dry-run":
			cfg.Remediation.DryRun = f.dryRun
		}
	})
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("after command-line flags: %w", err)
	}
	return cfg, nil
}

func usageError(stderr io.Writer, fs *flag.FlagSet, format string, args ...any) int {
	fmt.Fprintf(stderr, "%s: %s\n", fs.Name(), fmt.Sprintf(format, args...))
	fs.Usage()
	return 2
}

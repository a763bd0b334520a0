package agent

import (
	"context"
	"fmt"
	"io"

	"github.com/vigil-agent/vigil/agent/config"
	"github.com/vigil-agent/vigil/rules"
)

func init() {
	registerCommand(&Command{
		Name:    "check-config",
		Summary: "validate config files; errors carry file:line:column and the field",
		Run:     checkConfigCommand,
	})
}

func checkConfigCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := NewFlagSet("check-config", "FILE...", stderr)
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() == 0 {
		return usageError(stderr, fs, "no config file given")
	}
	status := 0
	for _, file := range fs.Args() {
		cfg, err := config.Load(file)
		if err == nil {
			// The rule files the config points at are part of it.
			var set *rules.RuleSet
			set, err = loadRuleSet(cfg)
			if err != nil && cfg.Rules.Builtin {
				// Tell apart a problem in the user's files from shipped
				// rules this build cannot compile (the agent runs without
				// them, degraded).
				without := *cfg
				without.Rules.Builtin = false
				if set2, err2 := loadRuleSet(&without); err2 == nil {
					fmt.Fprintf(stderr, "%s: warning: built-in rules do not compile in this build and would be skipped: %v\n", file, err)
					set, err = set2, nil
				}
			}
			if err == nil {
				n := 0
				if set != nil {
					n = len(set.Rules)
				}
				fmt.Fprintf(stdout, "%s: ok (%d rules, built-in %v, %d rule dirs)\n", file, n, cfg.Rules.Builtin, len(cfg.Rules.Dirs))
				continue
			}
		}
		for _, e := range splitErrors(err) {
			fmt.Fprintln(stderr, e)
		}
		status = 1
	}
	return status
}

// splitErrors flattens a joined error into its parts.
func splitErrors(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, splitErrors(e)...)
		}
		return out
	}
	return []error{err}
}

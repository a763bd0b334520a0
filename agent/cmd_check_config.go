package agent

import (
	"context"
	"fmt"
	"io"

	"github.com/vigil-agent/vigil/agent/config"
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
		if _, err := config.Load(file); err != nil {
			for _, e := range splitErrors(err) {
				fmt.Fprintln(stderr, e)
			}
			status = 1
			continue
		}
		fmt.Fprintf(stdout, "%s: ok\n", file)
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

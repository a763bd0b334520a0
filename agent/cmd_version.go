package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
)

func init() {
	registerCommand(&Command{
		Name:    "version",
		Summary: "print the version, revision and Go version of this build",
		Run:     versionCommand,
	})
}

func versionCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := NewFlagSet("version", "[--json]", stderr)
	asJSON := fs.Bool("json", false, "print as JSON")
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	bi := ReadBuildInfo()
	if *asJSON {
		b, _ := json.MarshalIndent(bi, "", "  ")
		fmt.Fprintln(stdout, string(b))
		return 0
	}
	modified := ""
	if bi.Modified {
		modified = ", modified"
	}
	fmt.Fprintf(stdout, "vigil %s (revision %s%s, %s)\n", bi.Version, bi.Revision, modified, bi.GoVersion)
	return 0
}

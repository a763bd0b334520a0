// Command gen writes vigil's Grafana dashboards as JSON files. It is run by
// `go generate ./dashboards`.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/vigil-agent/vigil/dashboards"
)

func main() {
	out := flag.String("out", "grafana", "directory to write the dashboard JSON files to")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	files, err := dashboards.Generate()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	for _, f := range files {
		path := filepath.Join(dir, f.Name)
		if err := os.WriteFile(path, f.JSON, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	return nil
}

// Package builtin holds the rule set vigil ships, with a rule test per file,
// embedded so the agent can load it without files on disk. Every rule that
// acts selects only opted-in targets (selector opt_in): by default vigil
// observes and does not act.
package builtin

import (
	"embed"
	"io/fs"
	"sort"
	"strings"

	"github.com/vigil-agent/vigil/rules"
)

//go:embed *.yaml
var files embed.FS

// FS holds the shipped rule files (*.yaml) and their tests (*_test.yaml).
var FS fs.FS = files

// Prefix names the shipped files in rule errors and findings' rule files.
const Prefix = "builtin/"

// Files returns the shipped rule files (without tests), named Prefix+name.
func Files() map[string][]byte {
	out := map[string][]byte{}
	entries, _ := fs.ReadDir(files, ".")
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), "_test.yaml") {
			continue
		}
		b, err := fs.ReadFile(files, e.Name())
		if err == nil {
			out[Prefix+e.Name()] = b
		}
	}
	return out
}

// Tests returns the names of the shipped rule tests, sorted.
func Tests() []string {
	var out []string
	entries, _ := fs.ReadDir(files, ".")
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), "_test.yaml") {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

// Load compiles the shipped rules.
func Load(opts rules.LoadOptions) (*rules.RuleSet, error) { return rules.Load(Files(), opts) }

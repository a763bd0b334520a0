// Package vulncheck runs govulncheck on vigil in CI and fails on reached
// vulnerabilities that VULNS.md does not triage.
package vulncheck

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

const govulncheck = "golang.org/x/vuln/cmd/govulncheck@v1.9.0"

// finding is the part of govulncheck's JSON "finding" message we use.
type finding struct {
	OSV   string `json:"osv"`
	Trace []struct {
		Module   string `json:"module"`
		Package  string `json:"package"`
		Function string `json:"function"`
	} `json:"trace"`
}

// parseFindings reads govulncheck -format json output (a stream of JSON
// objects) and returns the reached OSV IDs and the others.
func parseFindings(r io.Reader) (reached, other map[string]bool, err error) {
	reached, other = map[string]bool{}, map[string]bool{}
	dec := json.NewDecoder(r)
	for {
		var msg struct {
			Finding *finding `json:"finding"`
		}
		if err := dec.Decode(&msg); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, nil, err
		}
		f := msg.Finding
		if f == nil || f.OSV == "" {
			continue
		}
		if len(f.Trace) > 0 && f.Trace[0].Function != "" {
			reached[f.OSV] = true
		} else {
			other[f.OSV] = true
		}
	}
	for id := range reached {
		delete(other, id)
	}
	return reached, other, nil
}

// triaged returns the IDs listed in a table row of VULNS.md.
func triaged(t *testing.T) map[string]bool {
	b, err := os.ReadFile(filepath.Join("..", "..", "VULNS.md"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\| (GO-\d{4}-\d+) \|`).FindAllSubmatch(b, -1) {
		out[string(m[1])] = true
	}
	return out
}

func TestParseFindings(t *testing.T) {
	in := `{"config":{"protocol_version":"v1.0.0"}}
{"finding":{"osv":"GO-1","trace":[{"module":"stdlib","package":"net/http","function":"Serve"}]}}
{"finding":{"osv":"GO-1","trace":[{"module":"stdlib","package":"net/http"}]}}
{"finding":{"osv":"GO-2","trace":[{"module":"golang.org/x/net"}]}}
`
	reached, other, err := parseFindings(strings.NewReader(in))
	if err != nil || !reached["GO-1"] || len(reached) != 1 || !other["GO-2"] || len(other) != 1 {
		t.Errorf("parseFindings = %v %v %v, want GO-1 reached, GO-2 other", reached, other, err)
	}
}

// TestGovulncheck runs govulncheck on the whole module. VIGIL_VULNDB
// (e.g. file:///tmp/vulndb-db, see VULNS.md) selects an offline database.
// It skips when neither the tool nor the database can be fetched.
func TestGovulncheck(t *testing.T) {
	if testing.Short() {
		t.Skip("govulncheck is skipped with -short")
	}
	args := []string{"run", govulncheck, "-format", "json"}
	if db := os.Getenv("VIGIL_VULNDB"); db != "" {
		args = append(args, "-db", db)
	}
	args = append(args, "./...")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = filepath.Join("..", "..")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	msg := stderr.String()
	if err != nil {
		for _, offline := range []string{"no such host", "dial tcp", "connection refused", "i/o timeout", "network is unreachable"} {
			if strings.Contains(msg, offline) {
				t.Skipf("govulncheck or its database is unreachable (set VIGIL_VULNDB, see VULNS.md): %s", lastLine(msg))
			}
		}
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, msg)
	}
	reached, other, perr := parseFindings(&stdout)
	if perr != nil {
		t.Fatalf("govulncheck output: %v\n%s", perr, msg)
	}
	known := triaged(t)
	var untriaged []string
	for id := range reached {
		if !known[id] {
			untriaged = append(untriaged, id)
		}
	}
	sort.Strings(untriaged)
	for _, id := range untriaged {
		t.Errorf("%s is reached by vigil's code and not triaged in VULNS.md (https://pkg.go.dev/vuln/%s)", id, id)
	}
	t.Logf("govulncheck: %d reached (%d triaged in VULNS.md), %d only in imported packages or required modules %v", len(reached), len(reached)-len(untriaged), len(other), keys(other))
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// microPackages are the packages whose benchmarks the report collects.
var microPackages = []string{
	"./collectors/cgroupfs", "./agent", "./rules", "./remediate", "./remediate/journal", "./collectors/events", "./collectors/node",
}

// MicroResult is one benchmark line of `go test -bench`.
type MicroResult struct {
	Package   string             `json:"package"`
	Name      string             `json:"name"`
	N         int                `json:"n"`
	NsPerOp   float64            `json:"ns_per_op"`
	BytesOp   float64            `json:"bytes_per_op"`
	AllocsOp  float64            `json:"allocs_per_op"`
	Extra     map[string]float64 `json:"extra,omitempty"`
	RawOutput string             `json:"-"`
}

func cmdMicro(ctx context.Context, log *slog.Logger, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("micro", flag.ContinueOnError)
	benchtime := fs.String("benchtime", "1s", "go test -benchtime")
	pattern := fs.String("bench", ".", "go test -bench pattern")
	pkgs := fs.String("pkgs", strings.Join(microPackages, ","), "packages")
	if err := fs.Parse(args); err != nil {
		return err
	}
	res, err := Micro(ctx, log, strings.Split(*pkgs, ","), *pattern, *benchtime)
	writeMicro(stdout, res)
	return err
}

// Micro runs the packages' benchmarks (no tests) and parses the results.
func Micro(ctx context.Context, log *slog.Logger, pkgs []string, pattern, benchtime string) ([]MicroResult, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	var all []MicroResult
	for _, pkg := range pkgs {
		log.Info("go test -bench", "package", pkg)
		cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", pattern, "-benchmem", "-benchtime", benchtime, "-count", "1", pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		res := parseBench(pkg, string(out))
		all = append(all, res...)
		if err != nil {
			return all, fmt.Errorf("go test -bench %s: %w\n%s", pkg, err, out)
		}
	}
	return all, nil
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+)\s+(\d+)\s+(.*)$`)

// parseBench reads `go test -bench -benchmem` output: every "value unit"
// pair after the iteration count.
func parseBench(pkg, out string) []MicroResult {
	var res []MicroResult
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		m := benchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		r := MicroResult{Package: pkg, Name: m[1], RawOutput: sc.Text()}
		r.N, _ = strconv.Atoi(m[2])
		f := strings.Fields(m[3])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			switch f[i+1] {
			case "ns/op":
				r.NsPerOp = v
			case "B/op":
				r.BytesOp = v
			case "allocs/op":
				r.AllocsOp = v
			default:
				if r.Extra == nil {
					r.Extra = map[string]float64{}
				}
				r.Extra[f[i+1]] = v
			}
		}
		res = append(res, r)
	}
	return res
}

func writeMicro(w io.Writer, res []MicroResult) {
	fmt.Fprintln(w, "| package | benchmark | ns/op | B/op | allocs/op | other |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---|")
	for _, r := range res {
		var extra []string
		for k, v := range r.Extra {
			extra = append(extra, fmt.Sprintf("%.4g %s", v, k))
		}
		fmt.Fprintf(w, "| %s | %s | %.0f | %.0f | %.0f | %s |\n", r.Package, strings.TrimPrefix(r.Name, "Benchmark"), r.NsPerOp, r.BytesOp, r.AllocsOp, strings.Join(extra, ", "))
	}
}

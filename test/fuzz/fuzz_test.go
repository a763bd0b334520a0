// Package fuzz runs every parser fuzzer of vigil briefly (CI) and lists
// them in targets.txt, which run.sh uses for the documented long run.
package fuzz

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var each = flag.Duration("fuzz.each", 2*time.Second, "how long to run each fuzzer (run.sh does the long runs)")

type target struct{ pkg, fuzzer, parser string }

func readTargets(t *testing.T) []target {
	t.Helper()
	f, err := os.Open("targets.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []target
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 3 {
			t.Fatalf("targets.txt: want package fuzzer parser, got %q", line)
		}
		out = append(out, target{fields[0], fields[1], strings.Join(fields[2:], " ")})
	}
	return out
}

// TestEveryParserHasAFuzzer checks that each fuzzer named in targets.txt
// exists in its package, and that the parsers the reliability issue names
// are all covered.
func TestEveryParserHasAFuzzer(t *testing.T) {
	targets := readTargets(t)
	covered := map[string]bool{}
	for _, tg := range targets {
		files, _ := filepath.Glob(filepath.Join("..", "..", tg.pkg, "*_test.go"))
		re := regexp.MustCompile(`(?m)^func ` + regexp.QuoteMeta(tg.fuzzer) + `\(f \*testing\.F\)`)
		found := false
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			found = found || re.Match(b)
		}
		if !found {
			t.Errorf("%s has no %s", tg.pkg, tg.fuzzer)
		}
		covered[tg.parser] = true
	}
	for _, want := range []string{"memory.stat (v1 and v2)", "memory.events (v2)", "PSI pressure files", "/proc/meminfo", "/proc/vmstat",
		"/proc/<pid>/cgroup", "kmsg OOM reports", "CRI log lines", "config YAML", "rule YAML", "Alertmanager webhook JSON"} {
		if !covered[want] {
			t.Errorf("no fuzzer listed for %s", want)
		}
	}
}

// TestFuzzersBriefly runs each fuzzer for -fuzz.each (2s by default): new
// crashers in CI, on top of the seed corpus that plain `go test` replays.
func TestFuzzersBriefly(t *testing.T) {
	if testing.Short() {
		t.Skip("fuzzing is skipped with -short")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	for _, tg := range readTargets(t) {
		t.Run(tg.fuzzer, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*(*each)+6*time.Minute)
			defer cancel()
			run := func() ([]byte, error) {
				cmd := exec.CommandContext(ctx, "go", "test", "-run=^$", "-fuzz=^"+tg.fuzzer+"$", "-fuzztime="+each.String(), "-parallel=2", tg.pkg)
				cmd.Dir = filepath.Join("..", "..")
				return cmd.CombinedOutput()
			}
			out, err := run()
			// The fuzzing engine can end a timed run with "context
			// deadline exceeded" when a worker is slow to stop on a busy
			// machine, without any failing input: that run found nothing
			// and is run once more. A crasher always says "Failing input".
			if err != nil && bytes.Contains(out, []byte("context deadline exceeded")) && !bytes.Contains(out, []byte("Failing input")) {
				t.Logf("%s: the fuzzing engine's deadline flake, no failing input; running it again:\n%s", tg.fuzzer, out)
				out, err = run()
			}
			if err != nil {
				t.Fatalf("%s %s (%s): %v\n%s", tg.pkg, tg.fuzzer, tg.parser, err, out)
			}
		})
	}
}

package vmtest

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Status is how a test ended.
type Status string

// Test outcomes. Unfinished means the test started but printed no result
// (the binary crashed, timed out or was killed).
const (
	Pass       Status = "PASS"
	Fail       Status = "FAIL"
	Skip       Status = "SKIP"
	Unfinished Status = "UNFINISHED"
)

// TestResult is one top-level test of a `-test.v` run.
type TestResult struct {
	Name    string
	Status  Status
	Elapsed time.Duration
	// Output holds the test's lines, its subtests' included, without the
	// === RUN/PAUSE/CONT/NAME lines.
	Output []string
}

// TestReport is a parsed `-test.v` run.
type TestReport struct {
	// Tests are the top-level tests in the order they started.
	Tests []TestResult
	// Other holds lines no running test owns: TestMain output, the final
	// PASS/FAIL, a panic after the last result.
	Other []string
}

// ReadTestReport parses the `-test.v` output of a Go test binary in path.
func ReadTestReport(path string) (TestReport, error) {
	f, err := os.Open(path)
	if err != nil {
		return TestReport{}, fmt.Errorf("vmtest: %w", err)
	}
	defer f.Close()
	rep, err := parseTestOutput(f)
	if err != nil {
		return rep, fmt.Errorf("vmtest: read %s: %w", path, err)
	}
	return rep, nil
}

// parseTestOutput follows the chatty printer of package testing: "=== RUN",
// "=== PAUSE", "=== CONT", "=== NAME" (and any other "=== WORD name") switch
// the test that owns the following lines; "--- PASS|FAIL|SKIP: name (1.23s)"
// ends one. Result lines of subtests come indented after their parent's, and
// indented lines after a top-level result still belong to it, as does a panic
// printed right after it.
func parseTestOutput(r io.Reader) (TestReport, error) {
	var rep TestReport
	index := map[string]int{} // top-level name -> index in rep.Tests
	current := -1             // test owning unindented lines, -1: none
	lastDone := -1            // test whose result was printed last
	get := func(name string) int {
		top, _, _ := strings.Cut(name, "/")
		i, ok := index[top]
		if !ok {
			i = len(rep.Tests)
			index[top] = i
			rep.Tests = append(rep.Tests, TestResult{Name: top, Status: Unfinished})
		}
		return i
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 16<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if name, ok := eventLine(line); ok {
			current = get(name)
			lastDone = -1
			continue
		}
		if status, name, elapsed, ok := resultLine(line); ok {
			i := get(name)
			if !strings.Contains(name, "/") {
				rep.Tests[i].Status = status
				rep.Tests[i].Elapsed = elapsed
				current, lastDone = -1, i
				continue
			}
			rep.Tests[i].Output = append(rep.Tests[i].Output, line)
			continue
		}
		indented := strings.HasPrefix(line, "    ") || strings.HasPrefix(line, "\t")
		if lastDone >= 0 && strings.HasPrefix(line, "panic: ") {
			// A panicking test prints its --- FAIL line, then the panic
			// and the stacks until the binary exits: all of it is its.
			current = lastDone
		}
		switch {
		case current >= 0:
			rep.Tests[current].Output = append(rep.Tests[current].Output, line)
		case lastDone >= 0 && indented:
			rep.Tests[lastDone].Output = append(rep.Tests[lastDone].Output, line)
		default:
			lastDone = -1
			rep.Other = append(rep.Other, line)
		}
	}
	return rep, sc.Err()
}

// eventLine recognises "=== RUN   TestX" and its siblings and returns the
// test name (test names never contain spaces).
func eventLine(line string) (string, bool) {
	rest, ok := strings.CutPrefix(line, "=== ")
	if !ok {
		return "", false
	}
	f := strings.Fields(rest)
	if len(f) < 2 || !validName(f[1]) || strings.TrimFunc(f[0], func(r rune) bool { return 'A' <= r && r <= 'Z' }) != "" {
		return "", false
	}
	return f[1], true
}

// validName accepts names like TestX and TestX/sub: a non-empty top-level
// part and no spaces (package testing rewrites them).
func validName(name string) bool {
	top, _, _ := strings.Cut(name, "/")
	return top != "" && !strings.ContainsAny(name, " \t")
}

// resultLine recognises "--- PASS: TestX (0.01s)", possibly indented.
func resultLine(line string) (Status, string, time.Duration, bool) {
	rest, ok := strings.CutPrefix(strings.TrimLeft(line, " "), "--- ")
	if !ok {
		return "", "", 0, false
	}
	word, rest, ok := strings.Cut(rest, ": ")
	if !ok {
		return "", "", 0, false
	}
	status := Status(word)
	if status != Pass && status != Fail && status != Skip {
		return "", "", 0, false
	}
	name, dur, ok := strings.Cut(rest, " (")
	if !ok || !validName(name) || !strings.HasSuffix(dur, ")") {
		return "", "", 0, false
	}
	elapsed, err := time.ParseDuration(strings.TrimSuffix(dur, ")"))
	if err != nil {
		return "", "", 0, false
	}
	return status, name, elapsed, true
}

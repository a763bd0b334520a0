package vmtest

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// outcome is the part of a TestResult the table checks: name, status and
// some lines the output must contain.
type outcome struct {
	name     string
	status   Status
	contains []string
}

func TestParseTestOutputFiles(t *testing.T) {
	tests := []struct {
		file      string
		want      []outcome
		wantOther []string // lines Other must contain
	}{
		{
			file: "pass.txt",
			want: []outcome{
				{"TestPass", Pass, []string{"    seed_test.go:10: hello from pass"}},
				{"TestSkip", Skip, []string{"    seed_test.go:17: needs the moon"}},
			},
			wantOther: []string{"PASS"},
		},
		{
			file: "mixed.txt",
			want: []outcome{
				{"TestPass", Pass, []string{"    seed_test.go:10: hello from pass"}},
				{"TestFail", Fail, []string{"    seed_test.go:13: about to fail", "    seed_test.go:14: want 1, got 2"}},
				{"TestSkip", Skip, nil},
				{"TestSub", Fail, []string{
					"    seed_test.go:20: inner ok", "    seed_test.go:22: deep failure",
					"    --- PASS: TestSub/ok (0.00s)", "        --- FAIL: TestSub/bad/deeper (0.00s)",
				}},
				{"TestParallelA", Pass, []string{"    seed_test.go:30: A done"}},
				{"TestParallelB", Fail, []string{"    seed_test.go:35: B started", "    seed_test.go:37: B failed"}},
				{"TestStdout", Pass, []string{"raw stdout line", "raw stderr line"}},
			},
			wantOther: []string{"FAIL"},
		},
		{
			file: "panic.txt",
			want: []outcome{
				{"TestPass", Pass, nil},
				{"TestPanic", Fail, []string{"panic: boom [recovered, repanicked]", "\t/tmp/seedpkg/seed_test.go:49 +0x3d"}},
			},
		},
		{
			file: "timeout.txt",
			want: []outcome{
				{"TestPass", Pass, nil},
				{"TestHang", Unfinished, []string{"panic: test timed out after 1s", "\t\tTestHang (1s)"}},
			},
		},
		{
			file:      "none.txt",
			wantOther: []string{"testing: warning: no tests to run", "PASS"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			rep, err := ReadTestReport(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			checkReport(t, rep, tt.want, tt.wantOther)
		})
	}
}

func TestParseTestOutputLines(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		want      []outcome
		wantOther []string
	}{
		{
			name: "CRLF console lines",
			in:   "=== RUN   TestA\r\n    a_test.go:1: hi\r\n--- PASS: TestA (1.50s)\r\nPASS\r\n",
			want: []outcome{{"TestA", Pass, []string{"    a_test.go:1: hi"}}},
		},
		{
			name:      "output before any test belongs to no test",
			in:        "TestMain says hi\n=== RUN   TestA\n--- SKIP: TestA (0.00s)\n    a_test.go:3: later\nok\n",
			want:      []outcome{{"TestA", Skip, []string{"    a_test.go:3: later"}}},
			wantOther: []string{"TestMain says hi", "ok"},
		},
		{
			name: "not result lines",
			in:   "=== RUN   TestA\n--- PASS: TestA\n--- MAYBE: TestA (0.00s)\n--- PASS: Test A (0.00s)\n--- PASS: TestA (soon)\n=== \n",
			want: []outcome{{"TestA", Unfinished, []string{
				"--- PASS: TestA", "--- MAYBE: TestA (0.00s)", "--- PASS: Test A (0.00s)", "--- PASS: TestA (soon)", "=== ",
			}}},
		},
		{
			name: "subtest result without its parent's run line",
			in:   "    --- FAIL: TestB/x (0.00s)\n",
			want: []outcome{{"TestB", Unfinished, []string{"    --- FAIL: TestB/x (0.00s)"}}},
		},
		{
			name: "attributes and artifacts switch the owner too",
			in:   "=== RUN   TestA\n=== RUN   TestB\n=== ATTR  TestA key value\n    a: x\n--- PASS: TestA (0.00s)\n--- PASS: TestB (0.00s)\n",
			want: []outcome{{"TestA", Pass, []string{"    a: x"}}, {"TestB", Pass, nil}},
		},
		{
			name: "empty",
			in:   "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, err := parseTestOutput(strings.NewReader(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			checkReport(t, rep, tt.want, tt.wantOther)
		})
	}
}

func TestParseTestOutputElapsed(t *testing.T) {
	rep, err := parseTestOutput(strings.NewReader("=== RUN   TestA\n--- FAIL: TestA (12.34s)\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []TestResult{{Name: "TestA", Status: Fail, Elapsed: 12340 * time.Millisecond}}
	if !reflect.DeepEqual(rep.Tests, want) {
		t.Errorf("got %+v, want %+v", rep.Tests, want)
	}
}

func checkReport(t *testing.T, rep TestReport, want []outcome, wantOther []string) {
	t.Helper()
	var gotNames, wantNames []string
	for _, tr := range rep.Tests {
		gotNames = append(gotNames, tr.Name+" "+string(tr.Status))
	}
	for _, w := range want {
		wantNames = append(wantNames, w.name+" "+string(w.status))
	}
	if !reflect.DeepEqual(gotNames, wantNames) {
		t.Fatalf("tests = %q, want %q", gotNames, wantNames)
	}
	for i, w := range want {
		for _, line := range w.contains {
			if !containsLine(rep.Tests[i].Output, line) {
				t.Errorf("%s output lacks %q; got %q", w.name, line, rep.Tests[i].Output)
			}
		}
	}
	for _, line := range wantOther {
		if !containsLine(rep.Other, line) {
			t.Errorf("other output lacks %q; got %q", line, rep.Other)
		}
	}
}

func containsLine(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}

func FuzzParseTestOutput(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.txt"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no seeds in testdata: %v", err)
	}
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		rep, err := parseTestOutput(strings.NewReader(string(in)))
		if err != nil {
			return // only over-long lines
		}
		lines := strings.Count(string(in), "\n") + 1
		kept := len(rep.Other)
		seen := map[string]bool{}
		for _, tr := range rep.Tests {
			if tr.Name == "" || strings.Contains(tr.Name, "/") || seen[tr.Name] {
				t.Fatalf("bad or duplicate test name %q", tr.Name)
			}
			seen[tr.Name] = true
			switch tr.Status {
			case Pass, Fail, Skip, Unfinished:
			default:
				t.Fatalf("%s: status %q", tr.Name, tr.Status)
			}
			kept += len(tr.Output)
		}
		if kept > lines {
			t.Fatalf("%d output lines kept from %d input lines", kept, lines)
		}
	})
}

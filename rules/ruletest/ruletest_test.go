package ruletest

import (
	"math"
	"os"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/rules"
)

// Every signal of the tables must be settable, and read back what was set:
// this catches a signal added to collectors without a field the harness can
// find.
func TestSettersRoundTrip(t *testing.T) {
	for _, v := range []float64{12345, 0.25, math.Inf(1)} {
		for _, sig := range collectors.CgroupSignals {
			set := cgroupSetters[sig.Name]
			if set == nil {
				t.Errorf("cgroup signal %s: no setter", sig.Name)
				continue
			}
			want := v
			c := baseCgroup()
			if math.IsInf(v, 1) && !math.IsInf(sig.Value(&c), 1) {
				continue // only limit-like signals are +Inf
			}
			set(&c, v)
			if got := sig.Value(&c); !nearly(got, want, sig.Unit) {
				t.Errorf("cgroup signal %s: set %v, read %v", sig.Name, want, got)
			}
		}
		for _, sig := range collectors.NodeSignals {
			set := nodeSetters[sig.Name]
			if set == nil {
				t.Errorf("node signal %s: no setter", sig.Name)
				continue
			}
			if math.IsInf(v, 1) {
				continue
			}
			var n collectors.NodeSample
			set(&n, v)
			if got := sig.Value(&n); !nearly(got, v, sig.Unit) {
				t.Errorf("node signal %s: set %v, read %v", sig.Name, v, got)
			}
		}
	}
}

// nearly allows integer fields to round fractional values.
func nearly(got, want float64, unit string) bool {
	if got == want {
		return true
	}
	return math.Abs(got-want) <= 1 && unit != "ratio" && unit != "percent"
}

func TestParseSeries(t *testing.T) {
	tests := []struct {
		in   string
		want []float64 // NaN marks a missing point
	}{
		{"1 2 3", []float64{1, 2, 3}},
		{"5x3", []float64{5, 5, 5, 5}},
		{"100+10x3", []float64{100, 110, 120, 130}},
		{"10-2x2 _ 4", []float64{10, 8, 6, math.NaN(), 4}},
		{"1Mi+1Mix1", []float64{1 << 20, 2 << 20}},
		{"2G max", []float64{2e9, math.Inf(1)}},
		{"1e3+1e3x1", []float64{1000, 2000}},
	}
	for _, tc := range tests {
		pts, err := parseSeries(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		var got []float64
		for _, p := range pts {
			if p.missing {
				got = append(got, math.NaN())
			} else {
				got = append(got, p.v)
			}
		}
		if len(got) != len(tc.want) {
			t.Errorf("%q: got %v, want %v", tc.in, got, tc.want)
			continue
		}
		for i := range got {
			if !(got[i] == tc.want[i] || (math.IsNaN(got[i]) && math.IsNaN(tc.want[i]))) {
				t.Errorf("%q: got %v, want %v", tc.in, got, tc.want)
				break
			}
		}
	}
	for _, bad := range []string{"", "abc", "1+2", "1x-1", "_+1x2"} {
		if _, err := parseSeries(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

const ruleFile = `rules:
- name: full
  condition: usage_ratio > 0.9
  for: 20s
- name: leak
  condition: predict_linear(working_set_bytes, "1m", "1m") > limit_bytes
`

func TestRunPassAndFail(t *testing.T) {
	pass := `rule_files: [rules.yaml]
evaluation_interval: 10s
tests:
- name: fills up
  cgroups:
  - path: /a
    series:
      usage_ratio: "0.5 0.95x3 0.5"
      working_set_bytes: "100Mi+100Mix5"
      limit_bytes: "1Gi"
  expect:
  - at: 20s
    findings: []
  - at: 30s
    firing: [{rule: full, target: /a}]
    findings:
    - {rule: full, target: /a, mode: enforce, evidence: {usage_ratio: 0.95}}
  - at: 40s
    findings:
    - {rule: leak, target: /a, evidence: {working_set_bytes: 500Mi, "predict_linear(working_set_bytes, 1m, 1m)": 1100Mi}}
  - at: 50s
    findings:
    - {rule: full, target: /a, state: resolved}
`
	fsys := fstest.MapFS{"rules.yaml": {Data: []byte(ruleFile)}, "pass_test.yaml": {Data: []byte(pass)}}
	res, err := RunFile(fsys, "pass_test.yaml", rules.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed() {
		t.Fatalf("unexpected failures:\n%s", res)
	}

	fail := strings.ReplaceAll(pass, "at: 30s", "at: 40s")
	fail = strings.ReplaceAll(fail, "usage_ratio: 0.95}", "usage_ratio: 0.9}")
	fail += "  never: [leak]\n"
	fsys["fail_test.yaml"] = &fstest.MapFile{Data: []byte(fail)}
	res, err = RunFile(fsys, "fail_test.yaml", rules.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := res.String()
	for _, want := range []string{
		"FAIL fail_test.yaml: fills up",
		"at 40s: missing finding: full /a firing",
		"at 40s: rule leak fired for /a, but it must never fire in this test; evidence: limit_bytes=1.07374e+09",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}

func TestRunRejectsBadFiles(t *testing.T) {
	tests := []struct {
		name, test, want string
	}{
		{"unknown field", "rule_files: [rules.yaml]\ntests:\n- nam: x\n", "unknown field \"nam\""},
		{"missing rule file", "rule_files: [nope.yaml]\ntests: []\n", "rule file nope.yaml"},
		{"unknown signal", "rule_files: [rules.yaml]\ntests:\n- cgroups:\n  - path: /a\n    series: {nope: \"1\"}\n", "unknown cgroup signal \"nope\""},
		{"off-grid time", "rule_files: [rules.yaml]\ntests:\n- expect:\n  - at: 15s\n    findings: []\n", "expect at \"15s\""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fsys := fstest.MapFS{"rules.yaml": {Data: []byte(ruleFile)}, "t.yaml": {Data: []byte(tc.test)}}
			res, err := RunFile(fsys, "t.yaml", rules.LoadOptions{})
			var got string
			if err != nil {
				got = err.Error()
			} else {
				got = res.String()
			}
			if !strings.Contains(got, tc.want) {
				t.Errorf("got %q, want it to contain %q", got, tc.want)
			}
		})
	}
}

func TestRunFromDisk(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/rules.yaml", []byte(ruleFile), 0o644); err != nil {
		t.Fatal(err)
	}
	test := "rule_files: [rules.yaml]\ntests:\n- cgroups:\n  - {path: /a, series: {usage_ratio: \"1x3\"}}\n  expect:\n  - {at: 20s, firing: [{rule: full, target: /a}]}\n"
	if err := os.WriteFile(dir+"/t_test.yaml", []byte(test), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := RunFile(os.DirFS(dir), "t_test.yaml", rules.LoadOptions{})
	if err != nil || res.Failed() {
		t.Fatalf("%v\n%v", err, res)
	}
	if got := []string{res.Tests[0].Name}; !reflect.DeepEqual(got, []string{"test 1"}) {
		t.Errorf("names %v", got)
	}
}

func FuzzParseSeries(f *testing.F) {
	for _, s := range []string{"1 2 3", "100Mi+10Mix50 700Mix80", "_x3 1e3-1x2", "max inf NaN -Inf", "0.5 0.95x3 0.5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		pts, err := parseSeries(s)
		if err == nil && len(pts) == 0 {
			t.Fatalf("%q: no points and no error", s)
		}
	})
}

// FuzzRun feeds arbitrary test files (seeded with the shipped ones) to the
// runner: it must report, never panic.
func FuzzRun(f *testing.F) {
	entries, _ := os.ReadDir("../builtin")
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), "_test.yaml") {
			if b, err := os.ReadFile("../builtin/" + e.Name()); err == nil {
				f.Add(b)
			}
		}
	}
	maxTicks = 500 // long runs find no new paths
	f.Fuzz(func(t *testing.T, data []byte) {
		fsys := fstest.MapFS{"rules.yaml": {Data: []byte(ruleFile)}, "t.yaml": {Data: data}}
		read := func(string) (string, []byte, error) { return "rules.yaml", []byte(ruleFile), nil }
		res, err := run(data, "t.yaml", read, rules.LoadOptions{})
		if err == nil && res == nil {
			t.Fatal("nil result without error")
		}
		_ = fsys
	})
}

package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/collectors"
)

func runRules(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := LookupCommand("rules").Run(context.Background(), args, &out, &errb)
	return out.String() + errb.String(), code
}

const cliRule = `rules:
- name: full
  condition: usage_ratio > 0.9
  for: 20s
  actions:
  - action: reclaim
    params: {bytes: 64Mi}
- name: quiet
  condition: usage_ratio > 2
`

func TestRulesCheck(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "good.yaml"), []byte(cliRule), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := runRules(t, "check", dir)
	if code != 0 || !strings.Contains(out, "OK, 2 rules in 1 files") || !strings.Contains(out, "actions reclaim") {
		t.Errorf("check good dir: code %d, output:\n%s", code, out)
	}
	bad := "rules:\n- name: full2\n  condition: usage_ratio >> 1\n  actions:\n  - action: reclaim\n    params: {bytes: lots}\n"
	if err := os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code = runRules(t, "check", dir)
	for _, want := range []string{"FAILED", filepath.Join(dir, "bad.yaml") + ":3:", filepath.Join(dir, "bad.yaml") + ":6:13: rule \"full2\": actions[0].params:"} {
		if !strings.Contains(out, want) {
			t.Errorf("check bad dir: output lacks %q:\n%s", want, out)
		}
	}
	if code != 1 {
		t.Errorf("check bad dir: exit %d, want 1", code)
	}
}

func TestRulesTest(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "r.yaml"), []byte(cliRule), 0o644); err != nil {
		t.Fatal(err)
	}
	test := "rule_files: [r.yaml]\ntests:\n- name: fires\n  cgroups:\n  - {path: /a, series: {usage_ratio: \"0.95x5\"}}\n  expect:\n  - {at: WHEN, firing: [{rule: full, target: /a}]}\n"
	for _, tc := range []struct {
		when string
		code int
		want string
	}{
		{"20s", 0, "PASS"},
		{"10s", 1, "at 10s: expected firing, but not firing: full /a"},
	} {
		file := filepath.Join(dir, "r_test.yaml")
		if err := os.WriteFile(file, []byte(strings.Replace(test, "WHEN", tc.when, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		out, code := runRules(t, "test", file)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("at %s: exit %d (want %d), output:\n%s", tc.when, code, tc.code, out)
		}
	}
	if out, code := runRules(t, "test", "--builtin"); code != 0 {
		t.Errorf("shipped rule tests: exit %d:\n%s", code, out)
	}
}

func TestRulesReplay(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "r.yaml"), []byte(cliRule), 0o644); err != nil {
		t.Fatal(err)
	}
	var rec bytes.Buffer
	enc := json.NewEncoder(&rec)
	start := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for i, ratio := range []float64{0.5, 0.95, 0.95, 0.95, 0.5} {
		snap := collectors.Snapshot{Seq: uint64(i), Time: start.Add(time.Duration(i) * 10 * time.Second),
			Cgroups: []collectors.CgroupSample{{Path: "/app", Identity: collectors.Identity{Kind: "unit", Unit: "app.service"},
				Memory:  collectors.CgroupMemory{EffectiveLimitBytes: collectors.Unlimited},
				Derived: collectors.Derived{UsageRatio: ratio}}}}
		if err := enc.Encode(&snap); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(dir, "rec.jsonl")
	if err := os.WriteFile(file, rec.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := runRules(t, "replay", "--rules", dir, file)
	for _, want := range []string{
		"2026-11-25T12:00:30Z FIRING   full                         /app (app.service) [warning, enforce] condition held since 2026-11-25T12:00:10Z (20s)",
		"    usage_ratio = 0.95",
		"    would run: reclaim",
		"2026-11-25T12:00:40Z RESOLVED full",
		"5 snapshots from 2026-11-25T12:00:00Z to 2026-11-25T12:00:40Z (40s), 2 rules",
		"quiet                            fired 0, resolved 0, targets 0",
		"full                             fired 1, resolved 1, targets 1",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("replay output lacks %q:\n%s", want, out)
		}
	}
	if code != 0 {
		t.Errorf("exit %d", code)
	}
	if err := os.WriteFile(file, append(rec.Bytes(), "{bad"...), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := runRules(t, "replay", "--rules", dir, file); code != 1 || !strings.Contains(out, "snapshot 6") {
		t.Errorf("corrupt stream: exit %d, output:\n%s", code, out)
	}
}

// TestRecordThenReplay replays what `vigil record` writes: the two
// commands agree on the stream format.
func TestRecordThenReplay(t *testing.T) {
	dir := t.TempDir()
	rec := filepath.Join(dir, "rec.jsonl")
	var out, errb bytes.Buffer
	if code := LookupCommand("record").Run(context.Background(),
		[]string{"--out", rec, "--count", "6", "--tick", "500ms", "--host-root", "testdata/hostroot-v2"}, &out, &errb); code != 0 {
		t.Fatalf("record: exit %d: %s", code, errb.String())
	}
	rule := "rules:\n- name: any-memory\n  condition: working_set_bytes > 0 && delta(stat.pgfault) >= 0\n  for: 1s\n- name: node-seen\n  target: node\n  condition: mem_total_bytes > 0\n"
	if err := os.WriteFile(filepath.Join(dir, "r.yaml"), []byte(rule), 0o644); err != nil {
		t.Fatal(err)
	}
	got, code := runRules(t, "replay", "--rules", dir, rec)
	if code != 0 {
		t.Fatalf("replay: exit %d:\n%s", code, got)
	}
	for _, want := range []string{"FIRING   any-memory", "FIRING   node-seen", "node-seen                        fired 1, resolved 0, targets 1"} {
		if !strings.Contains(got, want) {
			t.Errorf("replay output lacks %q:\n%s", want, got)
		}
	}
}

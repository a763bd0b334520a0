package rules

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func TestLoadErrorsCarryPositions(t *testing.T) {
	tests := []struct {
		name string
		file string
		want string // substring of the error, which starts with file:line:col
	}{
		{"unknown field", "rules:\n- name: a\n  conditon: x > 1\n", "bad.yaml:3:3: unknown field \"conditon\""},
		{"syntax", "rules:\n- name: a\n  condition: [\n", "bad.yaml:3:"},
		{"no rules", "rules: []\n", "bad.yaml: no rules"},
		{"unknown top-level field", "other: 1\n", "bad.yaml:1:1: unknown field \"other\""},
		{"bad name", "rules:\n- name: Bad Name\n  condition: usage_ratio > 1\n", "bad.yaml:2:9: rule \"Bad Name\": name:"},
		{"bad severity", "rules:\n- name: a\n  severity: loud\n  condition: usage_ratio > 1\n", "bad.yaml:3:13: rule \"a\": severity: \"loud\""},
		{"unknown signal", "rules:\n- name: a\n  condition: usage_ration > 1\n", "bad.yaml:3:14: rule \"a\": condition: undeclared reference to 'usage_ration'"},
		{"CEL error column inside the expression", "rules:\n- name: a\n  condition: usage_ratio > 1 && bogus\n", "bad.yaml:3:33: rule \"a\": condition: undeclared reference to 'bogus'"},
		{"block scalar points at the line", "rules:\n- name: a\n  condition: |\n    usage_ratio > 1 &&\n    bogus\n", "bad.yaml:5:5: rule \"a\": condition: undeclared reference to 'bogus'"},
		{"not a bool", "rules:\n- name: a\n  condition: usage_ratio + 1\n", "condition: the expression must be a bool"},
		{"unknown signal in rate", "rules:\n- name: a\n  condition: rate(nope, \"1m\") > 0\n", "rate: unknown cgroup signal \"nope\""},
		{"bad window", "rules:\n- name: a\n  condition: rate(usage_bytes, \"fast\") > 0\n", "rate: window: time: invalid duration"},
		{"node rule with a cgroup signal", "rules:\n- name: a\n  target: node\n  condition: working_set_bytes > 0\n", "undeclared reference to 'working_set_bytes'"},
		{"node rule selector", "rules:\n- name: a\n  target: node\n  selector: {paths: [/a]}\n  condition: used_ratio > 0.9\n", "bad.yaml:4:13: rule \"a\": selector: a node rule's selector may only set opt_in"},
		{"bad path glob", "rules:\n- name: a\n  selector: {paths: [\"kubepods\"]}\n  condition: usage_ratio > 1\n", "selector.paths: bad path glob \"kubepods\""},
		{"bad duration", "rules:\n- name: a\n  for: soon\n  condition: usage_ratio > 1\n", "bad.yaml:3:"},
		{"negative cooldown", "rules:\n- name: a\n  cooldown: -1m\n  condition: usage_ratio > 1\n", "bad.yaml:3:13: rule \"a\": cooldown: -1m0s is negative"},
		{"bad verify", "rules:\n- name: a\n  condition: usage_ratio > 1\n  actions:\n  - action: reclaim\n    verify: nope > 1\n", "bad.yaml:6:13: rule \"a\": actions[0].verify: undeclared reference to 'nope'"},
		{"missing action name", "rules:\n- name: a\n  condition: usage_ratio > 1\n  actions:\n  - params: {}\n", "actions[0].action: required"},
		{"duplicate", "rules:\n- name: a\n  condition: usage_ratio > 1\n- name: a\n  condition: usage_ratio > 1\n", "bad.yaml:4:9: rule \"a\": name: duplicate rule name (first defined at bad.yaml:2:9)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(map[string][]byte{"bad.yaml": []byte(tc.file)}, LoadOptions{})
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q\nwant it to contain %q", err, tc.want)
			}
			var le *Error
			if !errors.As(err, &le) {
				t.Errorf("error %T is not a *rules.Error", err)
			}
		})
	}
}

func TestLoadValidatesActions(t *testing.T) {
	opts := LoadOptions{Actions: map[string]ActionValidator{
		"reclaim": func(p map[string]any) error {
			if _, ok := p["bytes"]; !ok {
				return errors.New("bytes is required")
			}
			return nil
		},
	}}
	tests := []struct {
		file, want string
	}{
		{"rules:\n- name: a\n  condition: usage_ratio > 1\n  actions:\n  - action: reclaim\n    params: {bytes: 10}\n", ""},
		{"rules:\n- name: a\n  condition: usage_ratio > 1\n  actions:\n  - action: reclaim\n    params: {}\n", "x.yaml:6:13: rule \"a\": actions[0].params: bytes is required"},
		{"rules:\n- name: a\n  condition: usage_ratio > 1\n  actions:\n  - action: explode\n", "x.yaml:5:13: rule \"a\": actions[0].action: unknown action \"explode\" (known: reclaim)"},
	}
	for _, tc := range tests {
		_, err := Load(map[string][]byte{"x.yaml": []byte(tc.file)}, opts)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("unexpected error %v", err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("error %v, want %q", err, tc.want)
		}
	}
}

func TestLoadCostLimit(t *testing.T) {
	src := "rules:\n- name: a\n  condition: 'avg_over(usage_bytes, \"1m\") > 1 && max_over(usage_bytes, \"1m\") > 1'\n"
	if _, err := Load(map[string][]byte{"c.yaml": []byte(src)}, LoadOptions{CostLimit: 50}); err == nil || !strings.Contains(err.Error(), "over the limit 50") {
		t.Errorf("error %v, want a cost limit error", err)
	}
	if _, err := Load(map[string][]byte{"c.yaml": []byte(src)}, LoadOptions{}); err != nil {
		t.Errorf("default limit: %v", err)
	}
}

func FuzzLoad(f *testing.F) {
	f.Add([]byte("rules:\n- name: a\n  condition: usage_ratio > 0.9\n  for: 1m\n"))
	f.Add([]byte("rules:\n- name: a\n  target: node\n  condition: rate(vmstat.oom_kill, \"5m\") > 0\n  actions:\n  - action: x\n    verify: 'true'\n"))
	f.Add([]byte("rules: [{name: a, condition: 'alert(\"x\")', selector: {paths: ['/**']}}]"))
	f.Add([]byte("{"))
	for _, name := range []string{"memory-leak.yaml", "spike.yaml"} {
		if b, err := builtinSeed(name); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		set, err := Load(map[string][]byte{"f.yaml": data}, LoadOptions{})
		if err != nil {
			var le *Error
			if !errors.As(err, &le) {
				t.Fatalf("error %T is not a *rules.Error: %v", err, err)
			}
			return
		}
		// Whatever loads must evaluate without panicking.
		e := NewEngine(set, EngineOptions{})
		e.Evaluate(snapOf(cg("/a", 1, 2)), t0)
	})
}

// builtinSeed reads a shipped rule file as a fuzz seed.
func builtinSeed(name string) ([]byte, error) { return os.ReadFile("builtin/" + name) }

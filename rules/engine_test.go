package rules

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-agent/vigil/collectors"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func mustLoad(t testing.TB, yaml string) *RuleSet {
	t.Helper()
	set, err := Load(map[string][]byte{"test.yaml": []byte(yaml)}, LoadOptions{})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return set
}

// cg builds a cgroup sample with a working set and limit in MiB.
func cg(path string, wsMiB, limitMiB uint64) collectors.CgroupSample {
	c := collectors.CgroupSample{
		Path:     path,
		Identity: collectors.Identity{Kind: "cgroup"},
		Memory:   collectors.CgroupMemory{UsageBytes: wsMiB << 20, EffectiveLimitBytes: collectors.Bytes(limitMiB << 20), MaxBytes: collectors.Bytes(limitMiB << 20)},
		Derived:  collectors.Derived{WorkingSetBytes: wsMiB << 20, SecondsToLimit: collectors.Float(math.Inf(1))},
	}
	if limitMiB > 0 {
		c.Derived.UsageRatio = float64(wsMiB) / float64(limitMiB)
	}
	return c
}

func snapOf(cgs ...collectors.CgroupSample) *collectors.Snapshot {
	return &collectors.Snapshot{Cgroups: cgs}
}

// brief renders findings as "rule target state mode" lines, sorted.
func brief(fs []Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, fmt.Sprintf("%s %s %s %s", f.Rule, f.Target.Key(), f.State, f.Mode))
	}
	sort.Strings(out)
	return out
}

type tick struct {
	at   time.Duration
	snap *collectors.Snapshot
	want []string
}

func runTicks(t *testing.T, e *Engine, ticks []tick) {
	t.Helper()
	for _, tk := range ticks {
		got := brief(e.Evaluate(tk.snap, t0.Add(tk.at)))
		if !reflect.DeepEqual(got, tk.want) && !(len(got) == 0 && len(tk.want) == 0) {
			t.Errorf("at %v: got %q, want %q", tk.at, got, tk.want)
		}
	}
}

func TestEngineStateMachine(t *testing.T) {
	high := snapOf(cg("/a", 950, 1000))
	low := snapOf(cg("/a", 100, 1000))
	mid := snapOf(cg("/a", 850, 1000))
	tests := []struct {
		name  string
		rules string
		opts  EngineOptions
		ticks []tick
	}{
		{
			name:  "for delays firing, clearing resolves once",
			rules: "rules:\n- name: full\n  condition: usage_ratio > 0.9\n  for: 20s\n",
			ticks: []tick{
				{0, high, nil},
				{10 * time.Second, high, nil},
				{20 * time.Second, high, []string{"full /a firing enforce"}},
				{30 * time.Second, high, nil},
				{40 * time.Second, low, []string{"full /a resolved enforce"}},
				{50 * time.Second, low, nil},
			},
		},
		{
			name:  "condition dropping while pending restarts the for",
			rules: "rules:\n- name: full\n  condition: usage_ratio > 0.9\n  for: 20s\n",
			ticks: []tick{
				{0, high, nil},
				{10 * time.Second, low, nil},
				{20 * time.Second, high, nil},
				{30 * time.Second, high, nil},
				{40 * time.Second, high, []string{"full /a firing enforce"}},
			},
		},
		{
			name:  "cooldown repeats while firing",
			rules: "rules:\n- name: full\n  condition: usage_ratio > 0.9\n  cooldown: 30s\n",
			ticks: []tick{
				{0, high, []string{"full /a firing enforce"}},
				{10 * time.Second, high, nil},
				{20 * time.Second, high, nil},
				{30 * time.Second, high, []string{"full /a firing enforce"}},
				{40 * time.Second, high, nil},
			},
		},
		{
			name:  "cooldown suppresses a new episode (storm protection)",
			rules: "rules:\n- name: full\n  condition: usage_ratio > 0.9\n  cooldown: 1m\n",
			ticks: []tick{
				{0, high, []string{"full /a firing enforce"}},
				{10 * time.Second, low, []string{"full /a resolved enforce"}},
				{20 * time.Second, high, nil},
				{30 * time.Second, low, nil}, // never announced: no resolved either
				{40 * time.Second, high, nil},
				{60 * time.Second, high, []string{"full /a firing enforce"}},
			},
		},
		{
			name:  "cooldown 0 fires once per episode",
			rules: "rules:\n- name: full\n  condition: usage_ratio > 0.9\n  cooldown: 0s\n",
			ticks: []tick{
				{0, high, []string{"full /a firing enforce"}},
				{10 * time.Second, high, nil},
				{20 * time.Second, low, []string{"full /a resolved enforce"}},
				{30 * time.Second, high, []string{"full /a firing enforce"}},
			},
		},
		{
			name:  "clear condition gives a hysteresis band",
			rules: "rules:\n- name: full\n  condition: usage_ratio > 0.9\n  clear: usage_ratio < 0.8\n",
			ticks: []tick{
				{0, high, []string{"full /a firing enforce"}},
				{10 * time.Second, mid, nil}, // below 0.9, above 0.8: still firing
				{20 * time.Second, low, []string{"full /a resolved enforce"}},
			},
		},
		{
			name:  "hysteresis: clearing must last",
			rules: "rules:\n- name: full\n  condition: usage_ratio > 0.9\n  hysteresis: 20s\n",
			ticks: []tick{
				{0, high, []string{"full /a firing enforce"}},
				{10 * time.Second, low, nil},
				{20 * time.Second, high, nil}, // back: clearing resets
				{30 * time.Second, low, nil},
				{40 * time.Second, low, nil},
				{50 * time.Second, low, []string{"full /a resolved enforce"}},
			},
		},
		{
			name:  "rule shadow mode",
			rules: "rules:\n- name: full\n  mode: shadow\n  condition: usage_ratio > 0.9\n",
			ticks: []tick{{0, high, []string{"full /a firing shadow"}}},
		},
		{
			name:  "global shadow",
			rules: "rules:\n- name: full\n  condition: usage_ratio > 0.9\n",
			opts:  EngineOptions{Shadow: true},
			ticks: []tick{{0, high, []string{"full /a firing shadow"}}},
		},
		{
			name:  "ints and doubles mix in arithmetic",
			rules: "rules:\n- name: big\n  condition: working_set_bytes / 1048576 > 900 && 2 * 3 == 6\n",
			ticks: []tick{{0, low, nil}, {10 * time.Second, high, []string{"big /a firing enforce"}}},
		},
		{
			name:  "vanished target resolves after the grace period",
			rules: "rules:\n- name: full\n  condition: usage_ratio > 0.9\n",
			opts:  EngineOptions{TargetGrace: 15 * time.Second},
			ticks: []tick{
				{0, high, []string{"full /a firing enforce"}},
				{10 * time.Second, snapOf(), nil},
				{20 * time.Second, snapOf(), []string{"full /a resolved enforce"}},
			},
		},
		{
			name:  "node rule with node signals",
			rules: "rules:\n- name: pressure\n  target: node\n  condition: psi.memory.some_avg10 > 20 && node.used_ratio > 0.5\n",
			ticks: []tick{
				{0, &collectors.Snapshot{Node: collectors.NodeSample{UsedRatio: 0.9}}, nil},
				{10 * time.Second, &collectors.Snapshot{Node: collectors.NodeSample{UsedRatio: 0.9,
					MemoryPressure: collectors.Pressure{Present: true, Some: collectors.PSIRecord{Avg10: 30}}}}, []string{"pressure node firing enforce"}},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			runTicks(t, NewEngine(mustLoad(t, tc.rules), tc.opts), tc.ticks)
		})
	}
}

// TestEngineForgetsVanishedTargets: a vanished cgroup no rule selects is
// forgotten at the next full snapshot; one a rule selects is kept for the
// grace period (its cooldowns and history survive a recreation) and then
// forgotten, its firing rules resolved, also when the rule set was
// reloaded while it was gone.
func TestEngineForgetsVanishedTargets(t *testing.T) {
	const grace = 15 * time.Second
	selected := "rules:\n- name: full\n  selector: {paths: [\"/apps/**\"]}\n  condition: usage_ratio > 0.9\n"
	reordered := "rules:\n- name: other\n  condition: usage_ratio > 2\n- name: full\n  selector: {paths: [\"/apps/**\"]}\n  condition: usage_ratio > 0.9\n"
	both := snapOf(cg("/apps/a", 950, 1000), cg("/other/b", 950, 1000))
	tests := []struct {
		name   string
		swapTo string // reload after the first tick
		ticks  []tick
		// targets tracked after each tick
		want []int
	}{
		{
			name: "unselected at once, selected after the grace",
			ticks: []tick{
				{0, both, []string{"full /apps/a firing enforce"}},
				{5 * time.Second, snapOf(), nil},
				{10 * time.Second, snapOf(), nil},
				{20 * time.Second, snapOf(), []string{"full /apps/a resolved enforce"}},
			},
			want: []int{2, 1, 1, 0},
		},
		{
			name:   "partial snapshots drop nothing",
			ticks:  []tick{{0, both, []string{"full /apps/a firing enforce"}}, {20 * time.Second, &collectors.Snapshot{Partial: true}, nil}},
			want:   []int{2, 2},
			swapTo: "",
		},
		{
			name:   "reloaded while gone: resolved by name",
			swapTo: reordered,
			ticks: []tick{
				{0, both, []string{"full /apps/a firing enforce"}},
				{5 * time.Second, snapOf(), nil},
				{20 * time.Second, snapOf(), []string{"full /apps/a resolved enforce"}},
			},
			want: []int{2, 1, 0},
		},
		{
			name:   "reloaded while gone, rule removed: nothing to resolve",
			swapTo: "rules:\n- name: other\n  condition: usage_ratio > 2\n",
			ticks: []tick{
				{0, both, []string{"full /apps/a firing enforce"}},
				{5 * time.Second, snapOf(), nil},
				{20 * time.Second, snapOf(), nil},
			},
			want: []int{2, 1, 0},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := NewEngine(mustLoad(t, selected), EngineOptions{TargetGrace: grace})
			for i, tk := range tc.ticks {
				runTicks(t, e, []tick{tk})
				if i == 0 && tc.swapTo != "" {
					e.Swap(mustLoad(t, tc.swapTo))
				}
				e.mu.Lock()
				got := len(e.targets)
				e.mu.Unlock()
				if got != tc.want[i] {
					t.Errorf("at %v: %d targets tracked, want %d", tk.at, got, tc.want[i])
				}
			}
		})
	}
}

// TestEngineBoundsVanishedTargets: past MaxVanished, the targets gone the
// longest are dropped first (their firing rules resolved), whatever is
// left of their grace.
func TestEngineBoundsVanishedTargets(t *testing.T) {
	e := NewEngine(mustLoad(t, "rules:\n- name: full\n  condition: usage_ratio > 0.9\n"),
		EngineOptions{TargetGrace: time.Hour, MaxVanished: 2})
	a, b, c, d := cg("/a", 950, 1000), cg("/b", 950, 1000), cg("/c", 950, 1000), cg("/d", 950, 1000)
	ticks := []tick{
		{0, snapOf(a, b, c, d), []string{"full /a firing enforce", "full /b firing enforce", "full /c firing enforce", "full /d firing enforce"}},
		{5 * time.Second, snapOf(b, c, d), nil},
		{10 * time.Second, snapOf(c, d), nil},
		{15 * time.Second, snapOf(d), []string{"full /a resolved enforce"}},
		{20 * time.Second, snapOf(), []string{"full /b resolved enforce"}},
		{25 * time.Second, snapOf(b), []string{"full /b firing enforce"}}, // back: a new episode
	}
	want := [][]string{{"/a", "/b", "/c", "/d"}, {"/a", "/b", "/c", "/d"}, {"/a", "/b", "/c", "/d"}, {"/b", "/c", "/d"}, {"/c", "/d"}, {"/b", "/c", "/d"}}
	for i, tk := range ticks {
		runTicks(t, e, []tick{tk})
		e.mu.Lock()
		var got []string
		for k := range e.targets {
			got = append(got, k)
		}
		e.mu.Unlock()
		sort.Strings(got)
		if !reflect.DeepEqual(got, want[i]) {
			t.Errorf("at %v: targets %q, want %q", tk.at, got, want[i])
		}
	}
}

func TestSelectorAndOptIn(t *testing.T) {
	set := mustLoad(t, `rules:
- name: optin
  selector: {opt_in: true}
  condition: usage_ratio > 0.9
- name: pods
  selector: {paths: ["/kubepods/**"], kinds: [container], namespaces: ["prod-*"], labels: {app: "web*"}}
  condition: usage_ratio > 0.9
`)
	labelled := cg("/kubepods/burstable/pod1/c1", 950, 1000)
	labelled.Identity = collectors.Identity{Kind: "container", Namespace: "prod-eu", Labels: map[string]string{"app": "web-1", OptInKey: "true"}}
	optedOut := cg("/batch/job1", 950, 1000)
	optedOut.Identity.Annotations = map[string]string{OptInKey: "false"}
	byConfig := cg("/batch/job2", 950, 1000)
	plain := cg("/system.slice/x.service", 950, 1000)
	e := NewEngine(set, EngineOptions{OptIn: OptIn{Paths: []string{"/batch/*"}}})
	got := brief(e.Evaluate(snapOf(labelled, optedOut, byConfig, plain), t0))
	want := []string{
		"optin /batch/job2 firing enforce",
		"optin /kubepods/burstable/pod1/c1 firing enforce",
		"pods /kubepods/burstable/pod1/c1 firing enforce",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func TestMatchPath(t *testing.T) {
	tests := []struct {
		glob, path string
		want       bool
	}{
		{"/kubepods/**", "/kubepods/burstable/pod1/c1", true},
		{"/kubepods/**", "/kubepods", true},
		{"/kubepods/*", "/kubepods/burstable/pod1", false},
		{"/kubepods/*/pod*", "/kubepods/burstable/pod1", true},
		{"/**/*.service", "/system.slice/foo.service", true},
		{"/**/*.service", "/foo.scope", false},
		{"/", "/", true},
		{"/a", "/a/b", false},
	}
	for _, tc := range tests {
		if got := matchPath(tc.glob, tc.path); got != tc.want {
			t.Errorf("matchPath(%q, %q) = %v, want %v", tc.glob, tc.path, got, tc.want)
		}
	}
}

func TestHistoryFunctions(t *testing.T) {
	// One sample every 10s; the counter resets (cgroup recreated) at 40s.
	type sample struct {
		ws       uint64 // MiB
		oomKills uint64
	}
	series := []sample{{100, 3}, {110, 3}, {120, 4}, {130, 4}, {140, 0}, {150, 1}}
	tests := []struct {
		name string
		expr string
		want float64
	}{
		{"rate of a gauge", `rate(working_set_bytes, "1m") / 1048576`, 1},
		{"deriv", `deriv(working_set_bytes, "1m") / 1048576`, 1},
		{"delta over window", `delta(working_set_bytes, "20s") / 1048576`, 20},
		{"avg_over", `avg_over(working_set_bytes, "1m") / 1048576`, 125},
		{"max_over", `max_over(working_set_bytes, "30s") / 1048576`, 150},
		{"min_over", `min_over(working_set_bytes, "30s") / 1048576`, 120},
		{"predict_linear", `predict_linear(working_set_bytes, "1m", "60s") / 1048576`, 210},
		{"increase is reset-aware", `increase(events.oom_kill, "1m")`, 2},
		{"events since last tick", `delta(events.oom_kill)`, 1},
		{"changes counts increments, not the reset", `changes(events.oom_kill, "1m")`, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			set := mustLoad(t, "rules:\n- name: r\n  condition: 'true'\n  actions:\n  - action: x\n    verify: '"+strings.ReplaceAll(tc.expr, "'", "''")+" > -1e300'\n")
			e := NewEngine(set, EngineOptions{})
			var snap *collectors.Snapshot
			for i, s := range series {
				c := cg("/a", s.ws, 1000)
				c.Events.OOMKill = s.oomKills
				snap = snapOf(c)
				snap.Time = t0.Add(time.Duration(i) * 10 * time.Second)
				if i < len(series)-1 {
					e.Evaluate(snap, snap.Time)
				}
			}
			// Verify on the last, not yet evaluated, sample.
			_, ev, err := e.Verify(set.Rules[0].Actions[0].Verify, snap, Target{Kind: TargetCgroup, Path: "/a"})
			if err != nil {
				t.Fatal(err)
			}
			var got float64
			found := false
			for k, v := range ev {
				if strings.Contains(k, "(") {
					got, found = v, true
				}
			}
			if !found {
				t.Fatalf("no function value in evidence %v", ev)
			}
			// the evidence holds the raw function value; rescale MiB ones
			if strings.Contains(tc.expr, "1048576") {
				got /= 1 << 20
			}
			if math.Abs(got-tc.want) > 1e-6 {
				t.Errorf("%s = %v, want %v (evidence %v)", tc.expr, got, tc.want, ev)
			}
		})
	}
}

func TestAlertFunction(t *testing.T) {
	set := mustLoad(t, `rules:
- name: from-alert
  condition: alert("KubeMemoryHigh")
- name: exact
  condition: target_alert("KubeMemoryHigh")
`)
	e := NewEngine(set, EngineOptions{})
	snap := snapOf(cg("/a", 1, 1000), cg("/b", 1, 1000))
	snap.Alerts = []collectors.Alert{
		{Name: "KubeMemoryHigh", Status: "firing", Target: "/a"},
		{Name: "KubeMemoryHigh", Status: "resolved", Target: "/b"},
	}
	fs := e.Evaluate(snap, t0)
	if got, want := brief(fs), []string{"exact /a firing enforce", "from-alert /a firing enforce"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	for _, f := range fs {
		if f.Alert != "KubeMemoryHigh" {
			t.Errorf("%s: Alert = %q, want KubeMemoryHigh", f.Rule, f.Alert)
		}
	}
	// A node-wide alert reaches every cgroup through alert(), not target_alert().
	snap.Alerts = []collectors.Alert{{Name: "KubeMemoryHigh", Status: "firing"}}
	got := brief(e.Evaluate(snap, t0.Add(10*time.Minute)))
	want := []string{"exact /a resolved enforce", "from-alert /a firing enforce", "from-alert /b firing enforce"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestEvidence(t *testing.T) {
	set := mustLoad(t, "rules:\n- name: full\n  condition: 'usage_ratio > 0.9 && seconds_to_limit > 0 && node.psi.memory.some_avg10 >= 0 && rate(working_set_bytes, \"1m\") >= 0'\n")
	e := NewEngine(set, EngineOptions{})
	e.Evaluate(snapOf(cg("/a", 900, 1000)), t0)
	fs := e.Evaluate(snapOf(cg("/a", 960, 1000)), t0.Add(60*time.Second))
	if len(fs) != 1 {
		t.Fatalf("got %d findings, want 1", len(fs))
	}
	ev := fs[0].Evidence
	want := map[string]float64{
		"usage_ratio":                 0.96,
		"seconds_to_limit":            math.Inf(1),
		"node.psi.memory.some_avg10":  0,
		"working_set_bytes":           960 << 20,
		"rate(working_set_bytes, 1m)": float64(60<<20) / 60,
	}
	if !reflect.DeepEqual(ev, want) {
		t.Errorf("evidence %v, want %v", ev, want)
	}
	// Non-finite evidence survives JSON.
	b, err := json.Marshal(fs[0])
	if err != nil {
		t.Fatal(err)
	}
	var back Finding
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Evidence, want) {
		t.Errorf("after JSON: %v, want %v", back.Evidence, want)
	}
}

func TestStateRestoreKeepsCooldown(t *testing.T) {
	rules := "rules:\n- name: full\n  condition: usage_ratio > 0.9\n  cooldown: 10m\n- name: slow\n  condition: usage_ratio > 0.9\n  for: 1m\n  cooldown: 0s\n"
	high := snapOf(cg("/a", 950, 1000))
	e := NewEngine(mustLoad(t, rules), EngineOptions{})
	if got := brief(e.Evaluate(high, t0)); !reflect.DeepEqual(got, []string{"full /a firing enforce"}) {
		t.Fatalf("first tick: %q", got)
	}
	e.Evaluate(high, t0.Add(30*time.Second))
	b, err := json.Marshal(e.State())
	if err != nil {
		t.Fatal(err)
	}
	var states []TargetState
	if err := json.Unmarshal(b, &states); err != nil {
		t.Fatal(err)
	}
	// A restarted agent: new engine, same rules, restored state.
	e2 := NewEngine(mustLoad(t, rules), EngineOptions{})
	e2.Restore(states)
	runTicks(t, e2, []tick{
		{40 * time.Second, high, nil},                                // within cooldown: no refire
		{60 * time.Second, high, []string{"slow /a firing enforce"}}, // pending since t0 survives
		{10 * time.Minute, high, []string{"full /a firing enforce"}}, // cooldown over: repeats
	})
	if !reflect.DeepEqual(e.State()[0].Target.Key(), "/a") {
		t.Errorf("state target %v", e.State()[0].Target)
	}
}

func TestSwapKeepsState(t *testing.T) {
	high := snapOf(cg("/a", 950, 1000))
	e := NewEngine(mustLoad(t, "rules:\n- name: full\n  condition: usage_ratio > 0.9\n- name: gone\n  condition: usage_ratio > 0.9\n"), EngineOptions{})
	e.Evaluate(high, t0)
	e.Swap(mustLoad(t, "rules:\n- name: new\n  condition: usage_ratio > 0.9\n- name: full\n  condition: usage_ratio > 0.95\n"))
	got := brief(e.Evaluate(high, t0.Add(10*time.Second)))
	// "full" keeps firing (0.95 > 0.95 is false: it resolves); "new" fires.
	want := []string{"full /a resolved enforce", "new /a firing enforce"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestVerifyTargetGone(t *testing.T) {
	set := mustLoad(t, "rules:\n- name: r\n  condition: 'true'\n  actions:\n  - action: reclaim\n    verify: usage_ratio < 0.8\n")
	e := NewEngine(set, EngineOptions{})
	v := set.Rules[0].Actions[0].Verify
	ok, ev, err := e.Verify(v, snapOf(cg("/a", 700, 1000)), Target{Kind: TargetCgroup, Path: "/a"})
	if err != nil || !ok || ev["usage_ratio"] != 0.7 {
		t.Errorf("Verify = %v, %v, %v; want true, usage_ratio 0.7, nil", ok, ev, err)
	}
	if _, _, err := e.Verify(v, snapOf(), Target{Kind: TargetCgroup, Path: "/a"}); !errors.Is(err, ErrTargetGone) {
		t.Errorf("Verify on a missing target: %v, want ErrTargetGone", err)
	}
}

// TestConcurrentUse runs Evaluate, Verify, Swap, State and metric
// collection at once (run with -race).
func TestConcurrentUse(t *testing.T) {
	rules := "rules:\n- name: r\n  condition: rate(working_set_bytes, \"30s\") > 0\n  actions:\n  - action: x\n    verify: deriv(working_set_bytes, \"30s\") <= 0\n"
	set := mustLoad(t, rules)
	e := NewEngine(set, EngineOptions{})
	done := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				snap := snapOf(cg("/a", uint64(100+i), 1000))
				snap.Time = t0.Add(time.Duration(i) * time.Second)
				switch w {
				case 0:
					e.Verify(set.Rules[0].Actions[0].Verify, snap, Target{Kind: TargetCgroup, Path: "/a"})
				case 1:
					e.State()
					ch := make(chan prometheus.Metric, 64)
					e.Collector().Collect(ch)
				case 2:
					if i%50 == 0 {
						e.Swap(mustLoad(t, rules))
					}
				}
			}
		}()
	}
	for i := 0; i < 300; i++ {
		snap := snapOf(cg("/a", uint64(100+i), 1000))
		e.Evaluate(snap, t0.Add(time.Duration(i)*time.Second))
	}
	close(done)
	wg.Wait()
}

// TestHistoryOfReusedStatReads: the collector reads a quiet cgroup's
// memory.stat every few seconds and reuses the read in between (derived
// stat_age_seconds). History functions of stat.* signals use the read
// times: a counter growing 100/s, read every 5 s and evaluated every
// second, has rate 100 at every tick, not a flat run and a step.
func TestHistoryOfReusedStatReads(t *testing.T) {
	const expr = `rate(stat.pgmajfault, "6s")`
	set := mustLoad(t, `rules:
- name: majfaults
  condition: '`+expr+` >= 99.999 && `+expr+` <= 100.001'
  actions:
  - action: x
    verify: '`+expr+` >= 99.999 && `+expr+` <= 100.001 && deriv(stat.pgmajfault, "6s") >= 99.999 && delta(stat.pgmajfault) == 0'
`)
	e := NewEngine(set, EngineOptions{})
	sample := func(sec int) *collectors.Snapshot {
		read := sec - sec%5 // the read in use
		c := cg("/a", 100, 1000)
		c.Stat.Pgmajfault = uint64(read * 100)
		c.Derived.StatAgeSeconds = float64(sec - read)
		snap := snapOf(c)
		snap.Time = t0.Add(time.Duration(sec) * time.Second)
		return snap
	}
	for sec := 0; sec < 14; sec++ {
		snap := sample(sec)
		// From the second read on there is a read inside the window: the
		// rule fires then and holds at every tick (no resolved).
		var want []string
		if sec == 5 {
			want = []string{"majfaults /a firing enforce"}
		}
		if got := brief(e.Evaluate(snap, snap.Time)); !reflect.DeepEqual(got, want) {
			t.Errorf("at %ds (stat read at %ds): findings %v, want %v", sec, sec-sec%5, got, want)
		}
	}
	// At 14 s the read of 10 s is reused: rate and deriv 100 over the
	// reads, and no change since the previous evaluation.
	ok, ev, err := e.Verify(set.Rules[0].Actions[0].Verify, sample(14), Target{Kind: TargetCgroup, Path: "/a"})
	if err != nil || !ok {
		t.Errorf("verify at 14 s (stat read at 10 s) = %v %v, evidence %v; want rate and deriv 100, delta 0", ok, err, ev)
	}
	// At 15 s a new read: the change since the previous evaluation is the
	// whole change between the reads.
	set2 := mustLoad(t, `rules:
- name: d
  condition: 'true'
  actions:
  - action: x
    verify: 'delta(stat.pgmajfault) == 500'
`)
	e.Swap(set2)
	if ok, ev, err := e.Verify(set2.Rules[0].Actions[0].Verify, sample(15), Target{Kind: TargetCgroup, Path: "/a"}); err != nil || !ok {
		t.Errorf("verify at 15 s (a new read) = %v %v, evidence %v; want delta 500", ok, err, ev)
	}
}

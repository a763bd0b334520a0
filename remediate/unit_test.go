package remediate

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/remediate/journal"
	"github.com/vigil-agent/vigil/rules"
)

func TestValidators(t *testing.T) {
	v := Validators()
	for _, name := range []string{ActionThrottleMemory, ActionReclaim, ActionThrottleCPU, ActionFreeze, ActionThaw, ActionSignal, ActionKillCgroup, ActionRestartUnit, ActionExec} {
		if v[name] == nil {
			t.Errorf("no validator for %s", name)
		}
	}
	tests := []struct {
		action  string
		params  map[string]any
		wantErr string
	}{
		{ActionThrottleMemory, nil, ""},
		{ActionThrottleMemory, map[string]any{"interval": "2s", "psi_target": 0.5, "min_bytes": "64Mi", "livelock_for": "1m"}, ""},
		{ActionThrottleMemory, map[string]any{"interval": "10ms"}, "interval"},
		{ActionThrottleMemory, map[string]any{"step": 2.0}, "step"},
		{ActionThrottleMemory, map[string]any{"bogus": 1}, "unknown parameter"},
		{ActionReclaim, map[string]any{"bytes": "128Mi"}, ""},
		{ActionReclaim, map[string]any{"bytes": "lots"}, "bytes"},
		{ActionThrottleCPU, map[string]any{"cpus": 0.25, "period": "50ms", "soft_limit": 1 << 26}, ""},
		{ActionThrottleCPU, map[string]any{"cpus": 0}, "cpus"},
		{ActionThrottleCPU, map[string]any{"period": "5s"}, "period"},
		{ActionSignal, map[string]any{"signal": "SIGTERM", "grace": "5s", "avoid": []any{"postgres*"}}, ""},
		{ActionSignal, map[string]any{"signal": "SIGFOO"}, "unknown signal"},
		{ActionSignal, map[string]any{"prefer": []any{1}}, "prefer"},
		{ActionFreeze, nil, ""},
		{ActionFreeze, map[string]any{"x": 1}, "unknown parameter"},
		{ActionRestartUnit, map[string]any{"unit": "app.service", "timeout": "1m"}, ""},
		{ActionExec, map[string]any{"command": []any{"/bin/true"}}, ""},
		{ActionExec, map[string]any{}, "command"},
	}
	for _, tt := range tests {
		err := v[tt.action](tt.params)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s %v: unexpected error %v", tt.action, tt.params, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s %v: error %v, want one mentioning %q", tt.action, tt.params, err, tt.wantErr)
		}
	}
}

func TestMatchTarget(t *testing.T) {
	pod := rules.Target{Kind: "cgroup", Path: "/kubepods/burstable/pod1/abc",
		Identity: collectors.Identity{Namespace: "kube-system", Labels: map[string]string{"vigil.io/remediate": "true"}}}
	unit := rules.Target{Kind: "cgroup", Path: "/system.slice/kubelet.service", Identity: collectors.Identity{Unit: "kubelet.service"}}
	app := rules.Target{Kind: "cgroup", Path: "/system.slice/app.service", Identity: collectors.Identity{Unit: "app.service"}}
	tests := []struct {
		pattern string
		target  rules.Target
		want    bool
	}{
		{"/kubepods/**", pod, true},
		{"/kubepods", pod, false},
		{"/kubepods/burstable/*/*", pod, true},
		{"namespace:kube-*", pod, true},
		{"label:vigil.io/remediate=true", pod, true},
		{"label:vigil.io/remediate=false", pod, false},
		{"unit:kubelet.service", unit, true},
		{"unit:kubelet.service", app, false},
		{"/system.slice/kubelet.service/**", unit, true},
		{"/", app, false},
	}
	for _, tt := range tests {
		if got := matchTarget(tt.pattern, tt.target); got != tt.want {
			t.Errorf("matchTarget(%q, %s) = %v, want %v", tt.pattern, tt.target.Path, got, tt.want)
		}
	}
	// The default protected set covers the node's own daemons and kube-system.
	for _, tg := range []rules.Target{pod, unit} {
		if !matchAnyTarget(DefaultProtected, tg) {
			t.Errorf("%s not protected by default", tg.Path)
		}
	}
	if matchAnyTarget(DefaultProtected, app) {
		t.Errorf("%s protected by default, want only opt-in to decide", app.Path)
	}
}

func TestSafetyAdmit(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	tg := func(p string) rules.Target { return rules.Target{Kind: "cgroup", Path: p} }
	base := SafetyConfig{OptIn: []string{"/apps/**"}, SelfCgroup: "/vigil"}
	type call struct {
		target string
		at     time.Duration
		done   bool // release the active slot right after
		want   string
	}
	tests := []struct {
		name  string
		cfg   func(SafetyConfig) SafetyConfig
		calls []call
	}{
		{"per target bucket", func(c SafetyConfig) SafetyConfig { c.PerTarget = Rate{Every: time.Minute, Burst: 2}; return c }, []call{
			{"/apps/a", 0, true, ""}, {"/apps/a", time.Second, true, ""}, {"/apps/a", 2 * time.Second, true, RefusedRateTarget},
			{"/apps/b", 3 * time.Second, true, ""}, {"/apps/a", 62 * time.Second, true, ""},
		}},
		{"per node bucket", func(c SafetyConfig) SafetyConfig { c.PerNode = Rate{Every: time.Minute, Burst: 2}; return c }, []call{
			{"/apps/a", 0, true, ""}, {"/apps/b", 0, true, ""}, {"/apps/c", 0, true, RefusedRateNode}, {"/apps/c", time.Minute, true, ""},
		}},
		{"max concurrent", func(c SafetyConfig) SafetyConfig { c.MaxConcurrent = 2; return c }, []call{
			{"/apps/a", 0, false, ""}, {"/apps/b", 0, false, ""}, {"/apps/c", 0, false, RefusedMaxConcurrent},
		}},
		{"blast radius", func(c SafetyConfig) SafetyConfig { c.BlastRadius, c.BlastWindow = 2, time.Minute; return c }, []call{
			{"/apps/a", 0, true, ""}, {"/apps/b", 0, true, ""}, {"/apps/c", 0, true, RefusedBlastRadius},
			{"/apps/a", time.Second, true, ""}, {"/apps/c", 61 * time.Second, true, ""},
		}},
		{"targets", func(c SafetyConfig) SafetyConfig {
			c.Protected = []string{"/apps/db"}
			c.Omit = []string{"/apps/batch/**"}
			return c
		}, []call{
			{"/apps/db", 0, true, RefusedProtected}, {"/apps/batch/x", 0, true, RefusedOmitted}, {"/other", 0, true, RefusedNotOptedIn},
			{"/vigil", 0, true, RefusedSelf}, {"/", 0, true, RefusedSelf}, {"/vigil/child", 0, true, RefusedSelf}, {"/apps/web", 0, true, ""},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSafety(tt.cfg(base))
			for i, c := range tt.calls {
				got := s.admit(tg(c.target), t0.Add(c.at))
				if got != c.want {
					t.Errorf("call %d admit(%s, +%s) = %q, want %q", i, c.target, c.at, got, c.want)
				}
				if got == "" && c.done {
					s.done()
				}
			}
		})
	}
}

// TestSafetyForgetsIdleTargets: the per-target rate buckets and
// blast-radius entries of targets that no longer constrain anything are
// dropped, so churned cgroups (pods, units) do not pile up in the safety
// layer; a target whose bucket is not yet refilled is kept (its limit
// still holds).
func TestSafetyForgetsIdleTargets(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	cfg := SafetyConfig{OptIn: []string{"/apps/**"}, PerTarget: Rate{Every: time.Minute, Burst: 1},
		BlastRadius: 5000, BlastWindow: 2 * time.Minute}
	s := newSafety(cfg)
	for i := range 1000 {
		if r := s.admit(rules.Target{Kind: "cgroup", Path: fmt.Sprintf("/apps/pod-%d", i)}, t0); r != "" {
			t.Fatalf("admit pod-%d: %s", i, r)
		}
		s.done()
	}
	tests := []struct {
		at                      time.Duration
		target                  string
		want                    string
		wantBuckets, wantRecent int
	}{
		// 30s later: every bucket is still empty, every entry in the window.
		{30 * time.Second, "/apps/pod-0", RefusedRateTarget, 1000, 1000},
		{30 * time.Second, "/apps/new-a", "", 1001, 1001},
		// 61s: the 1000 buckets are full again (dropped), new-a's is not;
		// the blast-radius window still holds all of them.
		{61 * time.Second, "/apps/new-b", "", 2, 1002},
		// 3m30s: only new-c is left anywhere.
		{3*time.Minute + 30*time.Second, "/apps/new-c", "", 1, 1},
	}
	for _, tt := range tests {
		got := s.admit(rules.Target{Kind: "cgroup", Path: tt.target}, t0.Add(tt.at))
		if got == "" {
			s.done()
		}
		buckets, recent := s.sizes()
		if got != tt.want || buckets != tt.wantBuckets || recent != tt.wantRecent {
			t.Errorf("+%v admit(%s) = %q with %d buckets, %d blast-radius entries; want %q, %d, %d",
				tt.at, tt.target, got, buckets, recent, tt.want, tt.wantBuckets, tt.wantRecent)
		}
	}
}

func TestThrottleControllerStep(t *testing.T) {
	tp, err := parseThrottleParams(nil)
	if err != nil {
		t.Fatal(err)
	}
	const mi = 1 << 20
	m := MemoryState{UsageBytes: 300 * mi, InactiveFileBytes: 100 * mi, HighBytes: collectors.Unlimited, MaxBytes: 512 * mi}
	floor, ceiling := tp.bounds(m, collectors.Unlimited)
	if want := uint64(float64(200*mi) * 1.05); floor != want {
		t.Errorf("floor = %d, want working set + 5%% = %d", floor, want)
	}
	if want := uint64(512*mi - 512*mi/10); ceiling != want {
		t.Errorf("ceiling = %d, want memory.max - 10%% = %d", ceiling, want)
	}
	tests := []struct {
		name     string
		high     uint64
		pressure float64
		want     uint64
	}{
		{"no pressure: full step down", 400 * mi, 0, uint64(float64(400*mi)*0.98) &^ 4095},
		{"half the target: half a step", 400 * mi, tp.psiTarget / 2, uint64(float64(400*mi)*0.99) &^ 4095},
		{"over target: back off", 400 * mi, tp.psiTarget * 2, min(uint64(float64(400*mi)*1.05)&^4095, ceiling)},
		{"never below the floor", floor + mi, 0, floor},
		{"never above the ceiling", ceiling, 50, ceiling},
	}
	for _, tt := range tests {
		if got := tp.next(tt.high, tt.pressure, floor, ceiling); got != tt.want {
			t.Errorf("%s: next(%d, %v) = %d, want %d", tt.name, tt.high, tt.pressure, got, tt.want)
		}
	}
}

func TestVictimPick(t *testing.T) {
	procs := []journal.Process{{PID: 10, Name: "java", RSSBytes: 900}, {PID: 11, Name: "sidecar", RSSBytes: 100}, {PID: 12, Name: "postgres", RSSBytes: 500}}
	tests := []struct {
		name   string
		policy VictimPolicy
		want   int
	}{
		{"largest rss", VictimPolicy{SelfPID: 1}, 10},
		{"avoid", VictimPolicy{SelfPID: 1, Avoid: []string{"java"}}, 12},
		{"prefer", VictimPolicy{SelfPID: 1, Prefer: []string{"side*"}}, 11},
		{"omit", VictimPolicy{SelfPID: 1, Omit: []string{"java", "postgres"}}, 11},
		{"never vigil itself", VictimPolicy{SelfPID: 10}, 12},
	}
	for _, tt := range tests {
		got, ok := tt.policy.pick(procs, VictimPolicy{})
		if !ok || got.PID != tt.want {
			t.Errorf("%s: picked %d (%v), want %d", tt.name, got.PID, ok, tt.want)
		}
	}
	if _, ok := (VictimPolicy{SelfPID: 10}).pick(procs[:1], VictimPolicy{}); ok {
		t.Errorf("picked vigil itself when it is the only process")
	}
}

func TestPauseHandler(t *testing.T) {
	x := newExecutor(t, Config{}, openJournal(t), nil)
	srv := httptest.NewServer(x.PauseHandler("s3cret"))
	t.Cleanup(srv.Close)
	tests := []struct {
		method, path, token string
		wantStatus          int
		wantPaused          bool
	}{
		{"POST", "/api/v1/pause", "", 401, false},
		{"POST", "/api/v1/pause", "wrong", 401, false},
		{"POST", "/api/v1/pause", "s3cret", 200, true},
		{"GET", "/api/v1/pause", "", 200, true},
		{"POST", "/api/v1/resume", "s3cret", 200, false},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(tt.method, srv.URL+tt.path, nil)
		if tt.token != "" {
			req.Header.Set("Authorization", "Bearer "+tt.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.wantStatus || x.Paused() != tt.wantPaused {
			t.Errorf("%s %s token %q: status %d paused %v; want %d %v", tt.method, tt.path, tt.token, resp.StatusCode, x.Paused(), tt.wantStatus, tt.wantPaused)
		}
	}
	if got := testutil.ToFloat64(x.metrics.paused); got != 0 {
		t.Errorf("vigil_remediation_paused = %v after resume", got)
	}
}

// TestShadowJournaledOncePerEpisode: shadow findings never act and are
// journaled once until they resolve.
func TestShadowJournaledOncePerEpisode(t *testing.T) {
	j := openJournal(t)
	x := newExecutor(t, Config{Safety: SafetyConfig{OptIn: []string{"/**"}}, Measure: []time.Duration{time.Millisecond}}, j, nil)
	f := rules.Finding{Rule: "shadowed", Mode: rules.Shadow, State: rules.Firing, Time: time.Now(),
		Target:  rules.Target{Kind: "cgroup", Path: "/apps/a"},
		Actions: []rules.ActionStep{{Action: ActionKillCgroup}}}
	for range 3 {
		x.Handle([]rules.Finding{f})
	}
	resolved := f
	resolved.State = rules.Resolved
	x.Handle([]rules.Finding{resolved})
	x.Handle([]rules.Finding{f})
	eventually(t, 5*time.Second, "two shadow records", func() bool {
		recs, _ := j.List(journal.Filter{Kind: journal.KindShadow})
		return len(recs) == 2
	})
	x.Observe(&collectors.Snapshot{Seq: 1, Time: time.Now().Add(time.Second),
		Cgroups: []collectors.CgroupSample{{Path: "/apps/a"}}})
	eventually(t, 5*time.Second, "shadow outcome", func() bool {
		recs, _ := j.List(journal.Filter{Kind: journal.KindShadow, Outcome: journal.OutcomeShadow})
		return len(recs) == 2
	})
	recs, _ := j.List(journal.Filter{Kind: journal.KindShadow})
	for _, r := range recs {
		if !r.Shadow || len(r.Steps) != 0 {
			t.Errorf("shadow record %s: shadow %v, %d steps", r.ID, r.Shadow, len(r.Steps))
		}
	}
}

func TestMetricsLint(t *testing.T) {
	x := newExecutor(t, Config{}, openJournal(t), nil)
	x.metrics.remediations.WithLabelValues(ActionReclaim, "applied").Inc()
	x.metrics.outcomes.WithLabelValues(journal.OutcomeOOMAvoided).Inc()
	x.metrics.refused.WithLabelValues(RefusedProtected).Inc()
	x.metrics.duration.WithLabelValues(ActionReclaim).Observe(0.01)
	problems, err := testutil.CollectAndLint(x.Collector())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
	if n := testutil.CollectAndCount(x.Collector()); n != 6 {
		t.Errorf("%d metrics, want 6", n)
	}
}

func TestIsSelf(t *testing.T) {
	for _, tt := range []struct {
		target, self string
		want         bool
	}{
		{"/system.slice/vigil.service", "/system.slice/vigil.service", true},
		{"/system.slice", "/system.slice/vigil.service", true},
		{"/", "/system.slice/vigil.service", true},
		{"/system.slice/vigil.service/hook", "/system.slice/vigil.service", true},
		{"/system.slice/vigil.service2", "/system.slice/vigil.service", false},
		{"/kubepods/burstable/pod1/c1", "/system.slice/vigil.service", false},
		{"/", "/", true},
		{"/kubepods/burstable/pod1/c1", "/", false},
		{"/anything", "", false},
	} {
		if got := isSelf(tt.target, tt.self); got != tt.want {
			t.Errorf("isSelf(%q, %q) = %v, want %v", tt.target, tt.self, got, tt.want)
		}
	}
}

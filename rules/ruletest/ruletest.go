// Package ruletest runs vigil rule unit tests, in the style of promtool's
// rule tests: a YAML file gives series of signal values over time for
// cgroups and the node, and the findings expected at given times. Each tick
// builds a real collectors.Snapshot and goes through rules.Engine.Evaluate,
// exactly as in the agent.
package ruletest

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/rules"
)

// The YAML schema of a rule test file.
type fileDoc struct {
	// RuleFiles are loaded together, relative to the test file.
	RuleFiles []string `yaml:"rule_files"`
	// EvaluationInterval is the time between ticks (default 10s).
	EvaluationInterval string    `yaml:"evaluation_interval"`
	OptIn              *optInDoc `yaml:"opt_in"`
	Tests              []testDoc `yaml:"tests"`
}

type optInDoc struct {
	Paths []string `yaml:"paths"`
	Units []string `yaml:"units"`
	Node  bool     `yaml:"node"`
}

type testDoc struct {
	Name     string `yaml:"name"`
	Interval string `yaml:"interval"`
	// Duration is how long the test runs (default: the longest series or
	// the latest expectation).
	Duration string      `yaml:"duration"`
	Shadow   bool        `yaml:"shadow"`
	OptIn    *optInDoc   `yaml:"opt_in"`
	Cgroups  []cgroupDoc `yaml:"cgroups"`
	Node     *nodeDoc    `yaml:"node"`
	Alerts   []alertDoc  `yaml:"alerts"`
	Expect   []expectDoc `yaml:"expect"`
	// Never lists rules that must not fire at any tick of the test.
	Never []string `yaml:"never"`
}

type identityDoc struct {
	Kind        string            `yaml:"kind"`
	QoS         string            `yaml:"qos"`
	Unit        string            `yaml:"unit"`
	Namespace   string            `yaml:"namespace"`
	Pod         string            `yaml:"pod"`
	Container   string            `yaml:"container"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type cgroupDoc struct {
	Path     string            `yaml:"path"`
	Identity identityDoc       `yaml:"identity"`
	Series   map[string]string `yaml:"series"`
	// From and Until bound when the cgroup exists (default: always).
	From  string `yaml:"from"`
	Until string `yaml:"until"`
}

type nodeDoc struct {
	Series map[string]string `yaml:"series"`
}

type alertDoc struct {
	Name   string            `yaml:"name"`
	Target string            `yaml:"target"`
	Status string            `yaml:"status"`
	Labels map[string]string `yaml:"labels"`
	From   string            `yaml:"from"`
	Until  string            `yaml:"until"`
}

type expectDoc struct {
	At string `yaml:"at"`
	// Firing is the exact set of (rule, target) firing after the tick.
	Firing *[]firingDoc `yaml:"firing"`
	// Findings is the exact set of findings the tick emitted.
	Findings *[]findingDoc `yaml:"findings"`
}

type firingDoc struct {
	Rule   string `yaml:"rule"`
	Target string `yaml:"target"`
}

type findingDoc struct {
	Rule     string         `yaml:"rule"`
	Target   string         `yaml:"target"`
	State    string         `yaml:"state"`
	Mode     string         `yaml:"mode"`
	Alert    string         `yaml:"alert"`
	Evidence map[string]any `yaml:"evidence"`
}

// Result is the outcome of one test file.
type Result struct {
	File  string
	Tests []TestResult
}

// TestResult is the outcome of one test of a file.
type TestResult struct {
	Name     string
	Failures []string
}

// Failed reports whether any test failed.
func (r *Result) Failed() bool {
	for _, t := range r.Tests {
		if len(t.Failures) > 0 {
			return true
		}
	}
	return false
}

// String renders the result for a terminal.
func (r *Result) String() string {
	var b strings.Builder
	for _, t := range r.Tests {
		if len(t.Failures) == 0 {
			fmt.Fprintf(&b, "PASS %s: %s\n", r.File, t.Name)
			continue
		}
		fmt.Fprintf(&b, "FAIL %s: %s\n", r.File, t.Name)
		for _, f := range t.Failures {
			fmt.Fprintf(&b, "    %s\n", strings.ReplaceAll(f, "\n", "\n    "))
		}
	}
	return b.String()
}

// RunFile runs the test file name of fsys; rule files are read from fsys
// relative to it. The error is for a file that cannot run at all (bad YAML,
// rules that do not load); failed expectations are in the Result.
func RunFile(fsys fs.FS, name string, opts rules.LoadOptions) (*Result, error) {
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		return nil, fmt.Errorf("rule test %s: %w", name, err)
	}
	return run(data, name, func(rf string) (string, []byte, error) {
		p := path.Join(path.Dir(name), rf)
		b, err := fs.ReadFile(fsys, p)
		return p, b, err
	}, opts)
}

// maxTicks bounds the ticks of one test (a day at 1s).
var maxTicks = 86400

// epoch is the time of a test's first tick.
var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func run(data []byte, name string, read func(string) (string, []byte, error), opts rules.LoadOptions) (*Result, error) {
	var doc fileDoc
	if err := yaml.UnmarshalWithOptions(data, &doc, yaml.Strict()); err != nil {
		return nil, fmt.Errorf("rule test %s: %s", name, yaml.FormatError(err, false, false))
	}
	if len(doc.RuleFiles) == 0 {
		return nil, fmt.Errorf("rule test %s: rule_files is empty", name)
	}
	files := map[string][]byte{}
	for _, rf := range doc.RuleFiles {
		p, b, err := read(rf)
		if err != nil {
			return nil, fmt.Errorf("rule test %s: rule file %s: %w", name, rf, err)
		}
		files[p] = b
	}
	set, err := rules.Load(files, opts)
	if err != nil {
		return nil, fmt.Errorf("rule test %s: %w", name, err)
	}
	interval := 10 * time.Second
	if doc.EvaluationInterval != "" {
		if interval, err = parseDuration(doc.EvaluationInterval); err != nil || interval <= 0 {
			return nil, fmt.Errorf("rule test %s: evaluation_interval %q: want a positive duration", name, doc.EvaluationInterval)
		}
	}
	res := &Result{File: name}
	for i := range doc.Tests {
		td := &doc.Tests[i]
		if td.Name == "" {
			td.Name = fmt.Sprintf("test %d", i+1)
		}
		if td.OptIn == nil {
			td.OptIn = doc.OptIn
		}
		res.Tests = append(res.Tests, TestResult{Name: td.Name, Failures: runTest(set, td, interval)})
	}
	return res, nil
}

type cgroupRun struct {
	doc         *cgroupDoc
	from, until time.Duration
	series      map[string][]point
	setters     map[string]setter[collectors.CgroupSample]
}

func runTest(set *rules.RuleSet, td *testDoc, interval time.Duration) []string {
	var fails []string
	failf := func(format string, args ...any) { fails = append(fails, fmt.Sprintf(format, args...)) }
	if td.Interval != "" {
		iv, err := parseDuration(td.Interval)
		if err != nil || iv <= 0 {
			return []string{fmt.Sprintf("interval %q: want a positive duration", td.Interval)}
		}
		interval = iv
	}
	ticks := 1
	var cgs []cgroupRun
	for i := range td.Cgroups {
		cd := &td.Cgroups[i]
		cr := cgroupRun{doc: cd, series: map[string][]point{}, until: -1}
		if !strings.HasPrefix(cd.Path, "/") {
			failf("cgroup %q: path must start with /", cd.Path)
			continue
		}
		var err error
		if cd.From != "" {
			if cr.from, err = parseDuration(cd.From); err != nil {
				failf("cgroup %s: from: %v", cd.Path, err)
			}
		}
		if cd.Until != "" {
			if cr.until, err = parseDuration(cd.Until); err != nil {
				failf("cgroup %s: until: %v", cd.Path, err)
			}
		}
		for sig, s := range cd.Series {
			if cgroupSetter(sig) == nil {
				failf("cgroup %s: unknown cgroup signal %q", cd.Path, sig)
				continue
			}
			pts, err := parseSeries(s)
			if err != nil {
				failf("cgroup %s: series %s: %v", cd.Path, sig, err)
				continue
			}
			cr.series[sig] = pts
			ticks = max(ticks, len(pts))
		}
		cgs = append(cgs, cr)
	}
	nodeSeries := map[string][]point{}
	if td.Node != nil {
		for sig, s := range td.Node.Series {
			if nodeSetters[sig] == nil {
				failf("node: unknown node signal %q", sig)
				continue
			}
			pts, err := parseSeries(s)
			if err != nil {
				failf("node: series %s: %v", sig, err)
				continue
			}
			nodeSeries[sig] = pts
			ticks = max(ticks, len(pts))
		}
	}
	type alertRun struct {
		alert       collectors.Alert
		from, until time.Duration
	}
	var alerts []alertRun
	for _, ad := range td.Alerts {
		ar := alertRun{alert: collectors.Alert{Name: ad.Name, Target: ad.Target, Status: ad.Status, Labels: ad.Labels}, until: -1}
		if ar.alert.Status == "" {
			ar.alert.Status = "firing"
		}
		var err error
		if ad.From != "" {
			if ar.from, err = parseDuration(ad.From); err != nil {
				failf("alert %s: from: %v", ad.Name, err)
			}
		}
		if ad.Until != "" {
			if ar.until, err = parseDuration(ad.Until); err != nil {
				failf("alert %s: until: %v", ad.Name, err)
			}
		}
		ar.alert.StartsAt = epoch.Add(ar.from)
		alerts = append(alerts, ar)
	}
	expect := map[int][]*expectDoc{}
	for i := range td.Expect {
		ed := &td.Expect[i]
		at, err := parseDuration(ed.At)
		if err != nil || at < 0 || at%interval != 0 {
			failf("expect at %q: want a non-negative multiple of the interval %v", ed.At, interval)
			continue
		}
		k := int(at / interval)
		expect[k] = append(expect[k], ed)
		ticks = max(ticks, k+1)
	}
	if td.Duration != "" {
		d, err := parseDuration(td.Duration)
		if err != nil || d < 0 {
			failf("duration %q: want a non-negative duration", td.Duration)
		} else {
			ticks = max(ticks, int(d/interval)+1)
		}
	}
	if ticks > maxTicks {
		failf("the test runs %d ticks; at most %d (raise the interval)", ticks, maxTicks)
	}
	if len(fails) > 0 {
		return fails
	}
	never := map[string]bool{}
	for _, n := range td.Never {
		if set.Rule(n) == nil {
			failf("never: no rule %q in the rule files", n)
		}
		never[n] = true
	}
	opts := rules.EngineOptions{Shadow: td.Shadow}
	if td.OptIn != nil {
		opts.OptIn = rules.OptIn{Paths: td.OptIn.Paths, Units: td.OptIn.Units, Node: td.OptIn.Node}
	}
	engine := rules.NewEngine(set, opts)
	for i := 0; i < ticks; i++ {
		off := time.Duration(i) * interval
		now := epoch.Add(off)
		snap := &collectors.Snapshot{Seq: uint64(i + 1), Time: now}
		for _, cr := range cgs {
			if off < cr.from || (cr.until >= 0 && off >= cr.until) {
				continue
			}
			c := baseCgroup()
			c.Path = cr.doc.Path
			c.Identity = identity(&cr.doc.Identity)
			for sig, pts := range cr.series {
				if v, ok := valueAt(pts, i); ok {
					cgroupSetter(sig)(&c, v)
				}
			}
			snap.Cgroups = append(snap.Cgroups, c)
		}
		for sig, pts := range nodeSeries {
			if v, ok := valueAt(pts, i); ok {
				nodeSetters[sig](&snap.Node, v)
			}
		}
		for _, ar := range alerts {
			if off >= ar.from && (ar.until < 0 || off < ar.until) {
				snap.Alerts = append(snap.Alerts, ar.alert)
			}
		}
		findings := engine.Evaluate(snap, now)
		for _, f := range findings {
			if f.State == rules.Firing && never[f.Rule] {
				failf("at %s: rule %s fired for %s, but it must never fire in this test; evidence: %s", fmtOffset(off), f.Rule, f.Target.Key(), fmtEvidence(f.Evidence))
			}
		}
		for _, ed := range expect[i] {
			if ed.Firing != nil {
				fails = append(fails, checkFiring(off, *ed.Firing, engine.State())...)
			}
			if ed.Findings != nil {
				fails = append(fails, checkFindings(off, *ed.Findings, findings)...)
			}
		}
	}
	return fails
}

func identity(d *identityDoc) collectors.Identity {
	kind := d.Kind
	if kind == "" {
		kind = "cgroup"
	}
	return collectors.Identity{Kind: kind, QoS: d.QoS, Unit: d.Unit, Namespace: d.Namespace, Pod: d.Pod,
		Container: d.Container, Labels: d.Labels, Annotations: d.Annotations}
}

func checkFiring(off time.Duration, want []firingDoc, states []rules.TargetState) []string {
	var got, exp []string
	for _, s := range states {
		if s.State == rules.Firing {
			got = append(got, s.Rule+" "+s.Target.Key())
		}
	}
	for _, w := range want {
		exp = append(exp, w.Rule+" "+w.Target)
	}
	missing, unexpected := diff(exp, got)
	var fails []string
	for _, m := range missing {
		fails = append(fails, fmt.Sprintf("at %s: expected firing, but not firing: %s", fmtOffset(off), m))
	}
	for _, u := range unexpected {
		fails = append(fails, fmt.Sprintf("at %s: firing, but not expected: %s", fmtOffset(off), u))
	}
	return fails
}

func findingKey(rule, target, state string) string { return rule + " " + target + " " + state }

func checkFindings(off time.Duration, want []findingDoc, got []rules.Finding) []string {
	var fails []string
	gotBy := map[string]*rules.Finding{}
	var gotKeys, wantKeys []string
	for i := range got {
		f := &got[i]
		k := findingKey(f.Rule, f.Target.Key(), string(f.State))
		gotBy[k] = f
		gotKeys = append(gotKeys, k)
	}
	for _, w := range want {
		state := w.State
		if state == "" {
			state = string(rules.Firing)
		}
		k := findingKey(w.Rule, w.Target, state)
		wantKeys = append(wantKeys, k)
		f := gotBy[k]
		if f == nil {
			continue
		}
		if w.Mode != "" && string(f.Mode) != w.Mode {
			fails = append(fails, fmt.Sprintf("at %s: %s: mode %s, want %s", fmtOffset(off), k, f.Mode, w.Mode))
		}
		if w.Alert != "" && f.Alert != w.Alert {
			fails = append(fails, fmt.Sprintf("at %s: %s: alert %q, want %q", fmtOffset(off), k, f.Alert, w.Alert))
		}
		evKeys := make([]string, 0, len(w.Evidence))
		for ek := range w.Evidence {
			evKeys = append(evKeys, ek)
		}
		sort.Strings(evKeys)
		for _, ek := range evKeys {
			want, err := evidenceValue(w.Evidence[ek])
			if err != nil {
				fails = append(fails, fmt.Sprintf("at %s: %s: evidence %s: %v", fmtOffset(off), k, ek, err))
				continue
			}
			gotV, ok := f.Evidence[ek]
			if !ok {
				fails = append(fails, fmt.Sprintf("at %s: %s: no evidence %q; it has: %s", fmtOffset(off), k, ek, fmtEvidence(f.Evidence)))
				continue
			}
			if !close(gotV, want) {
				fails = append(fails, fmt.Sprintf("at %s: %s: evidence %s = %s, want %s", fmtOffset(off), k, ek, fmtFloat(gotV), fmtFloat(want)))
			}
		}
	}
	missing, unexpected := diff(wantKeys, gotKeys)
	for _, m := range missing {
		fails = append(fails, fmt.Sprintf("at %s: missing finding: %s", fmtOffset(off), m))
	}
	for _, u := range unexpected {
		fails = append(fails, fmt.Sprintf("at %s: unexpected finding: %s; evidence: %s", fmtOffset(off), u, fmtEvidence(gotBy[u].Evidence)))
	}
	return fails
}

func close(a, b float64) bool {
	if math.IsNaN(a) || math.IsNaN(b) {
		return math.IsNaN(a) && math.IsNaN(b)
	}
	if a == b {
		return true
	}
	return math.Abs(a-b) <= 1e-6*math.Max(math.Abs(a), math.Abs(b))
}

func evidenceValue(v any) (float64, error) {
	switch x := v.(type) {
	case uint64:
		return float64(x), nil
	case int64:
		return float64(x), nil
	case int:
		return float64(x), nil
	case float64:
		return x, nil
	case string:
		return parseValue(x)
	}
	return 0, fmt.Errorf("want a number, got %T", v)
}

// diff returns the entries of want not in got and of got not in want.
func diff(want, got []string) (missing, unexpected []string) {
	count := map[string]int{}
	for _, g := range got {
		count[g]++
	}
	for _, w := range want {
		if count[w] > 0 {
			count[w]--
		} else {
			missing = append(missing, w)
		}
	}
	for _, g := range got {
		if count[g] > 0 {
			count[g]--
			unexpected = append(unexpected, g)
		}
	}
	sort.Strings(missing)
	sort.Strings(unexpected)
	return missing, unexpected
}

func fmtEvidence(ev map[string]float64) string {
	keys := make([]string, 0, len(ev))
	for k := range ev {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + fmtFloat(ev[k])
	}
	return strings.Join(parts, " ")
}

func fmtFloat(v float64) string { return strconv.FormatFloat(v, 'g', 6, 64) }

// fmtOffset prints a test offset as 5m or 1m30s rather than 5m0s.
func fmtOffset(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func parseDuration(s string) (time.Duration, error) {
	if s == "0" {
		return 0, nil
	}
	return time.ParseDuration(s)
}

// point is one value of a series; missing keeps the previous value.
type point struct {
	v       float64
	missing bool
}

// valueAt returns the value at tick i: past the end the last value holds;
// "_" keeps the previous one.
func valueAt(pts []point, i int) (float64, bool) {
	if i >= len(pts) {
		i = len(pts) - 1
	}
	for ; i >= 0; i-- {
		if !pts[i].missing {
			return pts[i].v, true
		}
	}
	return 0, false
}

// parseSeries reads promtool's expanding notation: "1 2 3", "5x3" (5 four
// times), "100+10x5" (100, 110 ... 150), "1-1x3", "_" (no new value),
// "_x3". Values take binary (Ki, Mi, Gi, Ti) and decimal (K, M, G, T)
// suffixes, and inf/+Inf/max, -Inf, NaN.
func parseSeries(s string) ([]point, error) {
	var out []point
	for _, tok := range strings.Fields(s) {
		body, n := tok, 0
		if i := strings.LastIndexByte(tok, 'x'); i > 0 && i < len(tok)-1 {
			if c, err := strconv.Atoi(tok[i+1:]); err == nil {
				if c < 0 || c > 100000 {
					return nil, fmt.Errorf("%q: repeat count out of range", tok)
				}
				body, n = tok[:i], c
			}
		}
		if body == "_" {
			for j := 0; j <= n; j++ {
				out = append(out, point{missing: true})
			}
			continue
		}
		start, step := body, "0"
		neg := false
		for i := 1; i < len(body); i++ {
			if (body[i] == '+' || body[i] == '-') && body[i-1] != 'e' && body[i-1] != 'E' {
				start, step, neg = body[:i], body[i+1:], body[i] == '-'
				break
			}
		}
		a, err := parseValue(start)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", tok, err)
		}
		b, err := parseValue(step)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", tok, err)
		}
		if neg {
			b = -b
		}
		if start != body && body == tok {
			return nil, fmt.Errorf("%q: a step needs a repeat count", tok)
		}
		for j := 0; j <= n; j++ {
			out = append(out, point{v: a + float64(j)*b})
		}
	}
	if len(out) == 0 {
		return nil, errors.New("empty series")
	}
	return out, nil
}

var suffixes = []struct {
	s string
	m float64
}{
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
	{"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12},
}

func parseValue(s string) (float64, error) {
	switch strings.ToLower(s) {
	case "inf", "+inf", "max":
		return math.Inf(1), nil
	case "-inf":
		return math.Inf(-1), nil
	case "nan":
		return math.NaN(), nil
	}
	mult := 1.0
	for _, sf := range suffixes {
		if strings.HasSuffix(s, sf.s) {
			s, mult = strings.TrimSuffix(s, sf.s), sf.m
			break
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("bad value %q", s)
	}
	return v * mult, nil
}

package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/remediate"
	"github.com/vigil-agent/vigil/rules"
	"github.com/vigil-agent/vigil/rules/builtin"
	"github.com/vigil-agent/vigil/rules/loader"
	"github.com/vigil-agent/vigil/rules/ruletest"
)

func init() {
	registerCommand(&Command{
		Name:    "rules",
		Summary: "check rule files, run rule tests, replay a recorded snapshot stream against rules",
		Run:     rulesCommand,
	})
}

const rulesUsage = `check|test|replay ...

  vigil rules check [--builtin] [DIR...]       validate rule directories (precise file:line:column errors)
  vigil rules test [--builtin] [FILE...]       run rule tests (promtool style); exit 1 on failure
  vigil rules replay [--rules DIR] FILE        replay a recorded snapshot stream (vigil record) and
                                               print when and why each rule would have fired`

func rulesCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "Usage: vigil rules "+rulesUsage)
		return 2
	}
	switch args[0] {
	case "check":
		return rulesCheck(args[1:], stdout, stderr)
	case "test":
		return rulesTest(args[1:], stdout, stderr)
	case "replay":
		return rulesReplay(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, "Usage: vigil rules "+rulesUsage)
		return 0
	}
	fmt.Fprintf(stderr, "vigil rules: unknown subcommand %q\nUsage: vigil rules %s\n", args[0], rulesUsage)
	return 2
}

// ruleLoadOptions validates actions exactly as the agent does when it
// loads rules.
func ruleLoadOptions() rules.LoadOptions {
	return rules.LoadOptions{Actions: remediate.Validators()}
}

func rulesCheck(args []string, stdout, stderr io.Writer) int {
	fs := NewFlagSet("rules check", "[--builtin] [DIR...]", stderr)
	withBuiltin := fs.Bool("builtin", false, "also check the shipped rules")
	noActions := fs.Bool("skip-action-validation", false, "do not check action names and parameters")
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() == 0 && !*withBuiltin {
		return usageError(stderr, fs, "give a rules directory or --builtin")
	}
	opts := ruleLoadOptions()
	if *noActions {
		opts.Actions = nil
	}
	status := 0
	report := func(what string, set *rules.RuleSet, err error) {
		if err != nil {
			status = 1
			fmt.Fprintf(stdout, "%s: FAILED\n", what)
			for _, line := range strings.Split(err.Error(), "\n") {
				fmt.Fprintf(stdout, "  %s\n", line)
			}
			return
		}
		fmt.Fprintf(stdout, "%s: OK, %d rules in %d files\n", what, set.Len(), len(set.Files))
		for _, r := range set.Rules {
			fmt.Fprintf(stdout, "  %-32s %-6s %-8s %s\n", r.Name, r.Target, r.Mode, describeRule(r))
		}
	}
	if *withBuiltin {
		set, err := builtin.Load(opts)
		report("builtin", set, err)
	}
	for _, dir := range fs.Args() {
		set, err := loader.LoadDir(dir, opts)
		if err == nil && set.Len() == 0 {
			err = fmt.Errorf("%s: %w", dir, rules.ErrNoRules)
		}
		report(dir, set, err)
	}
	return status
}

func describeRule(r *rules.Rule) string {
	var parts []string
	if r.For > 0 {
		parts = append(parts, "for "+r.For.String())
	}
	parts = append(parts, "cooldown "+r.Cooldown.String())
	if r.Selector.OptIn {
		parts = append(parts, "opt-in")
	}
	var actions []string
	for _, a := range r.Actions {
		actions = append(actions, a.Action)
	}
	if len(actions) > 0 {
		parts = append(parts, "actions "+strings.Join(actions, " > "))
	} else {
		parts = append(parts, "observe only")
	}
	return strings.Join(parts, ", ")
}

func rulesTest(args []string, stdout, stderr io.Writer) int {
	fs := NewFlagSet("rules test", "[--builtin] [FILE...]", stderr)
	withBuiltin := fs.Bool("builtin", false, "also run the shipped rules' tests")
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() == 0 && !*withBuiltin {
		return usageError(stderr, fs, "give rule test files or --builtin")
	}
	status := 0
	show := func(res *ruletest.Result, err error) {
		if err != nil {
			status = 1
			fmt.Fprintln(stdout, "ERROR", err)
			return
		}
		if res.Failed() {
			status = 1
		}
		io.WriteString(stdout, res.String())
	}
	if *withBuiltin {
		for _, name := range builtin.Tests() {
			show(ruletest.RunFile(builtin.FS, name, rules.LoadOptions{}))
		}
	}
	for _, file := range fs.Args() {
		abs, err := filepath.Abs(file)
		if err != nil {
			show(nil, err)
			continue
		}
		res, err := ruletest.RunFile(os.DirFS("/"), strings.TrimPrefix(filepath.ToSlash(abs), "/"), rules.LoadOptions{})
		if res != nil {
			res.File = file
		}
		show(res, err)
	}
	return status
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func rulesReplay(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := NewFlagSet("rules replay", "[--rules DIR] [--opt-in GLOB]... [--all] FILE", stderr)
	dir := fs.String("rules", "", "rules `dir` (default: the shipped rules)")
	var optIn stringList
	fs.Var(&optIn, "opt-in", "opt in cgroups matching this path `glob` (repeatable), as remediation.opt_in does")
	all := fs.Bool("all", false, "treat every cgroup and the node as opted in")
	shadow := fs.Bool("shadow", false, "mark every finding shadow, as global shadow mode does")
	evidence := fs.Bool("evidence", true, "print each finding's evidence")
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		return usageError(stderr, fs, "give exactly one recorded snapshot file (\"-\" for stdin)")
	}
	var set *rules.RuleSet
	var err error
	if *dir != "" {
		set, err = loader.LoadDir(*dir, rules.LoadOptions{})
	} else {
		set, err = builtin.Load(rules.LoadOptions{})
	}
	if err != nil {
		fmt.Fprintln(stderr, "vigil rules replay:", err)
		return 1
	}
	opts := rules.EngineOptions{Shadow: *shadow, OptIn: rules.OptIn{Paths: optIn}}
	if *all {
		opts.OptIn = rules.OptIn{Paths: []string{"/**"}, Node: true}
	}
	var in io.Reader = os.Stdin
	name := fs.Arg(0)
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintln(stderr, "vigil rules replay:", err)
			return 1
		}
		defer f.Close()
		in = f
	}
	sum, err := replay(ctx, in, rules.NewEngine(set, opts), stdout, *evidence)
	if err != nil {
		fmt.Fprintf(stderr, "vigil rules replay: %s: %v\n", name, err)
		return 1
	}
	fmt.Fprintf(stdout, "\n%d snapshots", sum.snapshots)
	if sum.snapshots > 0 {
		fmt.Fprintf(stdout, " from %s to %s (%s)", sum.first.Format(time.RFC3339), sum.last.Format(time.RFC3339), sum.last.Sub(sum.first))
	}
	fmt.Fprintf(stdout, ", %d rules\n", set.Len())
	names := make([]string, 0, len(set.Rules))
	for _, r := range set.Rules {
		names = append(names, r.Name)
	}
	sort.Strings(names)
	for _, n := range names {
		c := sum.byRule[n]
		if c == nil {
			c = &ruleCount{}
		}
		fmt.Fprintf(stdout, "  %-32s fired %d, resolved %d, targets %d\n", n, c.fired, c.resolved, len(c.targets))
	}
	return 0
}

type replaySummary struct {
	snapshots   int
	first, last time.Time
	byRule      map[string]*ruleCount
}

type ruleCount struct {
	fired, resolved int
	targets         map[string]bool
}

// replay feeds a JSON-lines snapshot stream through the engine, printing
// each finding. Snapshot times drive the engine: the replay is exactly
// what the agent would have decided, at the times it would have.
func replay(ctx context.Context, in io.Reader, engine *rules.Engine, out io.Writer, evidence bool) (*replaySummary, error) {
	sum := &replaySummary{byRule: map[string]*ruleCount{}}
	dec := json.NewDecoder(in)
	for {
		if err := ctx.Err(); err != nil {
			return sum, err
		}
		var snap collectors.Snapshot
		if err := dec.Decode(&snap); err != nil {
			if errors.Is(err, io.EOF) {
				return sum, nil
			}
			return sum, fmt.Errorf("snapshot %d (byte %d): %w", sum.snapshots+1, dec.InputOffset(), err)
		}
		if snap.Time.IsZero() {
			return sum, fmt.Errorf("snapshot %d has no time", sum.snapshots+1)
		}
		if sum.snapshots == 0 {
			sum.first = snap.Time
		}
		sum.snapshots++
		sum.last = snap.Time
		for _, f := range engine.Evaluate(&snap, snap.Time) {
			c := sum.byRule[f.Rule]
			if c == nil {
				c = &ruleCount{targets: map[string]bool{}}
				sum.byRule[f.Rule] = c
			}
			if f.State == rules.Firing {
				c.fired++
				c.targets[f.Target.Key()] = true
			} else {
				c.resolved++
			}
			printFinding(out, &f, evidence)
		}
	}
}

func printFinding(out io.Writer, f *rules.Finding, evidence bool) {
	fmt.Fprintf(out, "%s %-8s %-28s %s%s [%s, %s]", f.Time.UTC().Format(time.RFC3339), strings.ToUpper(string(f.State)), f.Rule,
		f.Target.Key(), targetLabel(f.Target), f.Severity, f.Mode)
	if f.State == rules.Firing && !f.Since.IsZero() {
		fmt.Fprintf(out, " condition held since %s (%s)", f.Since.UTC().Format(time.RFC3339), f.Time.Sub(f.Since))
	}
	if f.Alert != "" {
		fmt.Fprintf(out, " alert %s", f.Alert)
	}
	fmt.Fprintln(out)
	if !evidence || len(f.Evidence) == 0 {
		return
	}
	keys := make([]string, 0, len(f.Evidence))
	for k := range f.Evidence {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(out, "    %s = %s\n", k, formatEvidence(k, f.Evidence[k]))
	}
	if f.State == rules.Firing && len(f.Actions) > 0 {
		var steps []string
		for _, a := range f.Actions {
			steps = append(steps, a.Action)
		}
		fmt.Fprintf(out, "    would run: %s\n", strings.Join(steps, " > "))
	}
}

// targetLabel names a cgroup the way a user knows it.
func targetLabel(t rules.Target) string {
	id := t.Identity
	switch {
	case id.Pod != "":
		s := id.Namespace + "/" + id.Pod
		if id.Container != "" {
			s += "/" + id.Container
		}
		return " (pod " + s + ")"
	case id.Unit != "":
		return " (" + id.Unit + ")"
	}
	return ""
}

// formatEvidence prints byte-valued evidence in binary units as well.
func formatEvidence(key string, v float64) string {
	s := strconv.FormatFloat(v, 'g', 6, 64)
	if math.IsInf(v, 0) || math.IsNaN(v) || !strings.Contains(key, "bytes") || math.Abs(v) < 1024 {
		return s
	}
	units := []string{"Ki", "Mi", "Gi", "Ti"}
	x, u := v/1024, 0
	for math.Abs(x) >= 1024 && u < len(units)-1 {
		x /= 1024
		u++
	}
	return fmt.Sprintf("%s (%.1f%s)", s, x, units[u])
}

package rules

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	yast "github.com/goccy/go-yaml/ast"
	yparser "github.com/goccy/go-yaml/parser"

	"github.com/vigil-agent/vigil/collectors"
)

// Severities a rule may declare.
const (
	SeverityInfo     = "info"
	SeverityWarning  = "warning"
	SeverityCritical = "critical"
)

// DefaultCooldown is the cooldown of a rule that does not set one.
const DefaultCooldown = 5 * time.Minute

// Rule is one loaded rule. A RuleSet and its rules are immutable once
// loaded.
type Rule struct {
	Name        string
	Description string
	Severity    string
	// Target is TargetCgroup or TargetNode.
	Target   string
	Selector Selector
	// Condition must hold for For before the rule fires.
	Condition *Condition
	For       time.Duration
	// Clear, if set, ends a firing episode when it holds; otherwise the
	// episode ends when Condition stops holding. Either way the clearing
	// must last Hysteresis.
	Clear      *Condition
	Hysteresis time.Duration
	// Cooldown is the least time between two Firing findings of the rule for
	// one target (0: fire once per episode, never repeat while firing).
	Cooldown time.Duration
	Mode     Mode
	// Actions is the escalation ladder handed to remediation (read-only).
	Actions []ActionStep
	// File, Line and Column locate the rule's name in its file.
	File         string
	Line, Column int
}

// RuleSet is a validated, compiled set of rules.
type RuleSet struct {
	Rules []*Rule
	// Files are the file names the set was loaded from, sorted.
	Files []string

	// signals each tick must compute, by index into the collectors tables.
	cgroupSignals, nodeSignals []int
	// history windows (the longest asked for) by signal index; -1 when the
	// signal keeps no history.
	cgroupWindows, nodeWindows []time.Duration
}

// Len returns the number of rules (0 for a nil set).
func (s *RuleSet) Len() int {
	if s == nil {
		return 0
	}
	return len(s.Rules)
}

// Rule returns the rule with that name, or nil.
func (s *RuleSet) Rule(name string) *Rule {
	if s == nil {
		return nil
	}
	for _, r := range s.Rules {
		if r.Name == name {
			return r
		}
	}
	return nil
}

// LoadOptions configure Load.
type LoadOptions struct {
	// Actions validates action parameters by action name. nil skips action
	// validation; a non-nil map rejects actions it does not name.
	Actions map[string]ActionValidator
	// CostLimit bounds each condition's static worst-case cost
	// (0: DefaultCostLimit).
	CostLimit uint64
}

// Error is a problem in a rule file, located at file:line:column.
type Error struct {
	File         string
	Line, Column int
	// Rule is the rule's name when known; Field the YAML field at fault.
	Rule  string
	Field string
	Err   error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", e.Line, e.Column)
	}
	b.WriteString(": ")
	if e.Rule != "" {
		fmt.Fprintf(&b, "rule %q: ", e.Rule)
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// ErrNoRules is returned (wrapped) when no file holds a rule.
var ErrNoRules = errors.New("no rules")

// The YAML schema of a rule file.
type fileDoc struct {
	Rules []ruleDoc `yaml:"rules"`
}

type ruleDoc struct {
	Name        string      `yaml:"name"`
	Description string      `yaml:"description"`
	Severity    string      `yaml:"severity"`
	Target      string      `yaml:"target"`
	Selector    Selector    `yaml:"selector"`
	Condition   string      `yaml:"condition"`
	For         string      `yaml:"for"`
	Clear       string      `yaml:"clear"`
	Hysteresis  string      `yaml:"hysteresis"`
	Cooldown    string      `yaml:"cooldown"`
	Mode        string      `yaml:"mode"`
	Actions     []actionDoc `yaml:"actions"`
}

type actionDoc struct {
	Action  string         `yaml:"action"`
	Params  map[string]any `yaml:"params"`
	Verify  string         `yaml:"verify"`
	Timeout string         `yaml:"timeout"`
	DryRun  bool           `yaml:"dry_run"`
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9_.-]{0,62}[a-z0-9])?$`)

// Load parses, validates and compiles rule files (name -> content). It
// reads nothing itself. All problems are returned, joined, each an *Error.
func Load(files map[string][]byte, opts LoadOptions) (*RuleSet, error) {
	if opts.CostLimit == 0 {
		opts.CostLimit = DefaultCostLimit
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	set := &RuleSet{Files: names}
	var errs []error
	seen := map[string]*Rule{}
	for _, name := range names {
		rules, ferrs := loadFile(name, files[name], opts)
		errs = append(errs, ferrs...)
		for _, r := range rules {
			if prev, dup := seen[r.Name]; dup {
				errs = append(errs, &Error{File: r.File, Line: r.Line, Column: r.Column, Rule: r.Name, Field: "name",
					Err: fmt.Errorf("duplicate rule name (first defined at %s:%d:%d)", prev.File, prev.Line, prev.Column)})
				continue
			}
			seen[r.Name] = r
			set.Rules = append(set.Rules, r)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	set.index()
	return set, nil
}

// index computes which signals the set needs per tick and which keep
// history, with the longest window each is asked over.
func (s *RuleSet) index() {
	s.cgroupWindows = make([]time.Duration, cgroupSlots())
	s.nodeWindows = make([]time.Duration, len(collectors.NodeSignals))
	cgNeed := make([]bool, len(s.cgroupWindows))
	nodeNeed := make([]bool, len(s.nodeWindows))
	for i := range s.cgroupWindows {
		s.cgroupWindows[i] = -1
	}
	for i := range s.nodeWindows {
		s.nodeWindows[i] = -1
	}
	for _, c := range s.conditions() {
		for _, r := range c.refs {
			if r.id.isNode() {
				nodeNeed[r.id-nodeBase] = true
			} else {
				cgNeed[r.id] = true
			}
		}
		for _, cs := range c.calls {
			w := &s.cgroupWindows
			idx := int(cs.sig.id)
			if cs.sig.id.isNode() {
				w, idx = &s.nodeWindows, int(cs.sig.id-nodeBase)
			}
			if cs.window > (*w)[idx] {
				(*w)[idx] = cs.window
			}
		}
	}
	for i, n := range cgNeed {
		if n {
			s.cgroupSignals = append(s.cgroupSignals, i)
		}
	}
	for i, n := range nodeNeed {
		if n {
			s.nodeSignals = append(s.nodeSignals, i)
		}
	}
}

// conditions returns every compiled condition of the set (conditions,
// clears and verifies).
func (s *RuleSet) conditions() []*Condition {
	var out []*Condition
	for _, r := range s.Rules {
		out = append(out, r.Condition)
		if r.Clear != nil {
			out = append(out, r.Clear)
		}
		for _, a := range r.Actions {
			if a.Verify != nil {
				out = append(out, a.Verify)
			}
		}
	}
	return out
}

// fileError converts a go-yaml error to an *Error with its position.
func fileError(file string, err error) *Error {
	var ye yaml.Error
	if errors.As(err, &ye) {
		e := &Error{File: file, Err: errors.New(ye.GetMessage())}
		if tk := ye.GetToken(); tk != nil && tk.Position != nil {
			e.Line, e.Column = tk.Position.Line, tk.Position.Column
		}
		return e
	}
	return &Error{File: file, Err: err}
}

func loadFile(file string, data []byte, opts LoadOptions) ([]*Rule, []error) {
	var doc fileDoc
	if err := yaml.UnmarshalWithOptions(data, &doc, yaml.Strict()); err != nil {
		return nil, []error{fileError(file, err)}
	}
	parsed, err := yparser.ParseBytes(data, 0)
	if err != nil {
		return nil, []error{fileError(file, err)}
	}
	if len(doc.Rules) == 0 {
		return nil, []error{&Error{File: file, Err: fmt.Errorf("%w: want a top-level \"rules:\" list", ErrNoRules)}}
	}
	pos := func(p string) (int, int, bool) {
		yp, err := yaml.PathString(p)
		if err != nil {
			return 0, 0, false
		}
		n, err := yp.FilterFile(parsed)
		if err != nil || n == nil {
			return 0, 0, false
		}
		tk := n.GetToken()
		if tk == nil || tk.Position == nil {
			return 0, 0, false
		}
		line, col := tk.Position.Line, tk.Position.Column
		// Block scalars (| and >) start on the next line.
		if _, ok := n.(*yast.LiteralNode); ok {
			line++
		}
		return line, col, true
	}
	var rules []*Rule
	var errs []error
	for i := range doc.Rules {
		r, rerrs := buildRule(file, data, i, &doc.Rules[i], opts, pos)
		errs = append(errs, rerrs...)
		if r != nil {
			rules = append(rules, r)
		}
	}
	return rules, errs
}

type posFunc func(path string) (line, col int, ok bool)

func buildRule(file string, data []byte, i int, d *ruleDoc, opts LoadOptions, pos posFunc) (*Rule, []error) {
	base := fmt.Sprintf("$.rules[%d]", i)
	var errs []error
	fail := func(field string, err error) {
		e := &Error{File: file, Rule: d.Name, Field: field, Err: err}
		p := base
		if field != "" {
			p = base + "." + strings.ReplaceAll(field, ".actions", "")
		}
		if l, c, ok := pos(p); ok {
			e.Line, e.Column = l, c
		} else if l, c, ok := pos(base); ok {
			e.Line, e.Column = l, c
		}
		errs = append(errs, e)
	}
	r := &Rule{
		Name: d.Name, Description: d.Description, Severity: d.Severity, Target: d.Target,
		Selector: d.Selector, Cooldown: DefaultCooldown,
		Mode: Mode(d.Mode), File: file,
	}
	if l, c, ok := pos(base + ".name"); ok {
		r.Line, r.Column = l, c
	} else if l, c, ok := pos(base); ok {
		r.Line, r.Column = l, c
	}
	if !nameRE.MatchString(d.Name) {
		fail("name", fmt.Errorf("%q is not a valid rule name (lower-case letters, digits, '-', '_', '.'; at most 64)", d.Name))
	}
	if r.Severity == "" {
		r.Severity = SeverityWarning
	}
	switch r.Severity {
	case SeverityInfo, SeverityWarning, SeverityCritical:
	default:
		fail("severity", fmt.Errorf("%q: want info, warning or critical", d.Severity))
	}
	if r.Target == "" {
		r.Target = TargetCgroup
	}
	targetOK := r.Target == TargetCgroup || r.Target == TargetNode
	if !targetOK {
		fail("target", fmt.Errorf("%q: want cgroup or node", d.Target))
	}
	if r.Mode == "" {
		r.Mode = Enforce
	}
	if r.Mode != Enforce && r.Mode != Shadow {
		fail("mode", fmt.Errorf("%q: want enforce or shadow", d.Mode))
	}
	if field, err := r.Selector.validate(); err != nil {
		fail("selector."+field, err)
	}
	if r.Target == TargetNode && !r.Selector.onlyOptIn() {
		fail("selector", errors.New("a node rule's selector may only set opt_in"))
	}
	duration := func(field, v string, dst *time.Duration) {
		if v == "" {
			return
		}
		d, err := time.ParseDuration(v)
		switch {
		case err != nil:
			fail(field, err)
		case d < 0:
			fail(field, fmt.Errorf("%v is negative", d))
		default:
			*dst = d
		}
	}
	duration("for", d.For, &r.For)
	duration("hysteresis", d.Hysteresis, &r.Hysteresis)
	duration("cooldown", d.Cooldown, &r.Cooldown)
	if !targetOK {
		return nil, errs
	}
	compile := func(field, src string) *Condition {
		c, err := compileCondition(src, r.Target, opts.CostLimit, DefaultHistorySize)
		if err != nil {
			var ce *CompileError
			e := &Error{File: file, Rule: d.Name, Field: field, Err: err}
			if l, col, ok := pos(base + "." + field); ok {
				e.Line, e.Column = l, col
				if errors.As(err, &ce) && ce.Line > 0 {
					// Point into the expression: same line for a plain
					// scalar, the n-th line of a block scalar.
					if ce.Line == 1 {
						e.Column = col + ce.Column - 1
					} else {
						e.Line = l + ce.Line - 1
						e.Column = indentOf(data, e.Line) + ce.Column
					}
					e.Err = errors.New(ce.Message)
				}
			}
			errs = append(errs, e)
			return nil
		}
		return c
	}
	if strings.TrimSpace(d.Condition) == "" {
		fail("condition", errors.New("required"))
	} else {
		r.Condition = compile("condition", d.Condition)
	}
	if strings.TrimSpace(d.Clear) != "" {
		r.Clear = compile("clear", d.Clear)
	}
	for j, a := range d.Actions {
		field := fmt.Sprintf("actions[%d]", j)
		step := ActionStep{Action: a.Action, Params: a.Params, VerifyExpr: a.Verify, DryRun: a.DryRun}
		duration(field+".timeout", a.Timeout, &step.Timeout)
		if a.Action == "" {
			fail(field+".action", errors.New("required"))
		} else if opts.Actions != nil {
			v, ok := opts.Actions[a.Action]
			if !ok {
				fail(field+".action", fmt.Errorf("unknown action %q (known: %s)", a.Action, knownActions(opts.Actions)))
			} else if v != nil {
				if err := v(a.Params); err != nil {
					fail(field+".params", err)
				}
			}
		}
		if strings.TrimSpace(a.Verify) != "" {
			step.Verify = compile(field+".verify", a.Verify)
		}
		r.Actions = append(r.Actions, step)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return r, nil
}

func knownActions(m map[string]ActionValidator) string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// indentOf returns the indentation of a 1-based line of data.
func indentOf(data []byte, line int) int {
	for l := 1; l < line; l++ {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			return 0
		}
		data = data[i+1:]
	}
	n := 0
	for n < len(data) && data[n] == ' ' {
		n++
	}
	return n
}

package rules

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common"
	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/cost"
	"cel.dev/cel-go/common/decls"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/ext"
	"cel.dev/cel-go/interpreter"
	"cel.dev/cel-go/parser"

	"github.com/vigil-agent/vigil/collectors"
)

// Condition is a compiled CEL condition over a target's signals. It is
// compiled once when the rule set loads and is safe for concurrent use.
type Condition struct {
	// Source is the expression as written in the rule file.
	Source string

	target  string // TargetCgroup or TargetNode: the environment it was compiled in
	program cel.Program
	// refs are the signals the expression names, in first-use order, with
	// the name as written (the Evidence keys).
	refs []signalRef
	// calls are the history function call sites (for Evidence).
	calls []callSite
	// cost is the static worst-case cost estimate.
	cost uint64
	// native is the allocation-free evaluator of the expression, nil when
	// it uses more of CEL than the native subset.
	native boolFn
}

// errNative is the error of a natively evaluated condition (the subset
// has no error source today; kept so both paths share one contract).
var errNative = errors.New("condition evaluation error")

// errNotCompiled is returned for a Condition that Load did not compile.
var errNotCompiled = errors.New("condition was not compiled by rules.Load")

// Target kinds of a rule.
const (
	TargetCgroup = "cgroup"
	TargetNode   = "node"
)

// signalID identifies a signal of collectors.CgroupSignals (0 <= id <
// nodeBase) or collectors.NodeSignals (id - nodeBase).
type signalID int32

const nodeBase signalID = 1 << 16

func (s signalID) isNode() bool { return s >= nodeBase }

// signalRef is one signal named in a condition.
type signalRef struct {
	name string
	id   signalID
}

// Function kinds of the history functions.
type fnKind uint8

const (
	fnRate fnKind = iota + 1
	fnAvg
	fnMax
	fnMin
	fnDeriv
	fnChanges
	fnDelta
	fnIncrease
	fnDeltaTick
	fnPredict
)

// historyFunc describes one user-visible history function.
type historyFunc struct {
	name     string
	kind     fnKind
	internal string
	argc     int  // user-visible arguments
	horizon  bool // takes a third (horizon) argument
}

var historyFuncs = []historyFunc{
	{name: "rate", kind: fnRate, argc: 2},
	{name: "avg_over", kind: fnAvg, argc: 2},
	{name: "max_over", kind: fnMax, argc: 2},
	{name: "min_over", kind: fnMin, argc: 2},
	{name: "deriv", kind: fnDeriv, argc: 2},
	{name: "changes", kind: fnChanges, argc: 2},
	{name: "delta", kind: fnDelta, argc: 2},
	{name: "increase", kind: fnIncrease, argc: 2},
	{name: "delta", kind: fnDeltaTick, argc: 1},
	{name: "predict_linear", kind: fnPredict, argc: 3, horizon: true},
}

func init() {
	for i := range historyFuncs {
		historyFuncs[i].internal = fmt.Sprintf("_vigil_%s_%d", historyFuncs[i].name, historyFuncs[i].argc)
	}
}

// callSite is one history function call in a condition.
type callSite struct {
	kind    fnKind
	sig     signalRef
	window  time.Duration
	horizon time.Duration
	text    string // canonical text, the Evidence key
}

// spec packs a call's signal and window into the int literal the macro
// writes into the expression, so evaluation needs no lookups.
func packSpec(id signalID, window time.Duration) int64 {
	return int64(id)<<40 | int64(window/time.Millisecond)
}

func unpackSpec(spec int64) (signalID, time.Duration) {
	return signalID(spec >> 40), time.Duration(spec&(1<<40-1)) * time.Millisecond
}

const (
	ctxVar        = "_vigil"
	alertFn       = "_vigil_alert"
	targetAlertFn = "_vigil_target_alert"
	maxWindow     = 24 * time.Hour
)

var ctxType = cel.OpaqueType("vigil.context")

// environment is one CEL environment: the cgroup one (cgroup signals plus
// node.*) or the node one (node signals, bare and as node.*).
type environment struct {
	target string
	env    *cel.Env
	names  map[string]signalID
}

var (
	envOnce sync.Once
	envs    map[string]*environment
	envErr  error
)

func environments() (map[string]*environment, error) {
	envOnce.Do(func() {
		envs = map[string]*environment{}
		for _, target := range []string{TargetCgroup, TargetNode} {
			e, err := newEnvironment(target)
			if err != nil {
				envErr = err
				return
			}
			envs[target] = e
		}
	})
	return envs, envErr
}

func signalNames(target string) map[string]signalID {
	names := map[string]signalID{}
	if target == TargetCgroup {
		for i, s := range collectors.CgroupSignals {
			names[s.Name] = signalID(i)
		}
	} else {
		for i, s := range collectors.NodeSignals {
			names[s.Name] = nodeBase + signalID(i)
		}
	}
	for i, s := range collectors.NodeSignals {
		names["node."+s.Name] = nodeBase + signalID(i)
	}
	return names
}

func newEnvironment(target string) (*environment, error) {
	e := &environment{target: target, names: signalNames(target)}
	names := make([]string, 0, len(e.names))
	for n := range e.names {
		names = append(names, n)
	}
	sort.Strings(names)
	opts := []cel.EnvOption{
		cel.CrossTypeNumericComparisons(true),
		ext.Math(),
		cel.Variable(ctxVar, ctxType),
		cel.Constant("inf", cel.DoubleType, types.Double(math.Inf(1))),
	}
	for _, n := range names {
		opts = append(opts, cel.Variable(n, cel.DoubleType))
	}
	var macros []cel.Macro
	for _, hf := range historyFuncs {
		opts = append(opts, historyFunction(hf))
		macros = append(macros, cel.GlobalMacro(hf.name, hf.argc, e.historyMacro(hf)))
	}
	if target == TargetCgroup {
		fn, macro := logEnvOptions()
		opts = append(opts, fn)
		macros = append(macros, macro)
	}
	macros = append(macros,
		cel.GlobalMacro("alert", 1, ctxMacro(alertFn)),
		cel.GlobalMacro("target_alert", 1, ctxMacro(targetAlertFn)))
	opts = append(opts, cel.Macros(macros...),
		cel.Function(alertFn, cel.Overload(alertFn+"_ctx_string", []*cel.Type{ctxType, cel.StringType}, cel.BoolType,
			cel.BinaryBinding(func(c, name ref.Val) ref.Val { return evalAlert(c, name, false) }))),
		cel.Function(targetAlertFn, cel.Overload(targetAlertFn+"_ctx_string", []*cel.Type{ctxType, cel.StringType}, cel.BoolType,
			cel.BinaryBinding(func(c, name ref.Val) ref.Val { return evalAlert(c, name, true) }))),
	)
	env, err := cel.NewEnv(opts...)
	if err != nil {
		return nil, fmt.Errorf("rules: building the %s CEL environment: %w", target, err)
	}
	e.env = env
	return e, nil
}

func historyFunction(hf historyFunc) cel.EnvOption {
	if hf.horizon {
		return cel.Function(hf.internal, cel.Overload(hf.internal+"_ctx_int_double", []*cel.Type{ctxType, cel.IntType, cel.DoubleType}, cel.DoubleType,
			cel.FunctionBinding(func(args ...ref.Val) ref.Val {
				return evalHistory(hf.kind, args[0], args[1], args[2])
			})), decls.DisableTypeGuards(true))
	}
	return cel.Function(hf.internal, cel.Overload(hf.internal+"_ctx_int", []*cel.Type{ctxType, cel.IntType}, cel.DoubleType,
		cel.BinaryBinding(func(c, spec ref.Val) ref.Val {
			return evalHistory(hf.kind, c, spec, nil)
		})), decls.DisableTypeGuards(true))
}

// ctxMacro rewrites f(x) into internal(_vigil, x).
func ctxMacro(internal string) parser.MacroExpander {
	return func(eh parser.ExprHelper, _ ast.Expr, args []ast.Expr) (ast.Expr, *common.Error) {
		return eh.NewCall(internal, eh.NewIdent(ctxVar), args[0]), nil
	}
}

// historyMacro rewrites rate(working_set_bytes, "5m") into
// _vigil_rate_2(_vigil, <packed signal and window>): the signal is named, not
// evaluated, and the window is checked when the rule loads.
func (e *environment) historyMacro(hf historyFunc) parser.MacroExpander {
	return func(eh parser.ExprHelper, _ ast.Expr, args []ast.Expr) (ast.Expr, *common.Error) {
		id, isLog, err := logCall(args[0])
		if err != nil {
			return nil, eh.NewError(args[0].ID(), fmt.Sprintf("%s: %v", hf.name, err))
		}
		if isLog && e.target != TargetCgroup {
			return nil, eh.NewError(args[0].ID(), fmt.Sprintf("%s: %s is a cgroup signal", hf.name, logMatchesFn))
		}
		if !isLog {
			name, ok := qualifiedName(args[0])
			if !ok {
				return nil, eh.NewError(args[0].ID(), fmt.Sprintf("%s: the first argument must be a signal name, e.g. %s(working_set_bytes, \"5m\")", hf.name, hf.name))
			}
			id, ok = e.names[name]
			if !ok {
				return nil, eh.NewError(args[0].ID(), fmt.Sprintf("%s: unknown %s signal %q", hf.name, e.target, name))
			}
		}
		var window time.Duration
		if hf.argc >= 2 {
			w, err := durationArg(args[1])
			if err != nil {
				return nil, eh.NewError(args[1].ID(), fmt.Sprintf("%s: window: %v", hf.name, err))
			}
			window = w
		}
		call := []ast.Expr{eh.NewIdent(ctxVar), eh.NewLiteral(types.Int(packSpec(id, window)))}
		if hf.horizon {
			h, err := durationArg(args[2])
			if err != nil {
				return nil, eh.NewError(args[2].ID(), fmt.Sprintf("%s: horizon: %v", hf.name, err))
			}
			call = append(call, eh.NewLiteral(types.Double(h.Seconds())))
		}
		return eh.NewCall(hf.internal, call...), nil
	}
}

// qualifiedName turns an identifier or a select chain (psi.memory.some_avg10)
// into its dotted name.
func qualifiedName(e ast.Expr) (string, bool) {
	switch e.Kind() {
	case ast.IdentKind:
		return e.AsIdent(), true
	case ast.SelectKind:
		s := e.AsSelect()
		if s.IsTestOnly() {
			return "", false
		}
		prefix, ok := qualifiedName(s.Operand())
		if !ok {
			return "", false
		}
		return prefix + "." + s.FieldName(), true
	}
	return "", false
}

// durationArg reads a window or horizon: a duration string ("5m"), a
// duration("5m") call, or a number of seconds.
func durationArg(e ast.Expr) (time.Duration, error) {
	var d time.Duration
	switch e.Kind() {
	case ast.LiteralKind:
		switch v := e.AsLiteral().(type) {
		case types.String:
			p, err := time.ParseDuration(string(v))
			if err != nil {
				return 0, err
			}
			d = p
		case types.Int:
			d = time.Duration(int64(v)) * time.Second
		case types.Uint:
			d = time.Duration(uint64(v)) * time.Second
		case types.Double:
			d = time.Duration(float64(v) * float64(time.Second))
		default:
			return 0, fmt.Errorf("want a duration such as \"5m\"")
		}
	case ast.CallKind:
		c := e.AsCall()
		if c.FunctionName() != "duration" || len(c.Args()) != 1 || c.Args()[0].Kind() != ast.LiteralKind {
			return 0, fmt.Errorf("want a constant duration such as \"5m\"")
		}
		s, ok := c.Args()[0].AsLiteral().(types.String)
		if !ok {
			return 0, fmt.Errorf("want a constant duration such as \"5m\"")
		}
		p, err := time.ParseDuration(string(s))
		if err != nil {
			return 0, err
		}
		d = p
	default:
		return 0, fmt.Errorf("want a constant duration such as \"5m\"")
	}
	if d <= 0 || d > maxWindow {
		return 0, fmt.Errorf("%v is out of range (0, %v]", d, maxWindow)
	}
	if d%time.Millisecond != 0 {
		return 0, fmt.Errorf("%v is finer than a millisecond", d)
	}
	return d, nil
}

// CompileError is a CEL error with its position inside the expression.
type CompileError struct {
	// Line and Column are 1-based within the expression (0 if unknown).
	Line, Column int
	Message      string
}

func (e *CompileError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%d:%d: %s", e.Line, e.Column, e.Message)
	}
	return e.Message
}

// DefaultCostLimit bounds the static worst-case cost of one condition.
const DefaultCostLimit = 100000

// compileCondition compiles src for a target kind. historySize is the ring
// size the cost estimate assumes for history functions.
func compileCondition(src, target string, costLimit uint64, historySize int) (*Condition, error) {
	all, err := environments()
	if err != nil {
		return nil, err
	}
	e := all[target]
	if e == nil {
		return nil, fmt.Errorf("unknown target %q", target)
	}
	if strings.TrimSpace(src) == "" {
		return nil, &CompileError{Message: "empty expression"}
	}
	parsed, iss := e.env.Parse(src)
	if iss != nil && iss.Err() != nil {
		return nil, issuesError(iss)
	}
	// Every number is a double: `working_set_bytes / 1048576 > 100` must not
	// fail on int/double arithmetic.
	intsToDoubles(parsed.NativeRep().Expr())
	checked, iss := e.env.Check(parsed)
	if iss != nil && iss.Err() != nil {
		return nil, issuesError(iss)
	}
	if !reflect.DeepEqual(checked.OutputType(), cel.BoolType) {
		return nil, &CompileError{Message: fmt.Sprintf("the expression must be a bool, it is a %s", checked.OutputType())}
	}
	c := &Condition{Source: src, target: target}
	c.collect(checked.NativeRep(), e)
	est, err := e.env.EstimateCost(checked, estimator{historySize: uint64(historySize)})
	if err != nil {
		return nil, &CompileError{Message: fmt.Sprintf("estimating cost: %v", err)}
	}
	c.cost = est.Max
	if costLimit > 0 && est.Max > costLimit {
		return nil, &CompileError{Message: fmt.Sprintf("worst-case cost %d is over the limit %d", est.Max, costLimit)}
	}
	prg, err := e.env.Program(checked, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, &CompileError{Message: err.Error()}
	}
	c.program = prg
	c.native = compileNative(checked.NativeRep(), e)
	return c, nil
}

func issuesError(iss *cel.Issues) error {
	errs := iss.Errors()
	if len(errs) == 0 {
		return &CompileError{Message: iss.Err().Error()}
	}
	first := errs[0]
	msg := first.Message
	if len(errs) > 1 {
		msg = fmt.Sprintf("%s (and %d more)", msg, len(errs)-1)
	}
	loc := first.Location
	if loc == nil || loc.Line() <= 0 {
		return &CompileError{Message: msg}
	}
	return &CompileError{Line: loc.Line(), Column: loc.Column() + 1, Message: msg}
}

// intsToDoubles turns every int and uint literal into a double, except the
// packed arguments of vigil's own functions.
func intsToDoubles(e ast.Expr) {
	fac := ast.NewExprFactory()
	var walk func(ast.Expr)
	walk = func(e ast.Expr) {
		switch e.Kind() {
		case ast.LiteralKind:
			switch v := e.AsLiteral().(type) {
			case types.Int:
				e.SetKindCase(fac.NewLiteral(e.ID(), types.Double(float64(v))))
			case types.Uint:
				e.SetKindCase(fac.NewLiteral(e.ID(), types.Double(float64(v))))
			}
		case ast.CallKind:
			c := e.AsCall()
			if strings.HasPrefix(c.FunctionName(), "_vigil_") {
				return
			}
			if c.IsMemberFunction() {
				walk(c.Target())
			}
			for _, a := range c.Args() {
				walk(a)
			}
		case ast.SelectKind:
			walk(e.AsSelect().Operand())
		case ast.ListKind:
			for _, el := range e.AsList().Elements() {
				walk(el)
			}
		case ast.MapKind:
			for _, en := range e.AsMap().Entries() {
				me := en.AsMapEntry()
				walk(me.Key())
				walk(me.Value())
			}
		case ast.ComprehensionKind:
			cp := e.AsComprehension()
			walk(cp.IterRange())
			walk(cp.AccuInit())
			walk(cp.LoopCondition())
			walk(cp.LoopStep())
			walk(cp.Result())
		}
	}
	walk(e)
}

// collect records the signals and history calls the checked expression uses.
func (c *Condition) collect(a *ast.AST, e *environment) {
	seen := map[string]bool{}
	add := func(name string, id signalID) {
		if !seen[name] {
			seen[name] = true
			c.refs = append(c.refs, signalRef{name: name, id: id})
		}
	}
	// Names in source order: walk the expression, resolving through the
	// checker's reference map.
	refs := a.ReferenceMap()
	nameOf := map[signalID]string{}
	for n, id := range e.names {
		if cur, ok := nameOf[id]; !ok || len(n) < len(cur) {
			nameOf[id] = n
		}
	}
	ast.PostOrderVisit(a.Expr(), ast.NewExprVisitor(func(x ast.Expr) {
		if r, ok := refs[x.ID()]; ok && r.Name != "" && r.Value == nil {
			if id, ok := e.names[r.Name]; ok {
				add(r.Name, id)
			}
		}
		if x.Kind() != ast.CallKind {
			return
		}
		call := x.AsCall()
		if call.FunctionName() == logFn {
			if id, ok := logCallID(call); ok {
				if name, ok := logPatternName(id); ok {
					add(logSignalText(name), id)
				}
			}
			return
		}
		for _, hf := range historyFuncs {
			if call.FunctionName() != hf.internal {
				continue
			}
			args := call.Args()
			if len(args) < 2 || args[1].Kind() != ast.LiteralKind {
				return
			}
			spec, ok := args[1].AsLiteral().(types.Int)
			if !ok {
				return
			}
			id, window := unpackSpec(int64(spec))
			name := nameOf[id]
			if pattern, ok := logPatternName(id); ok {
				name = logSignalText(pattern)
			}
			cs := callSite{kind: hf.kind, sig: signalRef{name: name, id: id}, window: window}
			if hf.horizon && len(args) == 3 && args[2].Kind() == ast.LiteralKind {
				if h, ok := args[2].AsLiteral().(types.Double); ok {
					cs.horizon = time.Duration(float64(h) * float64(time.Second))
				}
			}
			switch {
			case hf.horizon:
				cs.text = fmt.Sprintf("%s(%s, %s, %s)", hf.name, cs.sig.name, fmtDuration(cs.window), fmtDuration(cs.horizon))
			case hf.argc == 1:
				cs.text = fmt.Sprintf("%s(%s)", hf.name, cs.sig.name)
			default:
				cs.text = fmt.Sprintf("%s(%s, %s)", hf.name, cs.sig.name, fmtDuration(cs.window))
			}
			add(cs.sig.name, id)
			dup := false
			for _, o := range c.calls {
				if o.text == cs.text {
					dup = true
				}
			}
			if !dup {
				c.calls = append(c.calls, cs)
			}
			return
		}
	}))
}

// fmtDuration prints 5m rather than 5m0s.
func fmtDuration(d time.Duration) string {
	switch {
	case d == 0:
		return "0s"
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	case d%time.Second == 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return d.String()
}

// estimator gives history functions a cost proportional to the ring size.
type estimator struct{ historySize uint64 }

func (est estimator) EstimateSize(cost.AstNode) *cost.SizeEstimate { return nil }

func (est estimator) EstimateCallCost(function, _ string, _ *cost.AstNode, _ []cost.AstNode) *cost.CallEstimate {
	if strings.HasPrefix(function, "_vigil_") {
		n := est.historySize + 1
		if function == alertFn || function == targetAlertFn {
			n = 64 // alerts are few; a scan of them
		}
		return &cost.CallEstimate{CostEstimate: cost.CostEstimate{Min: 1, Max: n}}
	}
	return nil
}

// Signals returns the names of the signals the condition references, in
// the order they first appear.
func (c *Condition) Signals() []string {
	out := make([]string, len(c.refs))
	for i, r := range c.refs {
		out[i] = r.name
	}
	return out
}

// evalContext is what vigil's functions see of the target being evaluated.
// It is a CEL value (the hidden _vigil variable) so that one compiled
// program serves every target and concurrent Verify calls.
type evalContext struct {
	target *series
	node   *series
	now    int64
	// statNow is when the target's memory.stat values were read (the
	// collector reuses a recent read for quiet cgroups: derived
	// stat_age_seconds); history functions of those signals end there.
	// Zero means now.
	statNow int64
	// tick numbers Evaluate calls for the per-tick memo of history
	// function results (0: no memo, as in Verify).
	tick uint64
	// cur resolves a signal's current value.
	path   string
	isNode bool
	alerts []collectors.Alert
	// alert is the first alert a function matched (Finding.Alert).
	alert string
}

var _ ref.Val = (*evalContext)(nil)

func (c *evalContext) ConvertToNative(reflect.Type) (any, error) {
	return nil, fmt.Errorf("vigil.context cannot be converted")
}
func (c *evalContext) ConvertToType(ref.Type) ref.Val {
	return types.NewErr("vigil.context cannot be converted")
}
func (c *evalContext) Equal(o ref.Val) ref.Val { return types.Bool(o == ref.Val(c)) }
func (c *evalContext) Type() ref.Type          { return ctxType }
func (c *evalContext) Value() any              { return c }

// ResolveName implements interpreter.Activation.
func (c *evalContext) ResolveName(name string) (any, bool) {
	if name == ctxVar {
		return c, true
	}
	var id signalID
	var ok bool
	if c.isNode {
		id, ok = nodeNames[name]
	} else {
		id, ok = cgroupNames[name]
	}
	if !ok {
		return nil, false
	}
	return c.value(id), true
}

// Parent implements interpreter.Activation.
func (c *evalContext) Parent() interpreter.Activation { return nil }

var (
	cgroupNames = signalNames(TargetCgroup)
	nodeNames   = signalNames(TargetNode)
)

func (c *evalContext) value(id signalID) ref.Val {
	s := c.target
	if id.isNode() {
		s = c.node
		id -= nodeBase
	}
	if s == nil || int(id) >= len(s.boxed) {
		return types.Double(math.NaN())
	}
	return s.boxedAt(int(id))
}

func (c *evalContext) float(id signalID) (float64, *ring) {
	s := c.target
	idx := id
	if id.isNode() {
		s = c.node
		idx -= nodeBase
	}
	if s == nil || int(idx) >= len(s.vals) {
		return math.NaN(), nil
	}
	var r *ring
	if s.rings != nil {
		r = s.rings[idx]
	}
	return s.vals[idx], r
}

func evalHistory(kind fnKind, cv, specv, horizonv ref.Val) ref.Val {
	c, ok := cv.(*evalContext)
	if !ok {
		return types.NewErr("vigil: bad context")
	}
	spec, ok := specv.(types.Int)
	if !ok {
		return types.NewErr("vigil: bad function argument")
	}
	id, window := unpackSpec(int64(spec))
	_ = id
	var horizon float64
	if horizonv != nil {
		h, ok := horizonv.(types.Double)
		if !ok {
			return types.NewErr("vigil: bad horizon")
		}
		horizon = float64(h)
	}
	if v, ok := c.historyMemo(kind, int64(spec), horizon); ok {
		return types.Double(v)
	}
	v := c.historyRaw(kind, id, window, horizon)
	c.historyStore(kind, int64(spec), horizon, v)
	return types.Double(v)
}

func (c *evalContext) historyRaw(kind fnKind, id signalID, window time.Duration, horizon float64) float64 {
	cur, r := c.float(id)
	now := c.now
	// Windows of stat.* signals end at their read; delta(s), the change
	// since the previous evaluation, is 0 while a read is reused.
	if c.statNow != 0 && kind != fnDeltaTick && statSignal(id) {
		now = c.statNow
	}
	return historyValue(kind, r, now, int64(window), horizon, cur)
}

func (c *evalContext) memoSeries(spec int64) *series {
	id, _ := unpackSpec(spec)
	if id.isNode() {
		return c.node
	}
	return c.target
}

func (c *evalContext) historyMemo(kind fnKind, spec int64, horizon float64) (float64, bool) {
	if c.tick == 0 {
		return 0, false
	}
	if s := c.memoSeries(spec); s != nil {
		return s.memoGet(c.tick, kind, spec, horizon)
	}
	return 0, false
}

func (c *evalContext) historyStore(kind fnKind, spec int64, horizon float64, v float64) {
	if c.tick == 0 {
		return
	}
	if s := c.memoSeries(spec); s != nil {
		s.memoPut(c.tick, kind, spec, horizon, v)
	}
}

// history is the native evaluator's entry to the history functions.
func (c *evalContext) history(kind fnKind, spec int64, horizon float64) float64 {
	if v, ok := c.historyMemo(kind, spec, horizon); ok {
		return v
	}
	id, window := unpackSpec(spec)
	v := c.historyRaw(kind, id, window, horizon)
	c.historyStore(kind, spec, horizon, v)
	return v
}

func evalAlert(cv, namev ref.Val, exact bool) ref.Val {
	c, ok := cv.(*evalContext)
	if !ok {
		return types.NewErr("vigil: bad context")
	}
	name, ok := namev.(types.String)
	if !ok {
		return types.NewErr("vigil: alert name must be a string")
	}
	return types.Bool(c.matchAlert(string(name), exact))
}

// matchAlert reports whether a firing alert of that name targets the
// target (exact) or the target or the node.
func (c *evalContext) matchAlert(name string, exact bool) bool {
	for i := range c.alerts {
		a := &c.alerts[i]
		if a.Name != name || (a.Status != "" && a.Status != "firing") {
			continue
		}
		match := false
		switch {
		case c.isNode:
			match = a.Target == ""
		case exact:
			match = a.Target == c.path
		default:
			match = a.Target == c.path || a.Target == ""
		}
		if match {
			if c.alert == "" {
				c.alert = a.Name
			}
			return true
		}
	}
	return false
}

// eval runs the condition on a prepared context. An evaluation error counts
// as "does not hold".
func (c *Condition) eval(ctx *evalContext) (bool, error) {
	if c.native != nil {
		switch c.native(ctx) {
		case triTrue:
			return true, nil
		case triFalse:
			return false, nil
		}
		return false, errNative
	}
	if c.program == nil {
		return false, errNotCompiled
	}
	out, _, err := c.program.Eval(ctx)
	if err != nil {
		return false, err
	}
	return out == types.True, nil
}

// evidence returns the values of every signal and history call the
// condition references, keyed by their text, added to m.
func (c *Condition) evidence(ctx *evalContext, m map[string]float64) {
	for _, r := range c.refs {
		v, _ := ctx.float(r.id)
		m[r.name] = v
	}
	for _, cs := range c.calls {
		cur, r := ctx.float(cs.sig.id)
		m[cs.text] = historyValue(cs.kind, r, ctx.now, int64(cs.window), cs.horizon.Seconds(), cur)
	}
}

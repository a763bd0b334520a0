package rules

import (
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common"
	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/decls"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/parser"

	"github.com/vigil-agent/vigil/collectors"
)

// Container log pattern counters are cgroup signals whose names come from
// the rules: log_matches("OutOfMemoryError") is the cumulative count of
// the pattern of that name (agent config podlogs.patterns) for the target.
// Each distinct pattern name a rule uses gets a signal slot after
// collectors.CgroupSignals, so the history functions, the native
// evaluator and the evidence treat it like any other counter:
// increase(log_matches("OutOfMemoryError"), "5m") > 0.

const (
	logMatchesFn = "log_matches"
	logFn        = "_vigil_log"
	// maxLogPatterns bounds the distinct pattern names rules may use in
	// one process.
	maxLogPatterns = 32
)

// cgroupSlots is the size a cgroup target's signal series needs: the
// signal table plus the log patterns interned so far (a series grows when
// a reload brings new ones, so targets pay only for the patterns in use).
func cgroupSlots() int {
	n := len(collectors.CgroupSignals)
	if p := logPatterns.names.Load(); p != nil {
		n += len(*p)
	}
	return n
}

// logPatterns interns pattern names to slots. Slots are never reused, so a
// compiled condition's slot stays valid for the life of the process.
var logPatterns struct {
	mu    sync.Mutex
	index map[string]int
	names atomic.Pointer[[]string] // copy on write, read on every tick
}

// logSignal returns the signal of pattern name, interning it.
func logSignal(name string) (signalID, error) {
	logPatterns.mu.Lock()
	defer logPatterns.mu.Unlock()
	if logPatterns.index == nil {
		logPatterns.index = map[string]int{}
	}
	k, ok := logPatterns.index[name]
	if !ok {
		k = len(logPatterns.index)
		if k >= maxLogPatterns {
			return 0, fmt.Errorf("%s: more than %d distinct log pattern names in the rules", logMatchesFn, maxLogPatterns)
		}
		logPatterns.index[name] = k
		var names []string
		if p := logPatterns.names.Load(); p != nil {
			names = append(names, *p...)
		}
		names = append(names, name)
		logPatterns.names.Store(&names)
	}
	return signalID(len(collectors.CgroupSignals) + k), nil
}

// logPatternName returns the pattern of a log signal slot, false for any
// other signal.
func logPatternName(id signalID) (string, bool) {
	k := int(id) - len(collectors.CgroupSignals)
	if id.isNode() || k < 0 {
		return "", false
	}
	p := logPatterns.names.Load()
	if p == nil || k >= len(*p) {
		return "", false
	}
	return (*p)[k], true
}

// logSignalText is the evidence key of a log signal.
func logSignalText(name string) string {
	return logMatchesFn + "(" + strconv.Quote(name) + ")"
}

// cgroupValue is the current value of cgroup signal slot i.
func cgroupValue(i int, c *collectors.CgroupSample) float64 {
	if i < len(collectors.CgroupSignals) {
		return collectors.CgroupSignals[i].Value(c)
	}
	name, ok := logPatternName(signalID(i))
	if !ok {
		return math.NaN()
	}
	return collectors.LogMatchCount(c, name)
}

// cgroupCounter reports whether cgroup signal slot i is a counter (log
// pattern counts are).
func cgroupCounter(i int) bool {
	if i < len(collectors.CgroupSignals) {
		return collectors.CgroupSignals[i].Counter
	}
	return true
}

// logEnvOptions declares log_matches in the cgroup environment.
func logEnvOptions() (cel.EnvOption, cel.Macro) {
	fn := cel.Function(logFn, cel.Overload(logFn+"_ctx_int", []*cel.Type{ctxType, cel.IntType}, cel.DoubleType,
		cel.BinaryBinding(func(cv, idv ref.Val) ref.Val {
			c, ok := cv.(*evalContext)
			if !ok {
				return types.NewErr("vigil: bad context")
			}
			id, ok := idv.(types.Int)
			if !ok {
				return types.NewErr("vigil: bad log signal")
			}
			v, _ := c.float(signalID(id))
			return types.Double(v)
		})), decls.DisableTypeGuards(true))
	macro := cel.GlobalMacro(logMatchesFn, 1, func(eh parser.ExprHelper, _ ast.Expr, args []ast.Expr) (ast.Expr, *common.Error) {
		id, err := logArg(args[0])
		if err != nil {
			return nil, eh.NewError(args[0].ID(), err.Error())
		}
		return eh.NewCall(logFn, eh.NewIdent(ctxVar), eh.NewLiteral(types.Int(id))), nil
	})
	return fn, macro
}

// logArg reads log_matches' pattern name: a string literal.
func logArg(e ast.Expr) (signalID, error) {
	if e.Kind() == ast.LiteralKind {
		if s, ok := e.AsLiteral().(types.String); ok && s != "" {
			return logSignal(string(s))
		}
	}
	return 0, fmt.Errorf("%s: the argument must be a pattern name in quotes, e.g. %s(\"OutOfMemoryError\")", logMatchesFn, logMatchesFn)
}

// logCall recognises log_matches("name") (before macro expansion) or its
// expansion as the first argument of a history function.
func logCall(e ast.Expr) (signalID, bool, error) {
	if e.Kind() != ast.CallKind {
		return 0, false, nil
	}
	c := e.AsCall()
	switch c.FunctionName() {
	case logMatchesFn:
		if len(c.Args()) != 1 {
			return 0, true, fmt.Errorf("%s takes one pattern name", logMatchesFn)
		}
		id, err := logArg(c.Args()[0])
		return id, true, err
	case logFn:
		if id, ok := logCallID(c); ok {
			return id, true, nil
		}
	}
	return 0, false, nil
}

// logCallID is the signal of an expanded _vigil_log(_vigil, id) call.
func logCallID(c ast.CallExpr) (signalID, bool) {
	args := c.Args()
	if len(args) != 2 || args[1].Kind() != ast.LiteralKind {
		return 0, false
	}
	id, ok := args[1].AsLiteral().(types.Int)
	return signalID(id), ok
}

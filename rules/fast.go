package rules

import (
	"math"

	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/common/types"
)

// The native evaluator runs the common subset of conditions (numbers,
// comparisons, && || !, ?:, vigil's functions) without the CEL interpreter:
// no boxing, no allocation, several times faster, which is what keeps 50
// rules on 1000 cgroups within a few milliseconds. It is compiled from the
// checked CEL expression and follows CEL's semantics exactly (comparisons
// with NaN are false; && and || absorb errors when the other side
// decides): TestNativeMatchesCEL checks it against the interpreter. Anything outside the subset runs on the CEL program.

// tri is a CEL bool result: false, true, or an error.
type tri uint8

const (
	triFalse tri = iota
	triTrue
	triErr
)

func triOf(b bool) tri {
	if b {
		return triTrue
	}
	return triFalse
}

type numFn func(*evalContext) float64
type boolFn func(*evalContext) tri

// nativeCompiler compiles one checked expression.
type nativeCompiler struct {
	a     *ast.AST
	names map[string]signalID
}

func compileNative(a *ast.AST, e *environment) boolFn {
	nc := &nativeCompiler{a: a, names: e.names}
	f, ok := nc.boolean(a.Expr())
	if !ok {
		return nil
	}
	return f
}

func (nc *nativeCompiler) isDouble(e ast.Expr) bool {
	return nc.a.GetType(e.ID()).IsExactType(types.DoubleType)
}

func (nc *nativeCompiler) isBool(e ast.Expr) bool {
	return nc.a.GetType(e.ID()).IsExactType(types.BoolType)
}

// signal resolves an identifier or select chain the checker bound to a
// signal variable.
func (nc *nativeCompiler) signal(e ast.Expr) (signalID, bool) {
	r, ok := nc.a.ReferenceMap()[e.ID()]
	if !ok || r.Value != nil || r.Name == "" {
		return 0, false
	}
	id, ok := nc.names[r.Name]
	return id, ok
}

func (nc *nativeCompiler) number(e ast.Expr) (numFn, bool) {
	if !nc.isDouble(e) {
		return nil, false
	}
	if r, ok := nc.a.ReferenceMap()[e.ID()]; ok && r.Value != nil {
		if d, ok := r.Value.(types.Double); ok { // a constant such as inf
			v := float64(d)
			return func(*evalContext) float64 { return v }, true
		}
		return nil, false
	}
	switch e.Kind() {
	case ast.LiteralKind:
		d, ok := e.AsLiteral().(types.Double)
		if !ok {
			return nil, false
		}
		v := float64(d)
		return func(*evalContext) float64 { return v }, true
	case ast.IdentKind, ast.SelectKind:
		id, ok := nc.signal(e)
		if !ok {
			return nil, false
		}
		if id.isNode() {
			i := int(id - nodeBase)
			return func(c *evalContext) float64 { return c.node.vals[i] }, true
		}
		i := int(id)
		return func(c *evalContext) float64 { return c.target.vals[i] }, true
	case ast.CallKind:
		return nc.numberCall(e)
	}
	return nil, false
}

func (nc *nativeCompiler) numberCall(e ast.Expr) (numFn, bool) {
	call := e.AsCall()
	args := call.Args()
	switch call.FunctionName() {
	case operators.Negate:
		x, ok := nc.number(args[0])
		if !ok {
			return nil, false
		}
		return func(c *evalContext) float64 { return -x(c) }, true
	case operators.Add, operators.Subtract, operators.Multiply, operators.Divide:
		x, ok1 := nc.number(args[0])
		y, ok2 := nc.number(args[1])
		if !ok1 || !ok2 {
			return nil, false
		}
		switch call.FunctionName() {
		case operators.Add:
			return func(c *evalContext) float64 { return x(c) + y(c) }, true
		case operators.Subtract:
			return func(c *evalContext) float64 { return x(c) - y(c) }, true
		case operators.Multiply:
			return func(c *evalContext) float64 { return x(c) * y(c) }, true
		default:
			return func(c *evalContext) float64 { return x(c) / y(c) }, true
		}
	case operators.Conditional:
		cond, ok1 := nc.boolean(args[0])
		x, ok2 := nc.number(args[1])
		y, ok3 := nc.number(args[2])
		if !ok1 || !ok2 || !ok3 {
			return nil, false
		}
		// An error condition makes the whole expression an error: NaN
		// carries it to the comparison that consumes the number, which is
		// an error as well.
		return func(c *evalContext) float64 {
			switch cond(c) {
			case triTrue:
				return x(c)
			case triFalse:
				return y(c)
			}
			return math.NaN()
		}, true
	}
	for _, hf := range historyFuncs {
		if call.FunctionName() != hf.internal {
			continue
		}
		if len(args) < 2 || args[1].Kind() != ast.LiteralKind {
			return nil, false
		}
		spec, ok := args[1].AsLiteral().(types.Int)
		if !ok {
			return nil, false
		}
		var horizon float64
		if hf.horizon {
			if len(args) != 3 || args[2].Kind() != ast.LiteralKind {
				return nil, false
			}
			h, ok := args[2].AsLiteral().(types.Double)
			if !ok {
				return nil, false
			}
			horizon = float64(h)
		}
		kind, sp := hf.kind, int64(spec)
		return func(c *evalContext) float64 { return c.history(kind, sp, horizon) }, true
	}
	if call.FunctionName() == logFn {
		id, ok := logCallID(call)
		if !ok || id.isNode() {
			return nil, false
		}
		i := int(id)
		return func(c *evalContext) float64 { return c.target.vals[i] }, true
	}
	return nil, false
}

// conditionalErr marks a ?: whose condition was an error, so that a
// comparison consuming it reports an error rather than false.
func (nc *nativeCompiler) hasConditional(e ast.Expr) bool {
	found := false
	ast.PostOrderVisit(e, ast.NewExprVisitor(func(x ast.Expr) {
		if x.Kind() == ast.CallKind && x.AsCall().FunctionName() == operators.Conditional {
			found = true
		}
	}))
	return found
}

func (nc *nativeCompiler) boolean(e ast.Expr) (boolFn, bool) {
	if !nc.isBool(e) {
		return nil, false
	}
	switch e.Kind() {
	case ast.LiteralKind:
		b, ok := e.AsLiteral().(types.Bool)
		if !ok {
			return nil, false
		}
		v := triOf(bool(b))
		return func(*evalContext) tri { return v }, true
	case ast.CallKind:
	default:
		return nil, false
	}
	call := e.AsCall()
	args := call.Args()
	switch fn := call.FunctionName(); fn {
	case operators.LogicalAnd, operators.LogicalOr:
		x, ok1 := nc.boolean(args[0])
		y, ok2 := nc.boolean(args[1])
		if !ok1 || !ok2 {
			return nil, false
		}
		if fn == operators.LogicalAnd {
			return func(c *evalContext) tri {
				a := x(c)
				if a == triFalse {
					return triFalse
				}
				b := y(c)
				if b == triFalse {
					return triFalse
				}
				if a == triErr || b == triErr {
					return triErr
				}
				return triTrue
			}, true
		}
		return func(c *evalContext) tri {
			a := x(c)
			if a == triTrue {
				return triTrue
			}
			b := y(c)
			if b == triTrue {
				return triTrue
			}
			if a == triErr || b == triErr {
				return triErr
			}
			return triFalse
		}, true
	case operators.LogicalNot:
		x, ok := nc.boolean(args[0])
		if !ok {
			return nil, false
		}
		return func(c *evalContext) tri {
			switch x(c) {
			case triTrue:
				return triFalse
			case triFalse:
				return triTrue
			}
			return triErr
		}, true
	case operators.Conditional:
		cond, ok1 := nc.boolean(args[0])
		x, ok2 := nc.boolean(args[1])
		y, ok3 := nc.boolean(args[2])
		if !ok1 || !ok2 || !ok3 {
			return nil, false
		}
		return func(c *evalContext) tri {
			switch cond(c) {
			case triTrue:
				return x(c)
			case triFalse:
				return y(c)
			}
			return triErr
		}, true
	case operators.Less, operators.LessEquals, operators.Greater, operators.GreaterEquals:
		if nc.hasConditional(args[0]) || nc.hasConditional(args[1]) {
			return nil, false // keep ?: error propagation exact: leave it to CEL
		}
		x, ok1 := nc.number(args[0])
		y, ok2 := nc.number(args[1])
		if !ok1 || !ok2 {
			return nil, false
		}
		var cmp func(a, b float64) bool
		switch fn {
		case operators.Less:
			cmp = func(a, b float64) bool { return a < b }
		case operators.LessEquals:
			cmp = func(a, b float64) bool { return a <= b }
		case operators.Greater:
			cmp = func(a, b float64) bool { return a > b }
		default:
			cmp = func(a, b float64) bool { return a >= b }
		}
		// CEL orders NaN as false both ways, as Go does.
		return func(c *evalContext) tri { return triOf(cmp(x(c), y(c))) }, true
	case operators.Equals, operators.NotEquals:
		if nc.hasConditional(args[0]) || nc.hasConditional(args[1]) {
			return nil, false
		}
		eq := fn == operators.Equals
		if x, ok := nc.number(args[0]); ok {
			y, ok := nc.number(args[1])
			if !ok {
				return nil, false
			}
			return func(c *evalContext) tri { return triOf((x(c) == y(c)) == eq) }, true
		}
		x, ok1 := nc.boolean(args[0])
		y, ok2 := nc.boolean(args[1])
		if !ok1 || !ok2 {
			return nil, false
		}
		return func(c *evalContext) tri {
			a, b := x(c), y(c)
			if a == triErr || b == triErr {
				return triErr
			}
			return triOf((a == b) == eq)
		}, true
	case alertFn, targetAlertFn:
		if len(args) != 2 || args[1].Kind() != ast.LiteralKind {
			return nil, false
		}
		name, ok := args[1].AsLiteral().(types.String)
		if !ok {
			return nil, false
		}
		exact := fn == targetAlertFn
		return func(c *evalContext) tri { return triOf(c.matchAlert(string(name), exact)) }, true
	}
	return nil, false
}

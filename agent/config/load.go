package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// Error is one configuration problem, located in its file.
type Error struct {
	File   string
	Line   int // 0 when the position is unknown
	Column int
	// Field is the YAML path of the field ("remediation.per_target.every"),
	// empty for syntax errors.
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
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Default returns the embedded default configuration: observe everything,
// act on nothing.
func Default() *Config {
	c, err := decode("default.yaml", defaultYAML, &Config{})
	if err != nil {
		// The embedded file is tested; failing here is a build defect.
		panic("config: embedded default.yaml: " + err.Error())
	}
	return c
}

// Load reads, strictly decodes and validates the config file at path. Fields
// the file does not set keep their defaults.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes and validates data, naming it file in errors.
func Parse(file string, data []byte) (*Config, error) {
	c, err := decode(file, data, Default())
	if err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, Locate(file, data, err)
	}
	return c, nil
}

// decode strictly decodes data over base.
func decode(file string, data []byte, base *Config) (*Config, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return base, nil
	}
	if err := yaml.UnmarshalWithOptions(data, base, yaml.Strict()); err != nil {
		return nil, yamlError(file, data, err)
	}
	return base, nil
}

// mappingValues calls fn for every key: value pair in data, with the YAML
// path of the value ("$.events.psi.window").
func mappingValues(data []byte, fn func(path string, mv *ast.MappingValueNode)) {
	f, err := parser.ParseBytes(data, 0)
	if err != nil {
		return
	}
	for _, doc := range f.Docs {
		ast.Walk(visitorFunc(func(n ast.Node) {
			if mv, ok := n.(*ast.MappingValueNode); ok && mv.Key != nil && mv.Value != nil {
				fn(mv.Value.GetPath(), mv)
			}
		}), doc)
	}
}

type visitorFunc func(ast.Node)

func (f visitorFunc) Visit(n ast.Node) ast.Visitor { f(n); return f }

var durationType = reflect.TypeOf(time.Duration(0))

// fieldType returns the Go type of the Config field at a YAML path such as
// "$.events.psi.window" (nil if there is none).
func fieldType(path string) reflect.Type {
	t := reflect.TypeOf(Config{})
	for _, name := range strings.Split(strings.TrimPrefix(path, "$."), ".") {
		if t.Kind() != reflect.Struct {
			return nil
		}
		var next reflect.Type
		for i := 0; i < t.NumField(); i++ {
			if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); tag == name {
				next = t.Field(i).Type
				break
			}
		}
		if next == nil {
			return nil
		}
		t = next
	}
	return t
}

// yamlError turns a go-yaml error into an *Error with its position and,
// where it can be told, the field.
func yamlError(file string, data []byte, err error) error {
	var ye yaml.Error
	if errors.As(err, &ye) {
		e := &Error{File: file, Err: errors.New(ye.GetMessage())}
		if tk := ye.GetToken(); tk != nil && tk.Position != nil {
			e.Line, e.Column = tk.Position.Line, tk.Position.Column
			// Name the field: an unknown field's error points at its key,
			// a type error at the value.
			_, isUnknown := ye.(*yaml.UnknownFieldError)
			mappingValues(data, func(path string, mv *ast.MappingValueNode) {
				at := mv.Value
				if isUnknown {
					at = mv.Key
				}
				if t := at.GetToken(); t != nil && t.Position != nil &&
					t.Position.Line == e.Line && t.Position.Column == e.Column {
					e.Field = strings.TrimPrefix(path, "$.")
				}
			})
		}
		return e
	}
	// go-yaml returns value errors (a bad duration) without a position:
	// find the first value of that type that does not parse.
	e := &Error{File: file, Err: err}
	mappingValues(data, func(path string, mv *ast.MappingValueNode) {
		if e.Line != 0 || fieldType(path) != durationType {
			return
		}
		sv, ok := mv.Value.(*ast.StringNode)
		if !ok {
			return
		}
		if _, perr := time.ParseDuration(sv.Value); perr != nil {
			tk := mv.Value.GetToken()
			e.Line, e.Column = tk.Position.Line, tk.Position.Column
			e.Field = strings.TrimPrefix(path, "$.")
			e.Err = perr
		}
	})
	return e
}

// Locate turns the *FieldError values in err into *Error values carrying
// the file:line:column of the field in data (when the file sets it).
func Locate(file string, data []byte, err error) error {
	if err == nil {
		return nil
	}
	astFile, perr := parser.ParseBytes(data, 0)
	var out []error
	for _, e := range unjoin(err) {
		var fe *FieldError
		if !errors.As(e, &fe) {
			out = append(out, &Error{File: file, Err: e})
			continue
		}
		le := &Error{File: file, Field: fe.Field, Err: fe.Err}
		if perr == nil {
			if p, err := yaml.PathString("$." + fe.Field); err == nil {
				if node, err := p.FilterFile(astFile); err == nil && node != nil {
					if tk := node.GetToken(); tk != nil && tk.Position != nil {
						le.Line, le.Column = tk.Position.Line, tk.Position.Column
					}
				}
			}
		}
		out = append(out, le)
	}
	return errors.Join(out...)
}

package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml/ast"
)

func TestDefaultIsValidAndActsOnNothing(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
	if !c.Remediation.DryRun {
		t.Errorf("default remediation.dry_run = false, want true")
	}
	if len(c.Remediation.OptIn) != 0 {
		t.Errorf("default remediation.opt_in = %v, want empty", c.Remediation.OptIn)
	}
	if c.Listen != DefaultListen {
		t.Errorf("default listen = %q, want %q", c.Listen, DefaultListen)
	}
	if !strings.HasPrefix(c.Listen, "127.0.0.1:") {
		t.Errorf("default listen %q is not localhost", c.Listen)
	}
	if c.Tick != time.Second {
		t.Errorf("default tick = %v, want 1s", c.Tick)
	}
	// Default returns a fresh value each time: callers may modify it.
	c.Tick = time.Hour
	if Default().Tick != time.Second {
		t.Errorf("Default shares state between calls")
	}
}

// TestExampleFile checks that vigil.example.yaml loads, equals the defaults
// it claims to show, and sets every field of Config.
func TestExampleFile(t *testing.T) {
	file := filepath.Join("..", "..", "vigil.example.yaml")
	got, err := Load(file)
	if err != nil {
		t.Fatalf("Load(%s): %v", file, err)
	}
	if want := Default(); !reflect.DeepEqual(got, want) {
		t.Errorf("example file differs from defaults:\n got %+v\nwant %+v", got, want)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]bool{}
	mappingValues(data, func(path string, _ *ast.MappingValueNode) { set[strings.TrimPrefix(path, "$.")] = true })
	for _, f := range leafFields(reflect.TypeOf(Config{}), "") {
		if !set[f] {
			t.Errorf("vigil.example.yaml does not document field %s", f)
		}
	}
}

// leafFields lists the YAML paths of every non-struct field of t.
func leafFields(t reflect.Type, prefix string) []string {
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if prefix != "" {
			name = prefix + "." + name
		}
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Duration(0)) {
			out = append(out, leafFields(f.Type, name)...)
			continue
		}
		out = append(out, name)
	}
	return out
}

func TestParseOverridesOnlyWhatIsSet(t *testing.T) {
	c, err := Parse("t.yaml", []byte("tick: 2s\nremediation:\n  per_node:\n    burst: 7\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Tick = 2 * time.Second
	want.Remediation.PerNode.Burst = 7
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got %+v\nwant %+v", c, want)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		// want is the exact error message: file:line:column: field: problem.
		want string
	}{
		{"unknown top-level field", "tick: 1s\nbogus: 1\n", `t.yaml:2:1: bogus: unknown field "bogus"`},
		{"unknown nested field", "events:\n  psi:\n    windw: 2s\n", `t.yaml:3:5: events.psi.windw: unknown field "windw"`},
		{"bad duration", "remediation:\n  per_target:\n    every: 5x\n", `t.yaml:3:12: remediation.per_target.every: time: unknown unit "x" in duration "5x"`},
		{"wrong type", "remediation:\n  max_concurrent: many\n", `t.yaml:2:19: remediation.max_concurrent: cannot unmarshal string into Go struct field Config.Remediation of type int`},
		{"duplicate key", "tick: 1s\ntick: 2s\n", `t.yaml:2:1: mapping key "tick" already defined at [1:1]`},
		{"invalid value", "events:\n  psi:\n    window: 30s\n", `t.yaml:3:13: events.psi.window: must be between 500ms and 10s, got 30s`},
		{"invalid glob", "remediation:\n  opt_in:\n    - /a/[\n", `t.yaml:3:7: remediation.opt_in[0]: glob "/a/[": syntax error in pattern`},
		{"relative glob", "remediation:\n  protected: [kubepods]\n", `t.yaml:2:15: remediation.protected[0]: glob "kubepods" must start with / (or be unit:, namespace: or label:)`},
		{"bad listen", "listen: nowhere\n", `t.yaml:1:9: listen: want host:port: address nowhere: missing port in address`},
		{"tick too fast", "tick: 1ms\n", `t.yaml:1:7: tick: must be between 10ms and 1m, got 1ms`},
		{"syntax error", "tick: [\n", `t.yaml:1:7: sequence end token ']' not found`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatalf("Parse succeeded, want error %q", tt.want)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("error\n got %q\nwant %q", got, tt.want)
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.Line == 0 {
				t.Errorf("error %v carries no position", err)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := Default()
	c.Tick = 0
	c.Remediation.MaxConcurrent = 0
	c.Events.PSI.Window = time.Minute
	err := c.Validate()
	var fields []string
	for _, e := range unjoin(err) {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("error %v is not a *FieldError", e)
		}
		fields = append(fields, fe.Field)
	}
	want := []string{"tick", "events.psi.window", "remediation.max_concurrent"}
	if !reflect.DeepEqual(fields, want) {
		t.Errorf("fields = %v, want %v", fields, want)
	}
}

func TestValidateSections(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Config)
		field  string
	}{
		{"host_root relative", func(c *Config) { c.HostRoot = "host" }, "host_root"},
		{"max_cgroups zero", func(c *Config) { c.MaxCgroups = 0 }, "max_cgroups"},
		{"log level", func(c *Config) { c.Log.Level = "loud" }, "log.level"},
		{"log format", func(c *Config) { c.Log.Format = "xml" }, "log.format"},
		{"threshold ratio", func(c *Config) { c.Events.ThresholdRatio = 1.5 }, "events.threshold_ratio"},
		{"stall over window", func(c *Config) { c.Events.PSI.Stall = 3 * time.Second }, "events.psi.stall"},
		{"min interval", func(c *Config) { c.Events.MinInterval = time.Minute }, "events.min_interval"},
		{"empty rules dir", func(c *Config) { c.Rules.Dirs = []string{""} }, "rules.dirs[0]"},
		{"rate limit", func(c *Config) { c.Remediation.PerTarget.Every = 0 }, "remediation.per_target.every"},
		{"burst", func(c *Config) { c.Remediation.PerNode.Burst = 0 }, "remediation.per_node.burst"},
		{"journal path", func(c *Config) { c.Remediation.Journal.Path = "" }, "remediation.journal.path"},
		{"journal retention", func(c *Config) { c.Remediation.Journal.Retention = time.Minute }, "remediation.journal.retention"},
		{"journal size", func(c *Config) { c.Remediation.Journal.MaxBytes = 10 }, "remediation.journal.max_bytes"},
		{"blast radius", func(c *Config) { c.Remediation.MaxTargetsPerHour = 0 }, "remediation.max_targets_per_hour"},
		{"body size", func(c *Config) { c.API.MaxBodyBytes = 1 << 30 }, "api.max_body_bytes"},
		{"oom score", func(c *Config) { c.Self.OOMScoreAdj = -2000 }, "self.oom_score_adj"},
		{"memory limit", func(c *Config) { c.Self.MemoryLimitBytes = -1 }, "self.memory_limit_bytes"},
		{"kubernetes replicas", func(c *Config) { c.Kubernetes.MaxReplicas = -1 }, "kubernetes.max_replicas"},
		{"kubernetes cooldown", func(c *Config) { c.Kubernetes.ScaleCooldown = -time.Second }, "kubernetes.scale_cooldown"},
		{"kubernetes cri", func(c *Config) { c.Kubernetes.CRIEndpoint = "/run/containerd.sock" }, "kubernetes.cri_endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.modify(c)
			err := c.Validate()
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Validate() = %v, want a field error on %s", err, tt.field)
			}
			if fe.Field != tt.field {
				t.Errorf("field = %q, want %q (error %v)", fe.Field, tt.field, err)
			}
		})
	}
}

func TestValidateGlob(t *testing.T) {
	tests := []struct {
		pattern string
		ok      bool
	}{
		{"/kubepods/**", true},
		{"/system.slice/*.service", true},
		{"unit:myapp.service", true},
		{"namespace:prod-*", true},
		{"label:vigil.io/remediate=true", true},
		{"kubepods", false},
		{"/a/[", false},
		{"unit:", false},
		{"unit:[", false},
		{"label:novalue", false},
		{"label:=x", false},
	}
	for _, tt := range tests {
		if err := ValidateGlob(tt.pattern); (err == nil) != tt.ok {
			t.Errorf("ValidateGlob(%q) = %v, want ok %v", tt.pattern, err, tt.ok)
		}
	}
}

func TestReadToken(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "token")
	if err := os.WriteFile(good, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		file    string
		want    string
		wantErr bool
	}{
		{"", "", false},
		{good, "s3cret", false},
		{empty, "", true},
		{filepath.Join(dir, "missing"), "", true},
	}
	for _, tt := range tests {
		got, err := (&API{TokenFile: tt.file}).ReadToken()
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("ReadToken(%q) = %q, %v; want %q, error %v", tt.file, got, err, tt.want, tt.wantErr)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, seed := range []string{"", "tick: 2s\n", "events:\n  psi:\n    window: 4s\n", "remediation:\n  opt_in: [/a/**]\n"} {
		f.Add([]byte(seed))
	}
	if b, err := os.ReadFile(filepath.Join("..", "..", "vigil.example.yaml")); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data)
		if err == nil {
			if verr := c.Validate(); verr != nil {
				t.Fatalf("Parse accepted a config that does not validate: %v", verr)
			}
		}
	})
}

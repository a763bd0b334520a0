package main

import (
	"bytes"
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/vigil-agent/vigil/agent"
)

func TestRun(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string // substring
		wantStderr string // substring
	}{
		{"no command", nil, 2, "", "Usage: vigil"},
		{"help", []string{"--help"}, 0, "Commands:", ""},
		{"short help", []string{"-h"}, 0, "Commands:", ""},
		{"help command", []string{"help"}, 0, "Commands:", ""},
		{"help for a command", []string{"help", "snapshot"}, 0, "", "Usage: vigil snapshot"},
		{"version flag", []string{"--version"}, 0, "vigil ", ""},
		{"version command", []string{"version"}, 0, "vigil ", ""},
		{"unknown command", []string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{"unknown flag", []string{"--frob"}, 2, "", "flag provided but not defined"},
		{"command help", []string{"run", "--help"}, 0, "", "Usage: vigil run"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, &stdout, &stderr)
			if code != tt.wantCode || !strings.Contains(stdout.String(), tt.wantStdout) || !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("vigil %v = %d\nstdout %q\nstderr %q\nwant %d, stdout with %q, stderr with %q",
					tt.args, code, stdout.String(), stderr.String(), tt.wantCode, tt.wantStdout, tt.wantStderr)
			}
		})
	}
}

// TestUsageListsEveryCommand checks that `vigil --help` names every
// registered command with its summary.
func TestUsageListsEveryCommand(t *testing.T) {
	var stdout bytes.Buffer
	run(context.Background(), []string{"--help"}, &stdout, &bytes.Buffer{})
	for _, c := range agent.Commands() {
		if !strings.Contains(stdout.String(), c.Name) || !strings.Contains(stdout.String(), c.Summary) {
			t.Errorf("usage lacks %s: %s", c.Name, c.Summary)
		}
	}
	for _, name := range []string{"run", "snapshot", "check-config", "version", "record"} {
		if agent.LookupCommand(name) == nil {
			t.Errorf("command %s is not registered", name)
		}
	}
}

// TestStaticBuildWithVersion builds the real binary the way a release is
// built (CGO_ENABLED=0, version set with -ldflags) and runs it.
func TestStaticBuildWithVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	bin := filepath.Join(t.TempDir(), "vigil")
	build := exec.Command(goBin, "build", "-o", bin,
		"-ldflags", "-X github.com/vigil-agent/vigil/agent.version=v9.9.9-test", ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build: %v\n%s", err, out)
	}
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("vigil %v: %v\n%s", args, err, out)
		}
		if !strings.HasPrefix(string(out), "vigil v9.9.9-test (revision ") {
			t.Errorf("vigil %v = %q, want the -ldflags version", args, out)
		}
	}
	// The binary is static: no ELF interpreter.
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("binary has an ELF interpreter: not statically linked")
		}
	}
}

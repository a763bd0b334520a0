package main

import (
	"bytes"
	"context"
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

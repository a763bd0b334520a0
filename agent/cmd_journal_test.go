package agent

import (
	"bytes"
	"context"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/remediate/journal"
	"github.com/vigil-agent/vigil/rules"
)

func seedJournal(t *testing.T) (string, *journal.Journal) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "journal.db")
	j, err := journal.Open(path, journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Add(-time.Minute)
	for _, r := range []*journal.Record{
		{ID: "aaa", Node: "n1", Kind: journal.KindRemediation, Time: t0, Rule: "leak", Outcome: journal.OutcomeOOMAvoided,
			Target:   rules.Target{Kind: "cgroup", Path: "/apps/a"},
			Decision: "rule leak fired on /apps/a: ladder throttle-memory",
			Steps:    []journal.Step{{Action: "throttle-memory", Intent: t0, Finished: t0.Add(time.Millisecond), Result: "applied", Detail: "memory.high max -> 100MiB"}}},
		{ID: "bbb", Node: "n1", Kind: journal.KindOOMMiss, Time: t0.Add(time.Second), Outcome: journal.OutcomeOOMKilled,
			Target: rules.Target{Kind: "cgroup", Path: "/apps/b"}, Decision: "kernel OOM-killed 1 process(es) in /apps/b"},
	} {
		if err := j.Put(r); err != nil {
			t.Fatal(err)
		}
	}
	return path, j
}

func run(t *testing.T, cmd func(context.Context, []string, *bytes.Buffer, *bytes.Buffer) int, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := cmd(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), code
}

func journalCmd(ctx context.Context, args []string, o, e *bytes.Buffer) int {
	return journalCommand(ctx, args, o, e)
}
func rcaCmd(ctx context.Context, args []string, o, e *bytes.Buffer) int {
	return rcaCommand(ctx, args, o, e)
}

func TestJournalCommands(t *testing.T) {
	path, j := seedJournal(t)
	// While j is open (the agent holds the lock) the CLI asks the API.
	srv := httptest.NewServer(j.Handler())
	t.Cleanup(srv.Close)
	closed := false
	for _, mode := range []string{"via agent API (file locked)", "from the file"} {
		t.Run(mode, func(t *testing.T) {
			if mode == "from the file" && !closed {
				srv.Close()
				j.Close()
				closed = true
			}
			api := "--api=" + srv.URL
			tests := []struct {
				name     string
				cmd      func(context.Context, []string, *bytes.Buffer, *bytes.Buffer) int
				args     []string
				wantCode int
				want     []string
				notWant  []string
			}{
				{"list", journalCmd, []string{"list", "--db", path, api}, 0, []string{"ID", "aaa", "throttle-memory=applied", "oom_avoided", "bbb", "oom_miss"}, nil},
				{"list filtered", journalCmd, []string{"list", "--db", path, api, "--outcome", "oom_killed"}, 0, []string{"bbb"}, []string{"aaa"}},
				{"show", journalCmd, []string{"show", "aaa", "--db", path, api}, 0, []string{`"id": "aaa"`, `"outcome": "oom_avoided"`}, nil},
				{"show unknown", journalCmd, []string{"show", "zzz", "--db", path, api}, 1, nil, nil},
				{"export", journalCmd, []string{"export", "--db", path, api}, 0, []string{`{"id":"bbb"`, `{"id":"aaa"`}, nil},
				{"rca", rcaCmd, []string{"aaa", "--db", path, api}, 0, []string{"target:  /apps/a", "decision: rule leak fired", "step 0 throttle-memory: applied: memory.high max -> 100MiB"}, nil},
				{"rca needs an id", rcaCmd, []string{"--db", path}, 2, nil, nil},
				{"unknown subcommand", journalCmd, []string{"frob"}, 2, nil, nil},
			}
			for _, tt := range tests {
				out, errOut, code := run(t, tt.cmd, tt.args...)
				if code != tt.wantCode {
					t.Errorf("%s: exit %d, want %d (stderr %s)", tt.name, code, tt.wantCode, errOut)
				}
				for _, w := range tt.want {
					if !strings.Contains(out, w) {
						t.Errorf("%s: output lacks %q:\n%s", tt.name, w, out)
					}
				}
				for _, w := range tt.notWant {
					if strings.Contains(out, w) {
						t.Errorf("%s: output has %q:\n%s", tt.name, w, out)
					}
				}
			}
		})
	}
}

package journal

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/rules"
)

var long = flag.Bool("long", false, "run the long kill -9 loop (200 iterations)")

const writerEnv = "VIGIL_JOURNAL_CRASH_WRITER"

func TestMain(m *testing.M) {
	if path, ok := os.LookupEnv(writerEnv); ok {
		os.Exit(crashWriter(path))
	}
	os.Exit(m.Run())
}

func rec(id string, at time.Time, target, rule, outcome string) *Record {
	return &Record{
		ID: id, Node: "n1", Kind: KindRemediation, Time: at,
		Target: rules.Target{Kind: "cgroup", Path: target}, Rule: rule, Outcome: outcome,
		Evidence: Evidence{Signals: map[string]float64{"usage_ratio": 0.93}},
		Steps:    []Step{{Index: 0, Action: "reclaim", Intent: at, Result: "applied"}},
	}
}

func open(t testing.TB, opts Options) *Journal {
	t.Helper()
	j, err := Open(filepath.Join(t.TempDir(), "journal.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

func TestPutGetList(t *testing.T) {
	j := open(t, Options{})
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	for i, r := range []*Record{
		rec("a", t0, "/a", "leak", OutcomeOOMAvoided),
		rec("b", t0.Add(time.Minute), "/b", "leak", OutcomeOOMKilled),
		rec("c", t0.Add(2*time.Minute), "/a", "pressure", OutcomeRecovered),
	} {
		if err := j.Put(r); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	got, err := j.Get("b")
	if err != nil {
		t.Fatal(err)
	}
	if got.Outcome != OutcomeOOMKilled || got.Target.Path != "/b" || got.Evidence.Signals["usage_ratio"] != 0.93 {
		t.Errorf("Get(b) = %+v", got)
	}
	if _, err := j.Get("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(nope) err = %v, want ErrNotFound", err)
	}
	tests := []struct {
		name string
		f    Filter
		want []string
	}{
		{"all newest first", Filter{}, []string{"c", "b", "a"}},
		{"target", Filter{Target: "/a"}, []string{"c", "a"}},
		{"rule", Filter{Rule: "leak"}, []string{"b", "a"}},
		{"outcome", Filter{Outcome: OutcomeOOMKilled}, []string{"b"}},
		{"since", Filter{Since: t0.Add(30 * time.Second)}, []string{"c", "b"}},
		{"limit", Filter{Limit: 1}, []string{"c"}},
		{"none", Filter{Rule: "other"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recs, err := j.List(tt.f)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, r := range recs {
				ids = append(ids, r.ID)
			}
			if fmt.Sprint(ids) != fmt.Sprint(tt.want) {
				t.Errorf("List(%+v) = %v, want %v", tt.f, ids, tt.want)
			}
		})
	}
	// Replacing a record keeps one entry.
	r := rec("a", t0, "/a", "leak", OutcomeNoEffect)
	if err := j.Put(r); err != nil {
		t.Fatal(err)
	}
	recs, _ := j.List(Filter{Target: "/a"})
	if len(recs) != 2 || recs[1].Outcome != OutcomeNoEffect {
		t.Errorf("after replace: %+v", recs)
	}
	var sb strings.Builder
	if err := j.Export(&sb, Filter{}); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(sb.String(), "\n"); lines != 3 {
		t.Errorf("export wrote %d lines, want 3", lines)
	}
}

func TestPrune(t *testing.T) {
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	t.Run("age", func(t *testing.T) {
		j := open(t, Options{Retention: time.Hour})
		for i, age := range []time.Duration{3 * time.Hour, 2 * time.Hour, 30 * time.Minute} {
			if err := j.Put(rec(strconv.Itoa(i), now.Add(-age), "/x", "r", "")); err != nil {
				t.Fatal(err)
			}
		}
		n, err := j.Prune(now)
		if err != nil || n != 2 {
			t.Fatalf("Prune = %d, %v; want 2", n, err)
		}
		if _, err := j.Get("2"); err != nil {
			t.Errorf("recent record pruned: %v", err)
		}
	})
	t.Run("size", func(t *testing.T) {
		j := open(t, Options{MaxBytes: 3000})
		for i := range 10 {
			if err := j.Put(rec(strconv.Itoa(i), now.Add(time.Duration(i)*time.Second), "/x", "r", "")); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := j.Prune(now); err != nil {
			t.Fatal(err)
		}
		recs, _ := j.List(Filter{Limit: -1})
		if len(recs) == 0 || len(recs) >= 10 {
			t.Fatalf("kept %d records, want some but not all", len(recs))
		}
		if recs[0].ID != "9" {
			t.Errorf("newest kept = %s, want 9", recs[0].ID)
		}
	})
}

func TestStateAndApplied(t *testing.T) {
	j := open(t, Options{})
	if _, err := j.LoadState("rules"); !errors.Is(err, ErrNotFound) {
		t.Errorf("LoadState on empty = %v", err)
	}
	if err := j.SaveState("rules", []byte(`{"x":1}`)); err != nil {
		t.Fatal(err)
	}
	got, err := j.LoadState("rules")
	if err != nil || string(got) != `{"x":1}` {
		t.Errorf("LoadState = %q, %v", got, err)
	}
	a := AppliedLimit{Key: "/a|memory.high", Target: "/a", Knob: "memory.high", Original: "max", Applied: "100", Time: time.Now()}
	if err := j.PutApplied(a); err != nil {
		t.Fatal(err)
	}
	a.Original, a.Applied = "100", "90" // a second step keeps the first original
	if err := j.PutApplied(a); err != nil {
		t.Fatal(err)
	}
	list, err := j.Applied()
	if err != nil || len(list) != 1 || list[0].Original != "max" || list[0].Applied != "90" {
		t.Fatalf("Applied = %+v, %v", list, err)
	}
	if err := j.DeleteApplied(a.Key); err != nil {
		t.Fatal(err)
	}
	if list, _ := j.Applied(); len(list) != 0 {
		t.Errorf("after delete: %+v", list)
	}
}

func TestHandler(t *testing.T) {
	j := open(t, Options{})
	t0 := time.Now().Add(-time.Minute)
	_ = j.Put(rec("r1", t0, "/a", "leak", OutcomeOOMAvoided))
	_ = j.Put(rec("r2", t0.Add(time.Second), "/b", "leak", OutcomeOOMKilled))
	srv := httptest.NewServer(j.Handler())
	t.Cleanup(srv.Close)
	tests := []struct {
		path       string
		wantStatus int
		wantIDs    []string
	}{
		{"/api/v1/remediations", 200, []string{"r2", "r1"}},
		{"/api/v1/remediations?outcome=oom_killed", 200, []string{"r2"}},
		{"/api/v1/remediations?target=/a&since=1h", 200, []string{"r1"}},
		{"/api/v1/remediations?since=bogus", 400, nil},
		{"/api/v1/remediations/r1", 200, []string{"r1"}},
		{"/api/v1/remediations/zzz", 404, nil},
	}
	for _, tt := range tests {
		resp, err := http.Get(srv.URL + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Remediations []Record `json:"remediations"`
			ID           string   `json:"id"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != tt.wantStatus {
			t.Errorf("%s: status %d, want %d", tt.path, resp.StatusCode, tt.wantStatus)
			continue
		}
		var ids []string
		for _, r := range body.Remediations {
			ids = append(ids, r.ID)
		}
		if body.ID != "" {
			ids = append(ids, body.ID)
		}
		if fmt.Sprint(ids) != fmt.Sprint(tt.wantIDs) {
			t.Errorf("%s: ids %v, want %v", tt.path, ids, tt.wantIDs)
		}
	}
}

// crashWriter is the child of TestSurvivesKill9: it appends records and
// updates them (as a ladder does), printing "ack <id> <steps>" after each
// Put returned, until it is killed.
func crashWriter(path string) int {
	j, err := Open(path, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	out := bufio.NewWriter(os.Stdout)
	for i := 0; ; i++ {
		id := fmt.Sprintf("%d-%d", os.Getpid(), i)
		r := rec(id, time.Now(), "/crash", "leak", OutcomePending)
		r.Steps = nil
		for s := 0; s < 3; s++ {
			r.Steps = append(r.Steps, Step{Index: s, Action: "throttle-memory", Intent: time.Now(), Detail: strings.Repeat("x", 200)})
			if err := j.Put(r); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			fmt.Fprintf(out, "ack %s %d\n", id, len(r.Steps))
			out.Flush()
		}
		_ = j.PutApplied(AppliedLimit{Key: id, Original: "max", Applied: "1"})
		_ = j.SaveState("i", []byte(strconv.Itoa(i)))
	}
}

func TestSurvivesKill9(t *testing.T) {
	iterations := 50
	if *long {
		iterations = 200
	}
	if testing.Short() {
		iterations = 10
	}
	path := filepath.Join(t.TempDir(), "journal.db")
	acked := map[string]int{}
	for it := range iterations {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), writerEnv+"="+path)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		// Wait for the first ack so the child is past Open, then kill at a
		// random moment.
		first, ok := <-lines
		if !ok {
			_ = cmd.Wait()
			t.Fatalf("iteration %d: writer exited early: %s", it, stderr.String())
		}
		time.Sleep(time.Duration(rand.IntN(40)) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		record := func(l string) {
			f := strings.Fields(l)
			if len(f) == 3 && f[0] == "ack" {
				n, _ := strconv.Atoi(f[2])
				acked[f[1]] = max(acked[f[1]], n)
			}
		}
		record(first)
		for l := range lines {
			record(l)
		}
		_ = cmd.Wait()

		j, err := Open(path, Options{})
		if err != nil {
			t.Fatalf("iteration %d: reopen after kill -9: %v", it, err)
		}
		for id, steps := range acked {
			r, err := j.Get(id)
			if err != nil {
				t.Fatalf("iteration %d: acknowledged record %s lost: %v", it, id, err)
			}
			if len(r.Steps) < steps || r.Steps[len(r.Steps)-1].Detail == "" {
				t.Fatalf("iteration %d: record %s has %d steps, acknowledged %d", it, id, len(r.Steps), steps)
			}
		}
		if _, err := j.List(Filter{Limit: -1}); err != nil {
			t.Fatalf("iteration %d: list after kill -9: %v", it, err)
		}
		j.Close()
	}
	t.Logf("%d kill -9 iterations, %d acknowledged records all intact", iterations, len(acked))
}

func BenchmarkPut(b *testing.B) {
	j := open(b, Options{})
	now := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := j.Put(rec(strconv.Itoa(i), now.Add(time.Duration(i)), "/bench", "leak", OutcomePending)); err != nil {
			b.Fatal(err)
		}
	}
}

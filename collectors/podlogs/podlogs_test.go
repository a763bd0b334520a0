package podlogs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseCRILine(t *testing.T) {
	ts := time.Date(2026, 11, 25, 20, 41, 8, 1, time.UTC)
	tests := []struct {
		in   string
		want criLine
		err  bool
	}{
		{in: "2026-11-25T20:41:08.000000001Z stdout F hello world", want: criLine{Time: ts, Stream: Stdout, Message: []byte("hello world")}},
		{in: "2026-11-25T20:41:08.000000001Z stderr P part ", want: criLine{Time: ts, Stream: Stderr, Partial: true, Message: []byte("part ")}},
		{in: "2026-11-25T20:41:08.000000001Z stdout F", want: criLine{Time: ts, Stream: Stdout}},
		{in: "2026-11-25T20:41:08.000000001Z stdout F ", want: criLine{Time: ts, Stream: Stdout, Message: []byte{}}},
		{in: "2026-11-25T20:41:08.000000001Z stderr P:x tagged", want: criLine{Time: ts, Stream: Stderr, Partial: true, Message: []byte("tagged")}},
		{in: "2026-11-25T20:41:08.000000001Z stdout F a  b", want: criLine{Time: ts, Stream: Stdout, Message: []byte("a  b")}},
		{in: "garbage", err: true},
		{in: "2026-11-25T20:41:08Z stdin F x", err: true},
		{in: "2026-11-25T20:41:08Z stdout X x", err: true},
		{in: "yesterday stdout F x", err: true},
		{in: "2026-11-25T20:41:08Z stdout", err: true},
	}
	for _, tt := range tests {
		got, err := parseCRILine([]byte(tt.in))
		if (err != nil) != tt.err {
			t.Errorf("parseCRILine(%q) err = %v, want err %v", tt.in, err, tt.err)
			continue
		}
		if tt.err {
			continue
		}
		if !got.Time.Equal(tt.want.Time) || got.Stream != tt.want.Stream || got.Partial != tt.want.Partial || !bytes.Equal(got.Message, tt.want.Message) {
			t.Errorf("parseCRILine(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func FuzzParseCRILine(f *testing.F) {
	b, err := os.ReadFile("testdata/cri-containerd.log")
	if err != nil {
		f.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f.Add([]byte(l))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := parseCRILine(b)
		if err != nil {
			return
		}
		if l.Stream != Stdout && l.Stream != Stderr {
			t.Fatalf("stream %q", l.Stream)
		}
		if len(l.Message) > len(b) {
			t.Fatal("message longer than the line")
		}
	})
}

// logFile makes the kubelet's layout under root and returns the log path.
func logFile(t *testing.T, root, ns, pod, container string, restart int) string {
	t.Helper()
	dir := filepath.Join(root, fmt.Sprintf("%s_%s_%s", ns, pod, "0f5eb28f-6722-4cf5-ab0f-b62748c018d4"), container)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, fmt.Sprintf("%d.log", restart))
}

func appendTo(t *testing.T, path string, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// cri formats messages as CRI lines, splitting each into parts of at most
// split bytes (0: no split), as the runtime does for long lines.
func cri(stream string, split int, msgs ...string) string {
	var b strings.Builder
	ts := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	for i, m := range msgs {
		stamp := ts.Add(time.Duration(i) * time.Millisecond).Format(time.RFC3339Nano)
		for split > 0 && len(m) > split {
			fmt.Fprintf(&b, "%s %s P %s\n", stamp, stream, m[:split])
			m = m[split:]
		}
		fmt.Fprintf(&b, "%s %s F %s\n", stamp, stream, m)
	}
	return b.String()
}

var memPatterns = []Pattern{
	{Name: "java_oom", Regexp: `OutOfMemoryError`},
	{Name: "enomem", Regexp: `(?i)cannot allocate memory`},
}

type collector struct{ matches []Match }

func (c *collector) on(m Match) { c.matches = append(c.matches, m) }

func newTailer(t *testing.T, opts Options) (*Tailer, *collector) {
	t.Helper()
	c := &collector{}
	if opts.OnMatch == nil {
		opts.OnMatch = c.on
	}
	tl, err := NewTailer(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tl.Close() })
	return tl, c
}

func poll(t *testing.T, tl *Tailer, n int) {
	t.Helper()
	for range n {
		if err := tl.Poll(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPatternsAndPartialLines(t *testing.T) {
	root := t.TempDir()
	app := logFile(t, root, "shop", "cart-1", "app", 0)
	side := logFile(t, root, "shop", "cart-1", "proxy", 0)
	// The Java error is split by the runtime in the middle of the pattern:
	// only the joined message matches.
	appendTo(t, app, cri("stderr", 10, `Exception in thread "main" java.lang.OutOfMemoryError: Java heap space`))
	appendTo(t, app, cri("stdout", 0, "ok", "still ok"))
	appendTo(t, side, cri("stderr", 0, "write: Cannot allocate memory", "fatal error: runtime: cannot allocate memory"))
	tl, c := newTailer(t, Options{Root: root, Patterns: memPatterns})
	poll(t, tl, 1)

	got := tl.Counts()
	want := []ContainerCounts{
		{Container: Container{"shop", "cart-1", "0f5eb28f-6722-4cf5-ab0f-b62748c018d4", "app"}, Lines: 3, Matches: map[string]uint64{"java_oom": 1, "enomem": 0}},
		{Container: Container{"shop", "cart-1", "0f5eb28f-6722-4cf5-ab0f-b62748c018d4", "proxy"}, Lines: 2, Matches: map[string]uint64{"java_oom": 0, "enomem": 2}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Counts() =\n%+v\nwant\n%+v", got, want)
	}
	// Files are read in path order: app before proxy.
	if len(c.matches) != 3 || c.matches[0].Message != `Exception in thread "main" java.lang.OutOfMemoryError: Java heap space` || c.matches[0].Stream != Stderr {
		t.Errorf("matches %+v", c.matches)
	}
}

func TestIncompleteLineWaitsForItsEnd(t *testing.T) {
	root := t.TempDir()
	p := logFile(t, root, "ns", "pod", "c", 0)
	line := cri("stdout", 0, "java.lang.OutOfMemoryError")
	appendTo(t, p, line[:20])
	tl, c := newTailer(t, Options{Root: root, Patterns: memPatterns})
	poll(t, tl, 1)
	if n := tl.Stats().Lines; n != 0 {
		t.Fatalf("a line without its newline was consumed (%d lines)", n)
	}
	appendTo(t, p, line[20:])
	poll(t, tl, 2)
	if n := tl.Stats().Lines; n != 1 || len(c.matches) != 1 {
		t.Errorf("lines %d, matches %d; want 1 and 1", n, len(c.matches))
	}
}

// TestRotationByRename follows the kubelet's rotation: the file is renamed,
// the runtime still writes a line to it, then a new file appears.
func TestRotationByRename(t *testing.T) {
	root := t.TempDir()
	p := logFile(t, root, "ns", "pod", "c", 0)
	appendTo(t, p, cri("stdout", 0, "m1 OutOfMemoryError", "m2 OutOfMemoryError"))
	tl, c := newTailer(t, Options{Root: root, Patterns: memPatterns})
	poll(t, tl, 1)
	rotated := p + ".20261125-200000"
	if err := os.Rename(p, rotated); err != nil {
		t.Fatal(err)
	}
	appendTo(t, rotated, cri("stdout", 0, "m3 OutOfMemoryError")) // before the runtime reopens
	poll(t, tl, 1)
	appendTo(t, p, cri("stdout", 0, "m4 OutOfMemoryError", "m5 OutOfMemoryError"))
	poll(t, tl, 3)
	var got []string
	for _, m := range c.matches {
		got = append(got, strings.Fields(m.Message)[0])
	}
	if want := []string{"m1", "m2", "m3", "m4", "m5"}; !reflect.DeepEqual(sorted(got), want) {
		t.Errorf("messages %v, want each of %v once", got, want)
	}
	if s := tl.Stats(); s.Files != 1 || s.Rotations != 1 {
		t.Errorf("stats %+v: want the rotated file closed (1 file open, 1 rotation)", s)
	}
}

func TestCopyTruncate(t *testing.T) {
	root := t.TempDir()
	p := logFile(t, root, "ns", "pod", "c", 0)
	appendTo(t, p, cri("stdout", 0, "a OutOfMemoryError", "b OutOfMemoryError", "c OutOfMemoryError"))
	tl, c := newTailer(t, Options{Root: root, Patterns: memPatterns})
	poll(t, tl, 1)
	if err := os.Truncate(p, 0); err != nil {
		t.Fatal(err)
	}
	appendTo(t, p, cri("stdout", 0, "d OutOfMemoryError"))
	poll(t, tl, 1)
	if len(c.matches) != 4 || c.matches[3].Message != "d OutOfMemoryError" {
		t.Errorf("matches %+v", c.matches)
	}
	if s := tl.Stats(); s.Truncations != 1 {
		t.Errorf("truncations %d, want 1", s.Truncations)
	}
}

// TestRestartNeitherLosesNorRepeats stops the tailer in the middle of a
// partial message, writes and rotates while it is down, and checks that
// the two runs together see every message exactly once.
func TestRestartNeitherLosesNorRepeats(t *testing.T) {
	root := t.TempDir()
	stateFile := filepath.Join(t.TempDir(), "podlogs.json")
	p := logFile(t, root, "ns", "pod", "c", 0)
	all := &collector{}
	opts := Options{Root: root, StateFile: stateFile, Patterns: []Pattern{{Name: "msg", Regexp: `^msg-\d+`}}, OnMatch: all.on}

	appendTo(t, p, cri("stdout", 0, "msg-1", "msg-2"))
	appendTo(t, p, "2026-11-25T20:00:01Z stdout P msg-3 first half, ")
	appendTo(t, p, "\n")
	tl1, err := NewTailer(opts)
	if err != nil {
		t.Fatal(err)
	}
	poll(t, tl1, 1)
	tl1.Close()
	if n := len(all.matches); n != 2 {
		t.Fatalf("first run matched %d, want 2", n)
	}

	// While vigil is down: the partial message completes, the file rotates,
	// and the new file gets more lines.
	appendTo(t, p, "2026-11-25T20:00:01Z stdout F second half\n")
	appendTo(t, p, cri("stdout", 0, "msg-4"))
	if err := os.Rename(p, p+".20261125-200100"); err != nil {
		t.Fatal(err)
	}
	appendTo(t, p, cri("stdout", 0, "msg-5", "msg-6"))

	tl2, err := NewTailer(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer tl2.Close()
	poll(t, tl2, 3)
	var got []string
	for _, m := range all.matches {
		got = append(got, m.Message)
	}
	want := []string{"msg-1", "msg-2", "msg-3 first half, second half", "msg-4", "msg-5", "msg-6"}
	if !reflect.DeepEqual(sorted(got), want) {
		t.Errorf("messages over two runs:\n%q\nwant each once:\n%q", sorted(got), want)
	}
	// Counters survive the restart through the state file.
	if c := tl2.Counts(); len(c) != 1 || c[0].Lines != 6 || c[0].Matches["msg"] != 6 {
		t.Errorf("counts after restart %+v, want 6 lines and 6 matches", c)
	}
}

func TestStartAtEnd(t *testing.T) {
	root := t.TempDir()
	old := logFile(t, root, "ns", "pod", "c", 0)
	appendTo(t, old, cri("stdout", 0, "old OutOfMemoryError"))
	tl, c := newTailer(t, Options{Root: root, Patterns: memPatterns, StartAtEnd: true})
	poll(t, tl, 1)
	appendTo(t, old, cri("stdout", 0, "new OutOfMemoryError"))
	// A container that starts later is read from its beginning.
	appendTo(t, logFile(t, root, "ns", "pod2", "c", 0), cri("stdout", 0, "fresh OutOfMemoryError"))
	poll(t, tl, 1)
	var got []string
	for _, m := range c.matches {
		got = append(got, m.Message)
	}
	if want := []string{"fresh OutOfMemoryError", "new OutOfMemoryError"}; !reflect.DeepEqual(sorted(got), want) {
		t.Errorf("messages %q, want %q", got, want)
	}
}

func TestLayoutAndLimits(t *testing.T) {
	root := t.TempDir()
	// Not the kubelet's layout: ignored.
	if err := os.MkdirAll(filepath.Join(root, "not-a-pod", "c"), 0o755); err != nil {
		t.Fatal(err)
	}
	appendTo(t, filepath.Join(root, "not-a-pod", "c", "0.log"), cri("stdout", 0, "x"))
	p := logFile(t, root, "ns", "pod", "c", 0)
	long := strings.Repeat("y", 100)
	appendTo(t, p, cri("stdout", 30, long)+"junk line\n")
	tl, _ := newTailer(t, Options{Root: root, MaxMessageBytes: 64})
	poll(t, tl, 1)
	s := tl.Stats()
	if s.Files != 1 || s.Lines != 1 || s.Oversized != 1 || s.Malformed != 1 {
		t.Errorf("stats %+v: want 1 file, 1 line cut to size, 1 malformed", s)
	}
	if _, err := NewTailer(Options{Patterns: []Pattern{{Name: "bad", Regexp: "("}}}); err == nil {
		t.Error("an invalid pattern was accepted")
	}
	if _, err := NewTailer(Options{Patterns: []Pattern{{Name: "a", Regexp: "x"}, {Name: "a", Regexp: "y"}}}); err == nil {
		t.Error("duplicate pattern names were accepted")
	}
}

func TestRunStops(t *testing.T) {
	root := t.TempDir()
	p := logFile(t, root, "ns", "pod", "c", 0)
	appendTo(t, p, cri("stdout", 0, "OutOfMemoryError"))
	got := make(chan Match, 1)
	tl, err := NewTailer(Options{Root: root, Patterns: memPatterns, PollInterval: 10 * time.Millisecond, OnMatch: func(m Match) { got <- m }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tl.Run(ctx) }()
	select {
	case <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("no match from Run")
	}
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

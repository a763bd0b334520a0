package loader

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/rules"
)

func rule(name string) string {
	return "rules:\n- name: " + name + "\n  condition: usage_ratio > 0.9\n"
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func names(set *rules.RuleSet) []string {
	var out []string
	for _, r := range set.Rules {
		out = append(out, r.Name)
	}
	sort.Strings(out)
	return out
}

func TestLoadDir(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.yaml"), rule("a"))
	write(t, filepath.Join(dir, "b.yml"), rule("b"))
	write(t, filepath.Join(dir, "a_test.yaml"), "not: a rule file")
	write(t, filepath.Join(dir, ".hidden.yaml"), "broken: [")
	write(t, filepath.Join(dir, "notes.txt"), "ignored")
	other := t.TempDir()
	write(t, filepath.Join(other, "c.yaml"), rule("c"))
	if err := os.Symlink(filepath.Join(other, "c.yaml"), filepath.Join(dir, "c.yaml")); err != nil {
		t.Fatal(err)
	}
	set, err := LoadDir(dir, rules.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(set), []string{"a", "b", "c"}; !reflect.DeepEqual(got, want) {
		t.Errorf("rules %v, want %v", got, want)
	}

	write(t, filepath.Join(dir, "bad.yaml"), "rules:\n- name: d\n  condition: nope > 1\n")
	_, err = LoadDir(dir, rules.LoadOptions{})
	if want := filepath.Join(dir, "bad.yaml") + ":3:14: rule \"d\": condition:"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v, want it to contain %q", err, want)
	}
	if _, err := LoadDir(filepath.Join(dir, "missing"), rules.LoadOptions{}); err == nil {
		t.Error("missing dir: no error")
	}
}

// recorder collects watcher callbacks.
type recorder struct {
	mu     sync.Mutex
	events []string
	ch     chan struct{}
}

func (r *recorder) onLoad(set *rules.RuleSet, err error) {
	r.mu.Lock()
	if err != nil {
		r.events = append(r.events, "error: "+err.Error())
	} else {
		r.events = append(r.events, "ok: "+strings.Join(names(set), ","))
	}
	r.mu.Unlock()
	r.ch <- struct{}{}
}

func (r *recorder) next(t *testing.T) string {
	t.Helper()
	select {
	case <-r.ch:
	case <-time.After(10 * time.Second):
		t.Fatal("no reload callback within 10s")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.events[len(r.events)-1]
}

func startWatcher(t *testing.T, dir string) (*Watcher, *recorder) {
	rec := &recorder{ch: make(chan struct{}, 16)}
	w := NewWatcher(dir, rules.LoadOptions{}, rec.onLoad, WatcherOptions{Debounce: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	time.Sleep(50 * time.Millisecond) // let Run add its watch
	return w, rec
}

func TestWatcherReloadsAndRejects(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.yaml"), rule("a"))
	w, rec := startWatcher(t, dir)

	write(t, filepath.Join(dir, "b.yaml"), rule("b"))
	if got := rec.next(t); got != "ok: a,b" {
		t.Errorf("after adding b.yaml: %q", got)
	}
	write(t, filepath.Join(dir, "b.yaml"), "rules:\n- name: b\n  condition: usage_ratio >\n")
	if got := rec.next(t); !strings.HasPrefix(got, "error: "+filepath.Join(dir, "b.yaml")+":3:") {
		t.Errorf("after breaking b.yaml: %q", got)
	}
	write(t, filepath.Join(dir, "b.yaml"), rule("b2"))
	if got := rec.next(t); got != "ok: a,b2" {
		t.Errorf("after fixing b.yaml: %q", got)
	}
	w.Reload()
	if got := rec.next(t); got != "ok: a,b2" {
		t.Errorf("after Reload: %q", got)
	}
}

// TestWatcherConfigMapSwap reproduces how the kubelet updates a ConfigMap
// volume: files are symlinks through ..data, which is replaced by renaming
// a new symlink over it.
func TestWatcherConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	mkVersion := func(version, content string) {
		vdir := filepath.Join(dir, version)
		if err := os.Mkdir(vdir, 0o755); err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(vdir, "rules.yaml"), content)
	}
	mkVersion("..2026_11_25_1", rule("v1"))
	if err := os.Symlink("..2026_11_25_1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/rules.yaml", filepath.Join(dir, "rules.yaml")); err != nil {
		t.Fatal(err)
	}
	set, err := LoadDir(dir, rules.LoadOptions{})
	if err != nil || !reflect.DeepEqual(names(set), []string{"v1"}) {
		t.Fatalf("initial load: %v %v", set, err)
	}
	_, rec := startWatcher(t, dir)

	mkVersion("..2026_11_25_2", rule("v2"))
	if err := os.Symlink("..2026_11_25_2", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "..2026_11_25_1")); err != nil {
		t.Fatal(err)
	}
	if got := rec.next(t); got != "ok: v2" {
		t.Errorf("after the ..data swap: %q", got)
	}
}

// Package loader reads vigil rule files from a directory and watches it for
// changes: the I/O half of rule loading (package rules itself is pure).
//
// It understands Kubernetes ConfigMap volumes, where the files are symlinks
// through a "..data" symlink that the kubelet swaps atomically on update.
package loader

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/vigil-agent/vigil/rules"
)

// MaxFileSize bounds one rule file.
const MaxFileSize = 1 << 20

// IsRuleFile reports whether a directory entry name is a rule file: *.yaml
// or *.yml, not hidden (ConfigMap internals start with ".."), not a rule
// test (*_test.yaml).
func IsRuleFile(name string) bool {
	if strings.HasPrefix(name, ".") {
		return false
	}
	ext := filepath.Ext(name)
	if ext != ".yaml" && ext != ".yml" {
		return false
	}
	return !strings.HasSuffix(strings.TrimSuffix(name, ext), "_test")
}

// ReadDir returns the rule files of dir (name -> content), following
// symlinks.
func ReadDir(dir string) (map[string][]byte, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("rules dir %s: %w", dir, err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		if !IsRuleFile(e.Name()) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		st, err := os.Stat(p) // follows symlinks
		if err != nil {
			return nil, fmt.Errorf("rules file %s: %w", p, err)
		}
		if st.IsDir() {
			continue
		}
		if st.Size() > MaxFileSize {
			return nil, fmt.Errorf("rules file %s: %d bytes is over the %d limit", p, st.Size(), MaxFileSize)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("rules file %s: %w", p, err)
		}
		files[p] = b
	}
	return files, nil
}

// LoadDir loads every rule file of dir. Errors name each file by its path.
func LoadDir(dir string, opts rules.LoadOptions) (*rules.RuleSet, error) {
	files, err := ReadDir(dir)
	if err != nil {
		return nil, err
	}
	set, err := rules.Load(files, opts)
	if err != nil {
		return nil, err
	}
	return set, nil
}

// Watcher reloads a rules directory when it changes (debounced) or when
// Reload is called (SIGHUP), and hands each new set, or the error that
// rejected it, to its callback. The caller keeps the last good set running
// on error.
type Watcher struct {
	dir      string
	opts     rules.LoadOptions
	onLoad   func(*rules.RuleSet, error)
	log      *slog.Logger
	debounce time.Duration

	reload chan struct{}
	mu     sync.Mutex
	last   [32]byte // digest of the last content handed out
	loaded bool
}

// WatcherOptions configure a Watcher.
type WatcherOptions struct {
	// Debounce waits for changes to settle (default 250ms).
	Debounce time.Duration
	Logger   *slog.Logger
}

// NewWatcher returns a watcher of dir; call Run to start it.
func NewWatcher(dir string, opts rules.LoadOptions, onLoad func(*rules.RuleSet, error), wopts WatcherOptions) *Watcher {
	if wopts.Debounce <= 0 {
		wopts.Debounce = 250 * time.Millisecond
	}
	if wopts.Logger == nil {
		wopts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Watcher{dir: dir, opts: opts, onLoad: onLoad, log: wopts.Logger, debounce: wopts.Debounce,
		reload: make(chan struct{}, 1)}
}

// Reload asks for a reload now (e.g. on SIGHUP). It does not block; the
// reload happens on Run's goroutine, even if the content did not change.
func (w *Watcher) Reload() {
	select {
	case w.reload <- struct{}{}:
	default:
	}
}

// Run watches until ctx is done. It does not load at start: the caller
// loads the first set with LoadDir so that startup can fail on a bad set.
func (w *Watcher) Run(ctx context.Context) error {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch rules dir %s: %w", w.dir, err)
	}
	defer fw.Close()
	if err := fw.Add(w.dir); err != nil {
		return fmt.Errorf("watch rules dir %s: %w", w.dir, err)
	}
	if files, err := ReadDir(w.dir); err == nil {
		w.mu.Lock()
		w.last, w.loaded = digest(files), true
		w.mu.Unlock()
	}
	var timer *time.Timer
	var fire <-chan time.Time
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fw.Events:
			if !ok {
				return nil
			}
			if !relevant(ev) {
				continue
			}
			if timer == nil {
				timer = time.NewTimer(w.debounce)
			} else {
				timer.Reset(w.debounce)
			}
			fire = timer.C
		case err, ok := <-fw.Errors:
			if !ok {
				return nil
			}
			w.log.Warn("rules watcher error", "dir", w.dir, "err", err)
		case <-fire:
			fire = nil
			w.load(false)
		case <-w.reload:
			w.load(true)
		}
	}
}

// relevant filters events: rule files and the ConfigMap "..data" swap.
func relevant(ev fsnotify.Event) bool {
	name := filepath.Base(ev.Name)
	return name == "..data" || IsRuleFile(name)
}

func (w *Watcher) load(force bool) {
	files, err := ReadDir(w.dir)
	if err != nil {
		w.log.Error("rules reload failed", "dir", w.dir, "err", err)
		w.onLoad(nil, err)
		return
	}
	d := digest(files)
	w.mu.Lock()
	same := w.loaded && d == w.last
	w.mu.Unlock()
	if same && !force {
		return
	}
	// Remember what was tried, good or bad: the same bad content is not
	// reported twice, and fixing it reloads.
	w.mu.Lock()
	w.last, w.loaded = d, true
	w.mu.Unlock()
	set, err := rules.Load(files, w.opts)
	if err != nil {
		w.log.Error("rules reload rejected; the last good rule set keeps running", "dir", w.dir, "err", err)
		w.onLoad(nil, err)
		return
	}
	w.log.Info("rules reloaded", "dir", w.dir, "rules", set.Len(), "files", len(set.Files))
	w.onLoad(set, nil)
}

func digest(files map[string][]byte) [32]byte {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var b bytes.Buffer
	for _, n := range names {
		fmt.Fprintf(&b, "%s\x00%d\x00", n, len(files[n]))
		b.Write(files[n])
	}
	return sha256.Sum256(b.Bytes())
}

package podlogs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultRoot is where the kubelet keeps pod logs.
const DefaultRoot = "/var/log/pods"

// Pattern is a named regular expression counted per container.
type Pattern struct {
	Name   string `yaml:"name" json:"name"`
	Regexp string `yaml:"regexp" json:"regexp"`
}

// Container identifies a container's logs.
type Container struct {
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	PodUID    string `json:"pod_uid"`
	Name      string `json:"container"`
}

func (c Container) key() string { return c.Namespace + "/" + c.Pod + "/" + c.PodUID + "/" + c.Name }

// Match is one complete log message that matched a pattern.
type Match struct {
	Container Container `json:"container"`
	Pattern   string    `json:"pattern"`
	Time      time.Time `json:"time"`
	Stream    Stream    `json:"stream"`
	Message   string    `json:"message"`
}

// ContainerCounts are the cumulative counters of one container (they
// survive restarts through the state file).
type ContainerCounts struct {
	Container
	// Lines counts complete messages (partial lines joined).
	Lines uint64 `json:"lines"`
	// Matches counts messages per pattern name.
	Matches map[string]uint64 `json:"matches"`
}

// Options configure a Tailer.
type Options struct {
	// Root is the pod log directory (default DefaultRoot).
	Root string
	// StateFile persists offsets and counters; empty: not persisted.
	StateFile string
	Patterns  []Pattern
	// OnMatch, when set, receives every matching message (called from
	// Poll; keep it fast, e.g. a non-blocking forward).
	OnMatch func(Match)
	// StartAtEnd skips the existing content of files found at the first
	// scan that the state file does not know (a first start on a busy
	// node). Files appearing later are always read from their start.
	StartAtEnd bool
	// PollInterval for Run (default 1s).
	PollInterval time.Duration
	// MaxMessageBytes caps a joined message (default 64 KiB); the rest is
	// dropped and counted.
	MaxMessageBytes int
	Logger          *slog.Logger
}

// Stats are the tailer's counters since start.
type Stats struct {
	Files       int    `json:"files"`
	Lines       uint64 `json:"lines"`
	Malformed   uint64 `json:"malformed"`
	Rotations   uint64 `json:"rotations"`
	Truncations uint64 `json:"truncations"`
	// Oversized counts messages cut at MaxMessageBytes.
	Oversized uint64 `json:"oversized"`
}

type pending struct {
	msg   []byte
	start int64 // offset of the first partial line
	time  time.Time
	cut   bool
}

type tracked struct {
	path    string
	c       Container
	f       *os.File
	inode   uint64
	off     int64 // next byte to read: just after the last complete line
	partial map[Stream]*pending
	gone    bool // rotated away or deleted: drain, then close
	idle    int  // polls without new data since gone
}

// resume is where a restart must start reading: before any partial message
// still being joined.
func (t *tracked) resume() int64 {
	r := t.off
	for _, p := range t.partial {
		if p.start < r {
			r = p.start
		}
	}
	return r
}

// Tailer follows the pod log files.
type Tailer struct {
	opts     Options
	log      *slog.Logger
	patterns []compiled

	mu      sync.Mutex
	files   map[uint64]*tracked // by inode
	counts  map[string]*ContainerCounts
	saved   map[uint64]fileState // from the state file, until matched
	stats   Stats
	scanned bool
	buf     []byte
}

type compiled struct {
	name string
	re   *regexp.Regexp
}

// fileState is one file's persisted position.
type fileState struct {
	Path   string `json:"path"`
	Inode  uint64 `json:"inode"`
	Offset int64  `json:"offset"`
}

type state struct {
	Files  []fileState       `json:"files"`
	Counts []ContainerCounts `json:"counts"`
}

// NewTailer compiles the patterns and loads the state file.
func NewTailer(opts Options) (*Tailer, error) {
	if opts.Root == "" {
		opts.Root = DefaultRoot
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = 64 << 10
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	t := &Tailer{opts: opts, log: opts.Logger.With("root", opts.Root), files: map[uint64]*tracked{},
		counts: map[string]*ContainerCounts{}, saved: map[uint64]fileState{}, buf: make([]byte, 256<<10)}
	seen := map[string]bool{}
	for _, p := range opts.Patterns {
		if p.Name == "" || seen[p.Name] {
			return nil, fmt.Errorf("podlogs: pattern %q: names must be set and unique", p.Name)
		}
		seen[p.Name] = true
		re, err := regexp.Compile(p.Regexp)
		if err != nil {
			return nil, fmt.Errorf("podlogs: pattern %s: %w", p.Name, err)
		}
		t.patterns = append(t.patterns, compiled{p.Name, re})
	}
	if opts.StateFile != "" {
		b, err := os.ReadFile(opts.StateFile)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("podlogs: state %s: %w", opts.StateFile, err)
		default:
			var s state
			if err := json.Unmarshal(b, &s); err != nil {
				// A corrupt state file must not stop log collection.
				t.log.Warn("podlogs: ignoring unreadable state file", "path", opts.StateFile, "err", err)
			}
			for _, f := range s.Files {
				t.saved[f.Inode] = f
			}
			for i := range s.Counts {
				c := s.Counts[i]
				if c.Matches == nil {
					c.Matches = map[string]uint64{}
				}
				t.counts[c.key()] = &c
			}
		}
	}
	return t, nil
}

// Run polls until ctx is done, then saves the state a last time.
func (t *Tailer) Run(ctx context.Context) error {
	tick := time.NewTicker(t.opts.PollInterval)
	defer tick.Stop()
	defer t.Close()
	for {
		if err := t.Poll(ctx); err != nil {
			t.log.Warn("podlogs: poll", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// Close closes the open files (the state was saved by the last Poll).
func (t *Tailer) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for ino, f := range t.files {
		f.f.Close()
		delete(t.files, ino)
	}
	return nil
}

// Poll does one pass: discovers files, reads what was appended, follows
// rotation and truncation, and saves the state.
func (t *Tailer) Poll(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	current, err := t.discover()
	if err != nil {
		return err
	}
	// In path order, so that matches come out in a stable order.
	order := make([]*tracked, 0, len(t.files))
	for _, f := range t.files {
		order = append(order, f)
	}
	sort.Slice(order, func(i, j int) bool { return order[i].path < order[j].path })
	for _, f := range order {
		ino := f.inode
		if ctx.Err() != nil {
			break
		}
		if _, ok := current[ino]; !ok && !f.gone {
			// Renamed away (kubelet rotation) or deleted: keep reading the
			// old file until the runtime has switched to the new one.
			f.gone = true
			t.stats.Rotations++
		}
		n := t.read(f)
		if n > 0 {
			f.idle = 0
		} else if f.gone {
			f.idle++
		}
		// The runtime writes to the renamed file until the kubelet has it
		// reopen the log: close only after two idle polls.
		if f.gone && f.idle >= 2 {
			t.finish(f)
			f.f.Close()
			delete(t.files, ino)
		}
	}
	t.stats.Files = len(t.files)
	t.prune()
	return t.save()
}

// discover opens the *.log files not yet followed and returns the inodes
// of all current ones.
func (t *Tailer) discover() (map[uint64]bool, error) {
	paths, err := filepath.Glob(filepath.Join(t.opts.Root, "*", "*", "*.log"))
	if err != nil {
		return nil, fmt.Errorf("podlogs: %w", err)
	}
	first := !t.scanned
	t.scanned = true
	current := map[uint64]bool{}
	for _, p := range paths {
		c, ok := containerOf(p)
		if !ok {
			continue
		}
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		ino := inodeOf(fi)
		current[ino] = true
		if f, ok := t.files[ino]; ok {
			f.path = p
			continue
		}
		off := int64(0)
		if s, ok := t.saved[ino]; ok {
			off = s.Offset
			delete(t.saved, ino)
		} else if first && t.opts.StartAtEnd {
			off = fi.Size()
		}
		t.open(p, c, ino, off, false)
	}
	if first {
		// Files the state knows that were rotated while vigil was down:
		// finish them under their new name.
		for ino, s := range t.saved {
			if rp := findInode(filepath.Dir(s.Path), ino); rp != "" {
				if c, ok := containerOf(s.Path); ok {
					t.open(rp, c, ino, s.Offset, true)
					t.stats.Rotations++
				}
			}
		}
		t.saved = map[uint64]fileState{}
	}
	return current, nil
}

func (t *Tailer) open(path string, c Container, ino uint64, off int64, gone bool) {
	f, err := os.Open(path)
	if err != nil {
		t.log.Debug("podlogs: open", "path", path, "err", err)
		return
	}
	t.files[ino] = &tracked{path: path, c: c, f: f, inode: ino, off: off, partial: map[Stream]*pending{}, gone: gone}
	// Counters start at 0 when the file is first followed, so that the
	// first matches show as an increase, not as the first sample.
	t.countsOf(c)
}

func (t *Tailer) countsOf(c Container) *ContainerCounts {
	cc := t.counts[c.key()]
	if cc == nil {
		cc = &ContainerCounts{Container: c, Matches: map[string]uint64{}}
		for _, p := range t.patterns {
			cc.Matches[p.name] = 0
		}
		t.counts[c.key()] = cc
	}
	return cc
}

// findInode returns the file in dir with inode ino (not compressed ones).
func findInode(dir string, ino uint64) string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".gz") {
			continue
		}
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() && inodeOf(fi) == ino {
			return filepath.Join(dir, e.Name())
		}
	}
	return ""
}

// read consumes the complete lines appended to f and returns the number of
// bytes consumed.
func (t *Tailer) read(f *tracked) int64 {
	if fi, err := f.f.Stat(); err == nil && fi.Size() < f.off {
		// copytruncate: the file was truncated under us; start over.
		t.stats.Truncations++
		f.off = 0
		f.partial = map[Stream]*pending{}
	}
	var total int64
	for {
		n, err := f.f.ReadAt(t.buf, f.off)
		chunk := t.buf[:n]
		last := bytes.LastIndexByte(chunk, '\n')
		if last < 0 {
			if n == len(t.buf) {
				// A line longer than the buffer: consume it in pieces.
				t.line(f, chunk, f.off)
				f.off += int64(n)
				total += int64(n)
				continue
			}
			return total
		}
		start := f.off
		for _, line := range bytes.Split(chunk[:last], []byte{'\n'}) {
			t.line(f, line, start)
			start += int64(len(line)) + 1
		}
		f.off += int64(last) + 1
		total += int64(last) + 1
		if err != nil || n < len(t.buf) {
			if err != nil && !errors.Is(err, io.EOF) {
				t.log.Debug("podlogs: read", "path", f.path, "err", err)
			}
			return total
		}
	}
}

// line handles one line that starts at offset start.
func (t *Tailer) line(f *tracked, b []byte, start int64) {
	l, err := parseCRILine(b)
	if err != nil {
		if len(bytes.TrimSpace(b)) > 0 {
			t.stats.Malformed++
		}
		return
	}
	p := f.partial[l.Stream]
	if l.Partial {
		if p == nil {
			p = &pending{start: start, time: l.Time}
			f.partial[l.Stream] = p
		}
		p.append(l.Message, t.opts.MaxMessageBytes)
		return
	}
	msg := l.Message
	when := l.Time
	if p != nil {
		p.append(msg, t.opts.MaxMessageBytes)
		msg, when = p.msg, p.time
		if p.cut {
			t.stats.Oversized++
		}
		delete(f.partial, l.Stream)
	} else if len(msg) > t.opts.MaxMessageBytes {
		msg = msg[:t.opts.MaxMessageBytes]
		t.stats.Oversized++
	}
	t.emit(f.c, l.Stream, when, msg)
}

func (p *pending) append(b []byte, limit int) {
	room := limit - len(p.msg)
	if len(b) > room {
		b = b[:max(room, 0)]
		p.cut = true
	}
	p.msg = append(p.msg, b...)
}

// finish emits what is left partial in a file that is going away.
func (t *Tailer) finish(f *tracked) {
	for s, p := range f.partial {
		t.emit(f.c, s, p.time, p.msg)
	}
	f.partial = map[Stream]*pending{}
}

func (t *Tailer) emit(c Container, s Stream, when time.Time, msg []byte) {
	t.stats.Lines++
	cc := t.countsOf(c)
	cc.Lines++
	for _, p := range t.patterns {
		if !p.re.Match(msg) {
			continue
		}
		cc.Matches[p.name]++
		if t.opts.OnMatch != nil {
			t.opts.OnMatch(Match{Container: c, Pattern: p.name, Time: when, Stream: s, Message: string(msg)})
		}
	}
}

// prune forgets the counters of containers whose logs are all gone.
func (t *Tailer) prune() {
	live := map[string]bool{}
	for _, f := range t.files {
		live[f.c.key()] = true
	}
	for k := range t.counts {
		if !live[k] {
			delete(t.counts, k)
		}
	}
}

func (t *Tailer) save() error {
	if t.opts.StateFile == "" {
		return nil
	}
	var s state
	for _, f := range t.files {
		s.Files = append(s.Files, fileState{Path: f.path, Inode: f.inode, Offset: f.resume()})
	}
	sort.Slice(s.Files, func(i, j int) bool { return s.Files[i].Path < s.Files[j].Path })
	s.Counts = t.countsLocked()
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("podlogs: state: %w", err)
	}
	return writeAtomic(t.opts.StateFile, b)
}

func writeAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("podlogs: state %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("podlogs: state %s: %w", path, err)
	}
	return nil
}

// Counts returns the per-container counters, sorted.
func (t *Tailer) Counts() []ContainerCounts {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.countsLocked()
}

func (t *Tailer) countsLocked() []ContainerCounts {
	out := make([]ContainerCounts, 0, len(t.counts))
	for _, c := range t.counts {
		cc := *c
		cc.Matches = make(map[string]uint64, len(c.Matches))
		for k, v := range c.Matches {
			cc.Matches[k] = v
		}
		out = append(out, cc)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key() < out[j].key() })
	return out
}

// Stats returns a copy of the counters.
func (t *Tailer) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stats
}

// containerOf reads the identity from .../<ns>_<pod>_<uid>/<container>/<n>.log.
// Namespace and pod names are DNS labels/subdomains: they hold no '_'.
func containerOf(path string) (Container, bool) {
	cdir := filepath.Dir(path)
	parts := strings.Split(filepath.Base(filepath.Dir(cdir)), "_")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" {
		return Container{}, false
	}
	return Container{Namespace: parts[0], Pod: parts[1], PodUID: parts[2], Name: filepath.Base(cdir)}, true
}

func inodeOf(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

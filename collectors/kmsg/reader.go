package kmsg

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultPath is the kernel log device.
const DefaultPath = "/dev/kmsg"

// Cursor is where a reader resumes: records with a sequence number up to and
// including Seq were handled in the boot BootID. Sequence numbers restart at
// every boot, so a cursor of another boot is ignored.
type Cursor struct {
	BootID string `json:"boot_id"`
	Seq    uint64 `json:"seq"`
	// LastEventSeq is the Seq of the last event delivered, so that a report
	// re-read after a restart is never delivered twice.
	LastEventSeq uint64 `json:"last_event_seq,omitempty"`
}

// Options configure a Reader.
type Options struct {
	// Handler receives the events completed by each batch of records, in
	// kernel order. The cursor is saved after it returns, so an event is
	// delivered again only if vigil dies inside Handler.
	Handler func([]OOMEvent)
	// Follow keeps reading as the kernel logs more; without it Run returns
	// once it has caught up (end of the buffer or of the file).
	Follow bool
	// CursorFile, when set, persists the cursor (written atomically after
	// each batch) and is loaded at start.
	CursorFile string
	// Cursor is the starting cursor when CursorFile is unset or absent.
	Cursor Cursor
	// StartAtEnd skips what the buffer already holds when there is no
	// cursor for this boot (otherwise old reports are delivered too).
	StartAtEnd bool
	// BootTime converts record timestamps (time since boot) to wall time.
	// Zero: derived from CLOCK_MONOTONIC now.
	BootTime time.Time
	// BootID identifies the boot for the cursor. Empty: read from
	// /proc/sys/kernel/random/boot_id.
	BootID string
	// PollInterval is how often a followed regular file is re-read
	// (default 500ms); /dev/kmsg is waited on with poll(2) instead.
	PollInterval time.Duration
	Logger       *slog.Logger
}

// Stats are the reader's counters since NewReader.
type Stats struct {
	Records uint64 `json:"records"`
	Events  uint64 `json:"events"`
	// Gaps counts jumps in the sequence numbers; MissedRecords the records
	// they skipped (overwritten in the ring buffer before they were read,
	// or logged while vigil was down and since overwritten).
	Gaps          uint64 `json:"gaps"`
	MissedRecords uint64 `json:"missed_records"`
	// Overwritten counts EPIPE reads: the reader fell behind the ring buffer.
	Overwritten uint64 `json:"overwritten"`
	Malformed   uint64 `json:"malformed"`
	// Skipped counts records at or before the cursor (already handled).
	Skipped uint64 `json:"skipped"`
	// IncompleteReports counts OOM reports abandoned without a kill line.
	IncompleteReports uint64 `json:"incomplete_reports"`
}

// Reader reads kernel log records and delivers OOM events.
type Reader struct {
	path string
	opts Options
	log  *slog.Logger

	mu     sync.Mutex
	stats  Stats
	cursor Cursor
	asm    assembler
	// lastSeq is the last record seq seen in this run (valid if haveSeq).
	lastSeq uint64
	haveSeq bool
}

// NewReader returns a reader of path (DefaultPath, or a file of kmsg-format
// records, one per line with " KEY=value" continuation lines).
func NewReader(path string, opts Options) (*Reader, error) {
	if path == "" {
		path = DefaultPath
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 500 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.BootID == "" {
		b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
		if err != nil {
			return nil, fmt.Errorf("kmsg: boot id: %w", err)
		}
		opts.BootID = strings.TrimSpace(string(b))
	}
	if opts.BootTime.IsZero() {
		var ts unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
			return nil, fmt.Errorf("kmsg: clock_gettime: %w", err)
		}
		opts.BootTime = time.Now().Add(-time.Duration(ts.Nano()))
	}
	r := &Reader{path: path, opts: opts, log: opts.Logger.With("path", path)}
	r.asm.bootTime = opts.BootTime
	r.cursor = opts.Cursor
	if opts.CursorFile != "" {
		c, err := LoadCursor(opts.CursorFile)
		switch {
		case err == nil:
			r.cursor = c
		case errors.Is(err, os.ErrNotExist):
		default:
			return nil, err
		}
	}
	if r.cursor.BootID != opts.BootID {
		r.cursor = Cursor{BootID: opts.BootID}
	}
	return r, nil
}

// Stats returns a copy of the counters.
func (r *Reader) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.IncompleteReports = r.asm.incomplete
	return s
}

// Cursor returns the position a restarted reader would resume from.
func (r *Reader) Cursor() Cursor {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cursor
}

// source yields raw records; errCaughtUp means nothing more for now.
type source interface {
	next(ctx context.Context, follow bool) ([]byte, error)
	Close() error
}

var errCaughtUp = errors.New("caught up")

// Run reads until ctx is done (Follow) or the end of the log, delivering
// events to the Handler. It returns nil at the end or on cancellation.
func (r *Reader) Run(ctx context.Context) error {
	src, err := r.open()
	if err != nil {
		return err
	}
	defer src.Close()
	var batch []OOMEvent
	processed := 0
	for {
		rec, err := src.next(ctx, r.opts.Follow)
		if err == nil {
			if ev, ok := r.handle(rec); ok {
				batch = append(batch, ev)
			}
			processed++
			if processed < 1024 {
				continue
			}
		}
		processed = 0
		if ferr := r.flush(batch); ferr != nil {
			r.log.Warn("kmsg: saving cursor", "err", ferr)
		}
		batch = batch[:0]
		switch {
		case err == nil, errors.Is(err, errCaughtUp) && r.opts.Follow:
		case errors.Is(err, errCaughtUp), errors.Is(err, io.EOF), ctx.Err() != nil:
			return nil
		default:
			return err
		}
	}
}

// handle feeds one raw record through dedup, gap accounting and the
// report assembler.
func (r *Reader) handle(raw []byte) (OOMEvent, bool) {
	rec, err := parseRecord(raw)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.stats.Malformed++
		return OOMEvent{}, false
	}
	r.stats.Records++
	if rec.Seq <= r.cursor.Seq && r.cursor.Seq != 0 {
		r.stats.Skipped++
		return OOMEvent{}, false
	}
	prev, have := r.lastSeq, r.haveSeq
	if !have && r.cursor.Seq != 0 {
		prev, have = r.cursor.Seq, true
	}
	if have && rec.Seq > prev+1 {
		r.stats.Gaps++
		r.stats.MissedRecords += rec.Seq - prev - 1
	}
	if r.haveSeq && rec.Seq <= r.lastSeq {
		r.stats.Skipped++
		return OOMEvent{}, false
	}
	r.lastSeq, r.haveSeq = rec.Seq, true
	ev, ok := r.asm.add(rec)
	if ok && ev.Seq <= r.cursor.LastEventSeq {
		r.stats.Skipped++
		return OOMEvent{}, false
	}
	if ok {
		r.stats.Events++
	}
	return ev, ok
}

// flush delivers a batch and advances and saves the cursor. The cursor
// stops before a report in progress, so a restart re-reads it whole.
func (r *Reader) flush(batch []OOMEvent) error {
	if len(batch) > 0 && r.opts.Handler != nil {
		r.opts.Handler(batch)
	}
	r.mu.Lock()
	if !r.haveSeq {
		r.mu.Unlock()
		return nil
	}
	c := r.cursor
	next := r.lastSeq
	if s := r.asm.pendingStart(); s != 0 {
		next = s - 1
	}
	if next > c.Seq {
		c.Seq = next
	}
	if n := len(batch); n > 0 {
		c.LastEventSeq = batch[n-1].Seq
	}
	changed := c != r.cursor
	r.cursor = c
	r.mu.Unlock()
	if changed && r.opts.CursorFile != "" {
		return SaveCursor(r.opts.CursorFile, c)
	}
	return nil
}

func (r *Reader) open() (source, error) {
	fi, err := os.Stat(r.path)
	if err != nil {
		return nil, fmt.Errorf("kmsg: %w", err)
	}
	if fi.Mode()&os.ModeCharDevice != 0 {
		return openDevice(r.path, r.cursor.Seq == 0 && r.opts.StartAtEnd, r)
	}
	f, err := os.Open(r.path)
	if err != nil {
		return nil, fmt.Errorf("kmsg: %w", err)
	}
	fs := &fileSource{f: f, br: bufio.NewReaderSize(f, 64<<10), poll: r.opts.PollInterval}
	if r.cursor.Seq == 0 && r.opts.StartAtEnd {
		if _, err := f.Seek(0, io.SeekEnd); err != nil {
			f.Close()
			return nil, fmt.Errorf("kmsg: seek %s: %w", r.path, err)
		}
		fs.br.Reset(f)
	}
	return fs, nil
}

// deviceSource reads /dev/kmsg: one record per read(2), non-blocking, with
// poll(2) on the device and an eventfd that cancellation writes to.
type deviceSource struct {
	fd, cancelFD int
	buf          []byte
	r            *Reader
	stop         func() bool
	caughtUp     bool
}

func openDevice(path string, atEnd bool, r *Reader) (*deviceSource, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("kmsg: open %s: %w", path, err)
	}
	if atEnd {
		if _, err := unix.Seek(fd, 0, io.SeekEnd); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("kmsg: seek %s: %w", path, err)
		}
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("kmsg: eventfd: %w", err)
	}
	// A record is at most about 1 KiB of text plus its dictionary; a short
	// buffer makes read(2) fail with EINVAL.
	return &deviceSource{fd: fd, cancelFD: efd, buf: make([]byte, 16<<10), r: r}, nil
}

func (d *deviceSource) next(ctx context.Context, follow bool) ([]byte, error) {
	if d.stop == nil {
		d.stop = context.AfterFunc(ctx, func() {
			_, _ = unix.Write(d.cancelFD, []byte{1, 0, 0, 0, 0, 0, 0, 0})
		})
	}
	for {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		n, err := unix.Read(d.fd, d.buf)
		switch {
		case err == nil && n > 0:
			return d.buf[:n], nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EPIPE):
			// Our position was overwritten; the next read returns the
			// oldest record still held, and the seq jump counts the loss.
			d.r.mu.Lock()
			d.r.stats.Overwritten++
			d.r.mu.Unlock()
			continue
		case errors.Is(err, unix.EAGAIN):
			// Report caught-up once so the caller flushes before we block.
			if !follow || !d.caughtUp {
				d.caughtUp = true
				return nil, errCaughtUp
			}
			if err := d.wait(); err != nil {
				return nil, err
			}
			d.caughtUp = false
		case err != nil:
			return nil, fmt.Errorf("kmsg: read: %w", err)
		default:
			return nil, io.EOF
		}
	}
}

// deviceBackstop bounds a wait for new records. The kernel wakes
// /dev/kmsg readers through deferred work (printk's klogd irq_work); where
// that wakeup comes late (seen in a TCG guest: an OOM report read only 20 s
// later, when vigil stopped), a read at least this often bounds the delay.
const deviceBackstop = time.Second

func (d *deviceSource) wait() error {
	fds := []unix.PollFd{{Fd: int32(d.fd), Events: unix.POLLIN}, {Fd: int32(d.cancelFD), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(fds, int(deviceBackstop/time.Millisecond))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("kmsg: poll: %w", err)
		}
		return nil
	}
}

func (d *deviceSource) Close() error {
	if d.stop != nil {
		d.stop()
	}
	unix.Close(d.cancelFD)
	return unix.Close(d.fd)
}

// fileSource reads records from a file, one per line plus continuation
// lines that start with a space.
type fileSource struct {
	f        *os.File
	br       *bufio.Reader
	poll     time.Duration
	partial  []byte // incomplete last line (follow mode)
	caughtUp bool
	rec      []byte // record being assembled
}

func (s *fileSource) next(ctx context.Context, follow bool) ([]byte, error) {
	for {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		line, err := s.br.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			line = append(s.partial, line...)
			s.partial = nil
			if line[0] == ' ' && len(s.rec) > 0 {
				s.rec = append(s.rec, line...)
				continue
			}
			// A new record starts: return the one assembled so far.
			prev := s.rec
			s.rec = append([]byte(nil), line...)
			if len(prev) > 0 {
				return prev, nil
			}
			continue
		}
		s.partial = append(s.partial, line...)
		if err == nil {
			continue
		}
		if !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("kmsg: read %s: %w", s.f.Name(), err)
		}
		if len(s.rec) > 0 {
			rec := s.rec
			s.rec = nil
			return rec, nil
		}
		if !follow {
			if len(bytes.TrimSpace(s.partial)) > 0 {
				rec := s.partial
				s.partial = nil
				return rec, nil
			}
			return nil, errCaughtUp
		}
		if !s.caughtUp {
			s.caughtUp = true
			return nil, errCaughtUp
		}
		t := time.NewTimer(s.poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		s.caughtUp = false
	}
}

func (s *fileSource) Close() error { return s.f.Close() }

// LoadCursor reads a cursor file written by SaveCursor.
func LoadCursor(path string) (Cursor, error) {
	var c Cursor
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("kmsg: cursor %s: %w", path, err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("kmsg: cursor %s: %w", path, err)
	}
	return c, nil
}

// SaveCursor writes c to path atomically (temporary file, fsync, rename).
func SaveCursor(path string, c Cursor) error {
	b, _ := json.Marshal(c)
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("kmsg: cursor %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("kmsg: cursor %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("kmsg: cursor %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("kmsg: cursor %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("kmsg: cursor %s: %w", path, err)
	}
	return nil
}

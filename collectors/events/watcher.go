// Package events owns vigil's event-driven detection: kernel notifications
// that arrive between ticks, so that an off-cycle snapshot of the affected
// cgroup can be taken within milliseconds.
//
// One goroutine (Run) owns an epoll set holding:
//   - cgroup v1 usage thresholds and OOM notifications (cgroup.event_control
//     with an eventfd per registration),
//   - cgroup v2 memory.events change notifications (one inotify instance,
//     IN_MODIFY per file; kernfs notifies when the counters change),
//   - PSI triggers on a pressure file (node-wide /proc/pressure/memory or a
//     v2 cgroup's memory.pressure), which signal with EPOLLPRI.
//
// A cgroup removed while watched never leaks or spins: v1 eventfds are
// signalled on rmdir, a v2 pressure file polls as an error, and kernfs sends
// no inotify event at all, so memory.events watches are also swept every 2 s;
// in each case the watch is dropped once its file is gone, without an event.
//
// Events are delivered on a buffered channel. The loop never blocks on a
// slow consumer: undelivered events are coalesced per (kind, cgroup) and sent
// when there is room, and the losses are counted in Stats.
package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vigil-agent/vigil/collectors"
)

// ErrClosed is returned by Watch* and Run once the watcher has stopped.
var ErrClosed = errors.New("events: watcher closed")

// NodePressureFile is the node-wide memory pressure file WatchPressure uses
// for path "" when no file is given.
const NodePressureFile = "/proc/pressure/memory"

const (
	// eventBuffer is the capacity of the Events channel.
	eventBuffer = 256
	// maxPending bounds the coalesced backlog kept while the channel is
	// full: one entry per (kind, path), so only a node with more distinct
	// busy cgroups than this drops events outright.
	maxPending = 4096
	// psiWindowQuantum is the window granularity the kernel imposes on PSI
	// triggers created without CAP_SYS_RESOURCE.
	psiWindowQuantum = 2 * time.Second
	psiWindowMin     = 500 * time.Millisecond
	psiWindowMax     = 10 * time.Second
)

// Registration describes one active watch, as accepted by the kernel.
type Registration struct {
	Kind string `json:"kind"` // one of the collectors.Event* kinds
	Path string `json:"path"` // cgroup path ("" for node-wide PSI)
	// File is the kernel file the watch is on.
	File string `json:"file"`
	// ThresholdBytes is the usage threshold (EventThreshold).
	ThresholdBytes uint64 `json:"threshold_bytes,omitempty"`
	// Stall and Window are the PSI trigger actually accepted (EventPSI);
	// RequestedWindow differs from Window when the kernel refused the
	// requested one and it was rounded up to a multiple of 2 s.
	Stall           time.Duration `json:"stall,omitempty"`
	Window          time.Duration `json:"window,omitempty"`
	RequestedWindow time.Duration `json:"requested_window,omitempty"`
}

// Stats are the watcher's counters since NewWatcher.
type Stats struct {
	// Events counts delivered-or-queued events by kind.
	Events map[string]uint64 `json:"events"`
	// Coalesced counts events merged into one already waiting for room in
	// the channel (same kind and cgroup); Dropped counts events lost because
	// the backlog was full.
	Coalesced uint64 `json:"coalesced"`
	Dropped   uint64 `json:"dropped"`
	// Registrations is the number of active watches.
	Registrations int `json:"registrations"`
	// Removed counts watches dropped because their cgroup disappeared.
	Removed uint64 `json:"removed"`
	// Errors counts failed reads and kernel error conditions on watches.
	Errors uint64 `json:"errors"`
}

// registration is one watch and the descriptors it owns.
type registration struct {
	Registration
	id  int32 // epoll data; never reused, unlike fd numbers
	dir string
	fd  int // eventfd (v1) or pressure file (PSI); -1 for inotify
	wd  int // inotify watch descriptor; -1 otherwise
}

type pendingKey struct{ kind, path string }

// Watcher delivers kernel memory notifications. Create it with NewWatcher,
// add watches with the Watch* methods (before or while Run runs), and run
// Run in one goroutine; Run releases everything when its context ends.
type Watcher struct {
	logger *slog.Logger
	epfd   int
	wakefd int // eventfd that interrupts epoll_wait on stop
	inofd  int
	events chan collectors.Event

	mu      sync.Mutex
	closed  bool
	running bool
	stop    context.CancelFunc
	done    chan struct{}
	nextID  int32
	byID    map[int32]*registration
	byWD    map[int]*registration
	stats   Stats

	// Owned by the Run loop.
	pending     map[pendingKey]collectors.Event
	pendingFIFO []pendingKey
}

// NewWatcher creates the epoll set, the inotify instance and the stop
// eventfd. It starts nothing: call Run.
func NewWatcher(logger *slog.Logger) (*Watcher, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{
		logger:  logger,
		epfd:    -1,
		wakefd:  -1,
		inofd:   -1,
		events:  make(chan collectors.Event, eventBuffer),
		done:    make(chan struct{}),
		byID:    map[int32]*registration{},
		byWD:    map[int]*registration{},
		pending: map[pendingKey]collectors.Event{},
		stats:   Stats{Events: map[string]uint64{}},
	}
	var err error
	if w.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("events: epoll_create1: %w", err)
	}
	if w.wakefd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		w.release()
		return nil, fmt.Errorf("events: eventfd: %w", err)
	}
	if w.inofd, err = unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK); err != nil {
		w.release()
		return nil, fmt.Errorf("events: inotify_init1: %w", err)
	}
	for _, fd := range []int{w.wakefd, w.inofd} {
		if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(-fd)}); err != nil {
			w.release()
			return nil, fmt.Errorf("events: epoll_ctl: %w", err)
		}
	}
	return w, nil
}

// Events is the channel events are delivered on. It is closed when Run
// returns.
func (w *Watcher) Events() <-chan collectors.Event { return w.events }

// WatchThreshold registers a cgroup v1 usage threshold: an EventThreshold
// arrives each time memory.usage_in_bytes of the cgroup in dir crosses bytes
// (in either direction). path is the cgroup path reported in the events.
func (w *Watcher) WatchThreshold(path, dir string, bytes uint64) error {
	reg := &registration{Registration: Registration{Kind: collectors.EventThreshold, Path: path,
		File: filepath.Join(dir, "memory.usage_in_bytes"), ThresholdBytes: bytes}, dir: dir}
	return w.watchV1(reg, fmt.Sprintf(" %d", bytes))
}

// WatchOOM registers a cgroup v1 OOM notification: an EventOOM arrives when
// the cgroup in dir hits its limit and the OOM killer is invoked (or, with
// oom_kill_disable, when its tasks are put to sleep).
func (w *Watcher) WatchOOM(path, dir string) error {
	reg := &registration{Registration: Registration{Kind: collectors.EventOOM, Path: path,
		File: filepath.Join(dir, "memory.oom_control")}, dir: dir}
	return w.watchV1(reg, "")
}

// watchV1 writes "<eventfd> <control fd><args>" to cgroup.event_control. The
// kernel keeps the eventfd; the control file may be closed once registered.
func (w *Watcher) watchV1(reg *registration, args string) error {
	control, err := os.Open(reg.File)
	if err != nil {
		return fmt.Errorf("events: %s watch on %s: %w", reg.Kind, reg.Path, err)
	}
	defer control.Close()
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return fmt.Errorf("events: eventfd for %s: %w", reg.Path, err)
	}
	ec := filepath.Join(reg.dir, "cgroup.event_control")
	line := fmt.Sprintf("%d %d%s", efd, control.Fd(), args)
	if err := os.WriteFile(ec, []byte(line), 0); err != nil {
		unix.Close(efd)
		return fmt.Errorf("events: register %s on %s: %w", reg.Kind, ec, err)
	}
	reg.fd, reg.wd = efd, -1
	if err := w.add(reg, unix.EPOLLIN); err != nil {
		unix.Close(efd) // closing the eventfd unregisters it in the kernel
		return err
	}
	w.logger.Debug("watching", "kind", reg.Kind, "target", reg.Path, "file", reg.File, "threshold_bytes", reg.ThresholdBytes)
	return nil
}

// WatchMemoryEvents registers for changes of a cgroup v2 memory.events file
// (low, high, max, oom, oom_kill counters): an EventMemoryEvents arrives on
// every change. Watching the same file twice is a no-op.
func (w *Watcher) WatchMemoryEvents(path, dir string) error {
	file := filepath.Join(dir, "memory.events")
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	wd, err := unix.InotifyAddWatch(w.inofd, file, unix.IN_MODIFY)
	if err != nil {
		return fmt.Errorf("events: inotify on %s: %w", file, err)
	}
	if _, ok := w.byWD[wd]; ok {
		return nil
	}
	w.nextID++
	w.byWD[wd] = &registration{Registration: Registration{Kind: collectors.EventMemoryEvents, Path: path, File: file},
		id: w.nextID, dir: dir, fd: -1, wd: wd}
	w.stats.Registrations++
	w.wakeLocked() // the loop arms its removal sweep
	w.logger.Debug("watching", "kind", collectors.EventMemoryEvents, "target", path, "file", file)
	return nil
}

// wake interrupts epoll_wait (unless the watcher is already released).
func (w *Watcher) wake() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.wakeLocked()
}

func (w *Watcher) wakeLocked() {
	if w.closed {
		return
	}
	one := [8]byte{1}
	_, _ = unix.Write(w.wakefd, one[:])
}

// WatchPressure registers a PSI trigger "some <stall> <window>" on file, a
// pressure file (a v2 cgroup's memory.pressure, or /proc/pressure/memory).
// path "" with file "" watches the node: NodePressureFile. An EventPSI
// arrives when tasks stalled for at least stall within window.
//
// Without CAP_SYS_RESOURCE the kernel only accepts windows that are a
// multiple of 2 s: when it refuses the window, the trigger is retried with
// the window rounded up, and the accepted values are logged and listed by
// Registrations.
func (w *Watcher) WatchPressure(path, file string, stall, window time.Duration) error {
	if file == "" {
		if path != "" {
			return fmt.Errorf("events: pressure watch on %s: no pressure file given", path)
		}
		file = NodePressureFile
	}
	if stall <= 0 || window < psiWindowMin || window > psiWindowMax || stall > window {
		return fmt.Errorf("events: pressure watch on %s: want 0 < stall <= window and %v <= window <= %v, got stall %v window %v",
			file, psiWindowMin, psiWindowMax, stall, window)
	}
	fd, err := unix.Open(file, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("events: open %s: %w", file, err)
	}
	accepted := window
	err = writeTrigger(fd, stall, window)
	if (errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EPERM)) && window%psiWindowQuantum != 0 {
		rounded := (window + psiWindowQuantum - 1) / psiWindowQuantum * psiWindowQuantum
		if rounded <= psiWindowMax {
			w.logger.Info("PSI trigger window refused, retrying rounded up to a multiple of 2s (no CAP_SYS_RESOURCE)",
				"target", path, "file", file, "requested_window", window, "window", rounded, "err", err)
			accepted = rounded
			err = writeTrigger(fd, stall, rounded)
		}
	}
	if err != nil {
		unix.Close(fd)
		return fmt.Errorf("events: PSI trigger %q on %s: %w", triggerString(stall, accepted), file, err)
	}
	reg := &registration{Registration: Registration{Kind: collectors.EventPSI, Path: path, File: file,
		Stall: stall, Window: accepted, RequestedWindow: window}, fd: fd, wd: -1}
	if path != "" {
		reg.dir = filepath.Dir(file)
	}
	if err := w.add(reg, unix.EPOLLPRI); err != nil {
		unix.Close(fd)
		return err
	}
	w.logger.Debug("watching", "kind", collectors.EventPSI, "target", path, "file", file, "stall", stall, "window", accepted)
	return nil
}

func triggerString(stall, window time.Duration) string {
	return fmt.Sprintf("some %d %d", stall.Microseconds(), window.Microseconds())
}

// writeTrigger writes the trigger with its trailing NUL, as the kernel wants.
func writeTrigger(fd int, stall, window time.Duration) error {
	_, err := unix.Write(fd, append([]byte(triggerString(stall, window)), 0))
	return err
}

// add puts reg's fd in the epoll set and records it.
func (w *Watcher) add(reg *registration, events uint32) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	w.nextID++
	reg.id = w.nextID
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, reg.fd, &unix.EpollEvent{Events: events, Fd: reg.id}); err != nil {
		return fmt.Errorf("events: epoll_ctl add %s: %w", reg.File, err)
	}
	w.byID[reg.id] = reg
	w.stats.Registrations++
	return nil
}

// Unwatch drops every watch of the cgroup path and closes their descriptors.
func (w *Watcher) Unwatch(path string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, reg := range w.byID {
		if reg.Path == path {
			w.dropLocked(reg)
		}
	}
	for _, reg := range w.byWD {
		if reg.Path == path {
			w.dropLocked(reg)
		}
	}
}

// dropLocked forgets reg and releases what it holds. Closing a v1 eventfd
// unregisters it from cgroup.event_control; closing a pressure file destroys
// its trigger.
func (w *Watcher) dropLocked(reg *registration) {
	if reg.wd >= 0 {
		if _, ok := w.byWD[reg.wd]; !ok {
			return
		}
		delete(w.byWD, reg.wd)
		// Fails with EINVAL when the kernel already dropped the watch
		// (file removed): nothing left to release then.
		_, _ = unix.InotifyRmWatch(w.inofd, uint32(reg.wd))
	} else {
		if _, ok := w.byID[reg.id]; !ok {
			return
		}
		delete(w.byID, reg.id)
		_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, reg.fd, nil)
		_ = unix.Close(reg.fd)
	}
	w.stats.Registrations--
}

// Registrations lists the active watches.
func (w *Watcher) Registrations() []Registration {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]Registration, 0, len(w.byID)+len(w.byWD))
	for _, reg := range w.byID {
		out = append(out, reg.Registration)
	}
	for _, reg := range w.byWD {
		out = append(out, reg.Registration)
	}
	return out
}

// Stats returns a copy of the counters.
func (w *Watcher) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.stats
	s.Events = make(map[string]uint64, len(w.stats.Events))
	for k, v := range w.stats.Events {
		s.Events[k] = v
	}
	return s
}

// Run delivers events until ctx ends, then closes every watch and the Events
// channel. It may be called once.
func (w *Watcher) Run(ctx context.Context) error {
	w.mu.Lock()
	if w.closed || w.running {
		w.mu.Unlock()
		return ErrClosed
	}
	w.running = true
	ctx, w.stop = context.WithCancel(ctx)
	w.mu.Unlock()
	defer close(w.done)
	defer w.release()
	defer close(w.events)

	stopWake := context.AfterFunc(ctx, w.wake)
	defer stopWake()

	evs := make([]unix.EpollEvent, 64)
	inoBuf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	nextSweep := time.Now().Add(inotifySweep)
	for {
		timeout := -1
		if w.inotifyWatches() > 0 {
			timeout = int(max(time.Until(nextSweep), 0) / time.Millisecond)
		}
		if len(w.pendingFIFO) > 0 {
			timeout = 10 // retry delivery of the coalesced backlog
		}
		n, err := unix.EpollWait(w.epfd, evs, timeout)
		if err != nil && err != unix.EINTR {
			return fmt.Errorf("events: epoll_wait: %w", err)
		}
		if ctx.Err() != nil {
			return nil
		}
		now := time.Now()
		for _, ev := range evs[:max(n, 0)] {
			switch {
			case ev.Fd == int32(-w.wakefd):
				// Stop (ctx.Err() is checked above) or a new inotify
				// watch to include in the sweep timeout.
				var buf [8]byte
				_, _ = unix.Read(w.wakefd, buf[:])
			case ev.Fd == int32(-w.inofd):
				w.readInotify(inoBuf, now)
			default:
				w.handle(ev, now)
			}
		}
		w.flush()
		if !now.Before(nextSweep) {
			w.sweepInotify()
			nextSweep = now.Add(inotifySweep)
		}
	}
}

// inotifySweep is how often watched memory.events files are checked for
// existence. kernfs sends no inotify event when a cgroup is removed (its
// files are deactivated, not unlinked, and the watch pins the inode), so
// the watcher looks for itself.
const inotifySweep = 2 * time.Second

func (w *Watcher) inotifyWatches() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.byWD)
}

// sweepInotify drops the inotify watches whose file is gone, releasing the
// inode the watch pinned.
func (w *Watcher) sweepInotify() {
	w.mu.Lock()
	var gone []*registration
	for _, reg := range w.byWD {
		if !exists(reg.File) {
			gone = append(gone, reg)
		}
	}
	for _, reg := range gone {
		w.dropLocked(reg)
		w.stats.Removed++
	}
	w.mu.Unlock()
	for _, reg := range gone {
		w.logger.Debug("cgroup removed, watch dropped", "kind", reg.Kind, "target", reg.Path)
	}
}

// handle processes a readable eventfd or a PSI trigger. The lock is held
// across the read so that Unwatch cannot close the descriptor (and a new
// watch reuse its number) in between.
func (w *Watcher) handle(ev unix.EpollEvent, now time.Time) {
	w.mu.Lock()
	reg, ok := w.byID[ev.Fd]
	if !ok {
		w.mu.Unlock()
		return // dropped by Unwatch after epoll_wait returned
	}
	if reg.Kind != collectors.EventPSI {
		var buf [8]byte
		if _, err := unix.Read(reg.fd, buf[:]); err != nil {
			if err == unix.EAGAIN {
				w.mu.Unlock()
				return
			}
			w.failLocked(reg, "read eventfd", err)
			w.mu.Unlock()
			return
		}
	}
	// The kernel signals v1 eventfds when their cgroup is removed, and a
	// removed cgroup's pressure file polls as an error forever: both mean
	// the watch is over, not that something happened. The file, not the
	// directory, is checked: on v2 rmdir the files are deactivated (and
	// their pollers woken) just before the directory itself goes.
	if reg.dir != "" && !exists(reg.File) {
		w.dropLocked(reg)
		w.stats.Removed++
		w.mu.Unlock()
		w.logger.Debug("cgroup removed, watch dropped", "kind", reg.Kind, "target", reg.Path)
		return
	}
	if ev.Events&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		w.failLocked(reg, "poll", unix.EIO)
		w.mu.Unlock()
		return
	}
	w.mu.Unlock()
	w.deliver(collectors.Event{Kind: reg.Kind, Path: reg.Path, Time: now})
}

// failLocked drops a watch that errors, so that a broken descriptor can
// never make the loop spin, and counts it.
func (w *Watcher) failLocked(reg *registration, op string, err error) {
	w.dropLocked(reg)
	w.stats.Errors++
	w.logger.Warn("watch failed, dropped", "kind", reg.Kind, "target", reg.Path, "file", reg.File, "op", op, "err", err)
}

// readInotify drains the inotify instance.
func (w *Watcher) readInotify(buf []byte, now time.Time) {
	for {
		n, err := unix.Read(w.inofd, buf)
		if err != nil || n <= 0 {
			if err != nil && err != unix.EAGAIN && err != unix.EINTR {
				w.mu.Lock()
				w.stats.Errors++
				w.mu.Unlock()
				w.logger.Warn("inotify read failed", "err", err)
			}
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ie := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			off += unix.SizeofInotifyEvent + int(ie.Len)
			w.inotifyEvent(int(ie.Wd), ie.Mask, now)
		}
	}
}

func (w *Watcher) inotifyEvent(wd int, mask uint32, now time.Time) {
	w.mu.Lock()
	if mask&unix.IN_Q_OVERFLOW != 0 {
		// Changes were lost: report every watched file as changed.
		w.stats.Errors++
		regs := make([]*registration, 0, len(w.byWD))
		for _, reg := range w.byWD {
			regs = append(regs, reg)
		}
		w.mu.Unlock()
		w.logger.Warn("inotify queue overflowed; reporting every memory.events watch", "watches", len(regs))
		for _, reg := range regs {
			w.deliver(collectors.Event{Kind: reg.Kind, Path: reg.Path, Time: now})
		}
		return
	}
	reg, ok := w.byWD[wd]
	if !ok {
		w.mu.Unlock()
		return
	}
	if mask&unix.IN_IGNORED != 0 {
		// The kernel dropped the watch (the inode went away).
		delete(w.byWD, wd)
		w.stats.Registrations--
		w.stats.Removed++
		w.mu.Unlock()
		w.logger.Debug("cgroup removed, watch dropped", "kind", reg.Kind, "target", reg.Path)
		return
	}
	w.mu.Unlock()
	if mask&unix.IN_MODIFY != 0 {
		w.deliver(collectors.Event{Kind: reg.Kind, Path: reg.Path, Time: now})
	}
}

// deliver sends ev without blocking: when the channel is full it joins the
// backlog, merged with a waiting event of the same kind and cgroup.
func (w *Watcher) deliver(ev collectors.Event) {
	w.mu.Lock()
	w.stats.Events[ev.Kind]++
	w.mu.Unlock()
	key := pendingKey{ev.Kind, ev.Path}
	if len(w.pendingFIFO) == 0 {
		select {
		case w.events <- ev:
			return
		default:
		}
	}
	if _, ok := w.pending[key]; ok {
		w.pending[key] = ev // keep the latest time
		w.count(&w.stats.Coalesced)
		return
	}
	if len(w.pendingFIFO) >= maxPending {
		w.count(&w.stats.Dropped)
		return
	}
	w.pending[key] = ev
	w.pendingFIFO = append(w.pendingFIFO, key)
}

// flush sends as much of the backlog as the channel takes, oldest first.
func (w *Watcher) flush() {
	sent := 0
	for _, key := range w.pendingFIFO {
		select {
		case w.events <- w.pending[key]:
			delete(w.pending, key)
			sent++
			continue
		default:
		}
		break
	}
	if sent > 0 {
		w.pendingFIFO = append(w.pendingFIFO[:0], w.pendingFIFO[sent:]...)
	}
}

func (w *Watcher) count(c *uint64) {
	w.mu.Lock()
	*c++
	w.mu.Unlock()
}

// Close stops a running Run and waits for it, or releases the watcher if Run
// was never called. It is safe to call more than once.
func (w *Watcher) Close() error {
	w.mu.Lock()
	running, stop := w.running, w.stop
	w.mu.Unlock()
	if running {
		stop()
		<-w.done
		return nil
	}
	w.mu.Lock()
	wasClosed := w.closed
	w.mu.Unlock()
	w.release()
	if !wasClosed {
		close(w.events)
	}
	return nil
}

// release closes every descriptor; later Watch* calls return ErrClosed.
func (w *Watcher) release() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.closed = true
	for _, reg := range w.byID {
		w.dropLocked(reg)
	}
	for _, reg := range w.byWD {
		w.dropLocked(reg)
	}
	for _, fd := range []*int{&w.inofd, &w.wakefd, &w.epfd} {
		if *fd >= 0 {
			_ = unix.Close(*fd)
			*fd = -1
		}
	}
}

func exists(path string) bool {
	var st unix.Stat_t
	err := unix.Stat(path, &st)
	return err != unix.ENOENT && err != unix.ENODEV
}

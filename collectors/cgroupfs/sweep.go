package cgroupfs

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigil-agent/vigil/collectors"
)

// errVanished means the cgroup disappeared under us: normal, never reported.
var errVanished = errors.New("cgroup vanished")

// isVanished tells the errors a removed cgroup's files return: ENOENT for a
// path that is gone, ENODEV for a held file of a removed cgroup (kernfs),
// ESRCH seen on some kernels.
func isVanished(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ESRCH)
}

const (
	readBufSize = 16 << 10
	maxReadBuf  = 1 << 20
	// sweepChunk is how many cgroups a sweep goroutine claims at once.
	sweepChunk = 16
)

// reader reads held cgroup files into a buffer it reuses. Each sweep
// goroutine has its own.
type reader struct {
	c    *Collector
	buf  []byte
	path []byte // NUL-terminated path of a cold file being opened
	err  error  // first error of this sweep (not vanished, not parse)
}

func newReader(c *Collector) *reader {
	return &reader{c: c, buf: make([]byte, readBufSize), path: make([]byte, 0, 512)}
}

// coldFile reads the cgroup's file f, which is not held, by open, pread and
// close: the limit files, and the gated files of a cgroup past the file
// budget. It returns nil if the file is absent or could not be read
// (counted).
func (r *reader) coldFile(cg *cgroup, f fileID) []byte {
	r.path = append(append(append(append(r.path[:0], cg.dir...), '/'), r.c.ver.files()[f]...), 0)
	var fd int
	for {
		var err error
		fd, err = openat(unix.AT_FDCWD, &r.path[0], unix.O_RDONLY|unix.O_CLOEXEC)
		switch {
		case err == unix.EINTR:
			continue
		case err == nil:
		case isVanished(err):
			// Not provided here (no swap accounting, the v2 root), or the
			// cgroup is gone: the held files tell.
			return nil
		default:
			r.fail(cg, f, errOpen, err)
			return nil
		}
		break
	}
	defer unix.Close(fd)
	for {
		n, err := unix.Pread(fd, r.buf, 0)
		switch {
		case err == unix.EINTR:
			continue
		case err == nil && n == len(r.buf) && len(r.buf) < maxReadBuf:
			// Maybe cut short (a large memory.stat): again with room.
			r.buf = make([]byte, 2*len(r.buf))
			continue
		case err == nil:
			return r.buf[:n]
		case isVanished(err):
			return nil
		default:
			r.fail(cg, f, errRead, err)
			return nil
		}
	}
}

// limits fills the limit fields of s: from the files when they are due (or
// force), else from the values last read.
func (r *reader) limits(cg *cgroup, s *collectors.CgroupSample, now int64, force bool) {
	cg.lim.load(&s.Memory)
	if !force && !cg.limitsDue && cg.limitsNext != 0 && now < cg.limitsNext {
		return
	}
	for f, name := range r.c.ver.files() {
		if name == "" || !isCold(fileID(f)) {
			continue
		}
		if b := r.coldFile(cg, fileID(f)); b != nil {
			r.parsed(cg, fileID(f), r.c.ver.fill(fileID(f), b, s))
		}
	}
	cg.lim.save(&s.Memory)
	cg.limitsDue = false
	ival := r.c.limitsIval
	if cg.limitsNext == 0 {
		// First read: spread the cgroups tracked together over the interval.
		cg.limitsNext = now + ival - ival/16*int64(cg.seq%16)
	} else if now >= cg.limitsNext {
		cg.limitsNext = now + ival
	}
}

// file returns the content of the cgroup's file f, nil if the cgroup does not
// have it (or it could not be read: counted), or errVanished.
func (r *reader) file(cg *cgroup, f fileID) ([]byte, error) {
	fd := cg.fds[f]
	if fd < 0 {
		return nil, nil
	}
	for {
		n, err := unix.Pread(int(fd), r.buf, 0)
		switch {
		case err == unix.EINTR:
			continue
		case err == nil && n == len(r.buf) && len(r.buf) < maxReadBuf:
			// Maybe cut short: read it again with room to spare.
			r.buf = make([]byte, 2*len(r.buf))
			continue
		case err == nil:
			return r.buf[:n], nil
		case isVanished(err):
			return nil, errVanished
		case errors.Is(err, unix.EOPNOTSUPP):
			// e.g. memory.pressure with PSI turned off for this cgroup:
			// treat as absent from now on.
			_ = unix.Close(int(fd))
			cg.fds[f] = -1
			return nil, nil
		default:
			r.fail(cg, f, errRead, err)
			return nil, nil
		}
	}
}

func (r *reader) parsed(cg *cgroup, f fileID, err error) {
	if err != nil {
		r.fail(cg, f, errParse, err)
	}
}

// fail counts a problem, warns once per cgroup and file, and keeps the first
// read error of the sweep for Sweep to return.
func (r *reader) fail(cg *cgroup, f fileID, reason int, err error) {
	r.c.errs[reason].Add(1)
	file := r.c.ver.files()[f]
	if bit := uint32(1) << f; cg.warned&bit == 0 {
		cg.warned |= bit
		r.c.log.Warn("cannot read cgroup file", "target", cg.dir, "file", file, "reason", reasons[reason], "err", err)
	}
	if reason == errRead && r.err == nil {
		r.err = fmt.Errorf("cgroupfs: read %s/%s: %w", cg.dir, file, err)
	}
}

// helper is an extra sweep goroutine, owned by the Collector: it starts in
// New and ends when Close closes start.
type helper struct {
	start chan struct{}
	r     *reader
}

// sweepJob is the work of one Sweep, shared by its goroutines.
type sweepJob struct {
	list []*cgroup
	out  []collectors.CgroupSample
	now  int64 // unix ns of the sweep
	next atomic.Int64
	wg   sync.WaitGroup
}

func (c *Collector) runHelper(h helper) {
	for range h.start {
		c.drain(h.r)
		c.job.wg.Done()
	}
}

// readAll reads list into out (same length), in parallel when it pays.
func (c *Collector) readAll(list []*cgroup, out []collectors.CgroupSample, now int64) {
	c.job.list, c.job.out, c.job.now = list, out, now
	c.job.next.Store(0)
	if len(c.helpers) > 0 && len(list) > 2*sweepChunk {
		c.job.wg.Add(len(c.helpers))
		for _, h := range c.helpers {
			h.start <- struct{}{}
		}
		c.drain(c.main)
		c.job.wg.Wait()
	} else {
		c.drain(c.main)
	}
	c.job.list, c.job.out = nil, nil
}

func (c *Collector) drain(r *reader) {
	n := int64(len(c.job.list))
	for {
		i := c.job.next.Add(sweepChunk) - sweepChunk
		if i >= n {
			return
		}
		end := min(i+sweepChunk, n)
		c.readChunk(r, c.job.list[i:end], c.job.out[i:end], c.job.now, false)
	}
}

// readChunk reads the cgroups of list into out (same length), all the files
// of one cgroup in a row (measured a little faster here than file by file
// across cgroups: the kernel's data for one memcg stays warm). A cgroup found
// gone is marked vanished. The limit files are read when due, or all of them
// with forceLimits.
func (c *Collector) readChunk(r *reader, list []*cgroup, out []collectors.CgroupSample, now int64, forceLimits bool) {
	files := c.ver.files()
	for j, cg := range list {
		s := &out[j]
		s.Path, s.Identity = cg.path, cg.id
		resetSample(s)
		const (
			gateUnknown = iota
			gateRead
			gateReuse
		)
		gate := gateUnknown
		statRead := false
		for f, name := range files {
			if name == "" || isCold(fileID(f)) {
				continue
			}
			// The gated files come after the usage file: they are read
			// when due given the usage (see Options.StatMaxAge).
			onDemand := cg.gatedCold && isGated(fileID(f))
			if onDemand && cg.gatedHas&(1<<f) == 0 {
				continue // the kernel does not provide it here
			}
			isStat := fileID(f) == fStat && (cg.fds[f] >= 0 || onDemand)
			if isGated(fileID(f)) && gate == gateUnknown {
				gate = gateReuse
				if c.stat.due(&cg.stat, s.Memory.UsageBytes, cg.effLimit, now, forceLimits) {
					gate = gateRead
				}
			}
			if gate == gateReuse && isGated(fileID(f)) {
				cg.stat.load(fileID(f), s)
				if isStat {
					c.statSkip.Add(1)
				}
				continue
			}
			var b []byte
			var err error
			if onDemand {
				b = r.coldFile(cg, fileID(f))
			} else {
				b, err = r.file(cg, fileID(f))
			}
			if err != nil {
				cg.vanished = true
				break
			}
			if b != nil {
				r.parsed(cg, fileID(f), c.ver.fill(fileID(f), b, s))
				statRead = statRead || isStat
			}
		}
		if statRead && !cg.vanished {
			c.stat.read(&cg.stat, s, now, cg.seq)
			c.statRead.Add(1)
		}
		if !cg.vanished {
			r.limits(cg, s, now, forceLimits)
		}
		c.ver.finish(s)
	}
}

// takeErr returns the first read error of the sweep and resets them.
func (c *Collector) takeErr() error {
	err := c.main.err
	c.main.err = nil
	for _, h := range c.helpers {
		if err == nil {
			err = h.r.err
		}
		h.r.err = nil
	}
	return err
}

// Sweep reads every tracked cgroup into dst.Cgroups (reusing its capacity),
// sorted by path with parents before children, computes the derived signals
// and sets dst.Hierarchy (and Partial to false). A cgroup that vanished since
// Discover is dropped quietly. The returned error reports the first read
// failure of another kind; dst is filled with everything that could be read.
func (c *Collector) Sweep(now time.Time, dst *collectors.Snapshot) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	dst.Hierarchy = c.hier
	dst.Partial = false
	dst.Cgroups = resize(dst.Cgroups, len(c.cgroups))
	c.lastNow = max(c.lastNow, now.UnixNano())
	c.readAll(c.cgroups, dst.Cgroups, now.UnixNano())
	if n := c.compact(&c.cgroups, &dst.Cgroups); n > 0 {
		c.tracked.Store(int64(len(c.cgroups)))
	}
	for i, cg := range c.cgroups {
		c.derive(cg, &dst.Cgroups[i], now)
	}
	return c.takeErr()
}

// SweepPaths reads only the tracked cgroups at paths (an off-cycle snapshot
// after a kernel event) into dst, with Partial set, their limit files
// included (an event may follow a change of limit). Unknown paths are
// skipped. Effective limits use the ancestors' limits of the last sweep
// unless the ancestors are in paths too.
func (c *Collector) SweepPaths(now time.Time, paths []string, dst *collectors.Snapshot) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	c.partial = c.partial[:0]
	for _, p := range paths {
		cg, ok := c.byPath[p]
		if !ok {
			cg, ok = c.byPath[path.Clean("/"+p)]
		}
		if ok && !slices.Contains(c.partial, cg) {
			c.partial = append(c.partial, cg)
		}
	}
	slices.SortFunc(c.partial, func(a, b *cgroup) int { return strings.Compare(a.path, b.path) })
	dst.Hierarchy = c.hier
	dst.Partial = true
	dst.Cgroups = resize(dst.Cgroups, len(c.partial))
	c.lastNow = max(c.lastNow, now.UnixNano())
	c.readChunk(c.main, c.partial, dst.Cgroups, now.UnixNano(), true)
	if n := c.compact(&c.partial, &dst.Cgroups); n > 0 {
		c.cgroups = slices.DeleteFunc(c.cgroups, func(cg *cgroup) bool { return cg.vanished })
		c.tracked.Store(int64(len(c.cgroups)))
	}
	for i, cg := range c.partial {
		c.derive(cg, &dst.Cgroups[i], now)
	}
	clear(c.partial)
	return c.takeErr()
}

// compact drops the cgroups found vanished from list and their samples from
// out (kept aligned), closing their files. It returns how many it dropped.
func (c *Collector) compact(list *[]*cgroup, out *[]collectors.CgroupSample) int {
	l, o := *list, *out
	w := 0
	for i, cg := range l {
		if cg.vanished {
			c.log.Debug("cgroup vanished", "target", cg.path)
			c.release(cg)
			if c.byPath[cg.path] == cg {
				delete(c.byPath, cg.path)
			}
			c.vanished.Add(1)
			continue
		}
		if w != i {
			l[w], o[w] = cg, o[i]
		}
		w++
	}
	dropped := len(l) - w
	if dropped > 0 {
		clear(l[w:])
		clear(o[w:])
		*list, *out = l[:w], o[:w]
		c.publishFDs()
	}
	return dropped
}

// resize returns s with length n, reusing its array when it is big enough.
func resize(s []collectors.CgroupSample, n int) []collectors.CgroupSample {
	if cap(s) < n {
		return make([]collectors.CgroupSample, n, n+n/8+16)
	}
	return s[:n]
}

// RefreshLimits makes the next Sweep or SweepPaths re-read the limit files of
// the tracked cgroups at paths (unknown paths are skipped): call it after
// writing a limit, so that the change shows at the next tick rather than
// within Options.LimitsInterval. It also marks them hot: their memory.stat
// is read at every sweep for Options.HotHold (see Options.StatMaxAge).
func (c *Collector) RefreshLimits(paths ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range paths {
		cg, ok := c.byPath[p]
		if !ok {
			cg, ok = c.byPath[path.Clean("/"+p)]
		}
		if ok {
			cg.limitsDue = true
			cg.stat.force = true
			cg.stat.hot = c.lastNow + c.stat.hotHold
		}
	}
}

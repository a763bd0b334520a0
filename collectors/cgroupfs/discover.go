package cgroupfs

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/collectors/identity"
)

// maxDepth bounds the walk; real hierarchies are a few levels deep.
const maxDepth = 64

// cgroup is one tracked cgroup: its held files and the history the derived
// signals need.
type cgroup struct {
	path   string // relative to the hierarchy root, "/" for the root
	dir    string
	id     collectors.Identity
	parent *cgroup         // nearest tracked ancestor
	fds    [numFiles]int32 // held hot files; cold (limit) files stay -1
	gen    uint64          // last Discover that saw it
	seq    uint32          // order of tracking, spreads the limit reads over sweeps

	lim        limits // the limit files as last read
	limitsNext int64  // when the limit files are due again (unix ns); 0: never read
	limitsDue  bool   // read the limit files at the next read whatever the time

	vanished bool   // set by a read that found it gone
	warned   uint32 // bit per fileID already warned about

	gatedHas  uint32 // bit per gated fileID the kernel provides for it
	gatedCold bool   // its gated files are opened when due, not held (fdbudget.go)
	released  bool   // no longer tracked: its files are closed

	stat statCache // memory.stat as last read, and when to read it again

	effLimit uint64 // effective limit of the latest read (statgate)
	capLimit uint64 // tightest configured limit of it and its ancestors, for its children
	room     uint64 // what it may still grow by before a limit on its path stops it, for its children
	growth   ring
	refaults refaultRate
}

// close closes the held files and returns how many there were.
func (cg *cgroup) close() int {
	n := 0
	for i, fd := range cg.fds {
		if fd >= 0 {
			_ = unix.Close(int(fd))
			cg.fds[i] = -1
			n++
		}
	}
	return n
}

// errNoFDs tells openCgroup that the process ran out of file descriptors.
var errNoFDs = errors.New("out of file descriptors")

// openCgroup opens the hot files of the cgroup at rel (the cold ones are
// read when due). A file the kernel does not
// provide stays -1. It returns errVanished when the directory is gone.
func (c *Collector) openCgroup(rel string) (*cgroup, error) {
	cg := &cgroup{path: rel, dir: c.Dir(rel), id: identity.FromPath(rel),
		effLimit: collectors.Unlimited, capLimit: collectors.Unlimited, room: collectors.Unlimited}
	for i := range cg.fds {
		cg.fds[i] = -1
	}
	var reset collectors.CgroupSample
	resetSample(&reset)
	cg.lim.save(&reset.Memory)
	c.seq++
	cg.seq = c.seq
	opened := 0
	for i, name := range c.ver.files() {
		if name == "" || isCold(fileID(i)) || isGated(fileID(i)) {
			continue
		}
		fd, err := unix.Open(cg.dir+"/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		switch {
		case err == nil:
			cg.fds[i] = int32(fd)
			opened++
		case errors.Is(err, unix.ENOENT):
			// Not provided here (no swap accounting, old kernel, v2 root)
			// or the cgroup is gone: told apart below.
		case errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE):
			cg.close()
			return nil, errNoFDs
		default:
			c.errs[errOpen].Add(1)
			c.log.Warn("cannot open cgroup file", "target", cg.dir, "file", name, "err", err)
		}
	}
	if opened == 0 {
		if err := unix.Access(cg.dir, unix.F_OK); err != nil {
			return nil, errVanished
		}
	}
	c.heldFDs += opened
	if err := c.openGated(cg, true); err != nil {
		c.release(cg)
		return nil, err
	}
	// Over the budget: the latest holders (this one last) read their
	// gated files on demand from now on.
	c.fitHeld(cg)
	if c.heldFDs > c.fd.budget {
		c.closeGated(cg)
	}
	return cg, nil
}

// Discover walks the memory hierarchy (from Options.Subtree), starts tracking
// new cgroups and stops tracking those that are gone, closing their files.
// When nothing changed it does not allocate.
func (c *Collector) Discover() (added, removed int, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, 0, ErrClosed
	}
	c.gen++
	c.disc = discovery{}
	// The ancestors of the subtree, so that their limits count.
	for _, anc := range c.ancestors {
		c.visit(anc)
	}
	if werr := c.walkTree(); werr != nil {
		// Keep what is tracked: a failed walk must not drop every cgroup.
		c.errs[errWalk].Add(1)
		if c.disc.added > 0 {
			c.relink()
		}
		c.added.Add(uint64(c.disc.added))
		c.tracked.Store(int64(len(c.cgroups)))
		c.publishFDs()
		return c.disc.added, 0, fmt.Errorf("cgroupfs: discover %s: %w", c.Dir(c.subtree), werr)
	}
	if c.disc.walkErrs > 0 {
		c.errs[errWalk].Add(uint64(c.disc.walkErrs))
	}
	for p, cg := range c.byPath {
		if cg.gen != c.gen {
			c.log.Debug("cgroup removed", "target", p)
			c.release(cg)
			delete(c.byPath, p)
			c.disc.removed++
		}
	}
	if c.disc.added > 0 || c.disc.removed > 0 {
		c.relink()
		c.pruneHolders()
		c.regainHeld()
	}
	c.added.Add(uint64(c.disc.added))
	c.removed.Add(uint64(c.disc.removed))
	c.tracked.Store(int64(len(c.cgroups)))
	c.publishFDs()
	return c.disc.added, c.disc.removed, nil
}

// discovery is the bookkeeping of one Discover.
type discovery struct {
	added, removed int
	walkErrs       int // directories that could not be listed (not vanished ones)
}

// visit marks the cgroup at rel as present, tracking it if new. It returns
// false when the cgroup is not tracked (then its subtree is skipped).
func (c *Collector) visit(rel []byte) bool {
	if cg, ok := c.byPath[string(rel)]; ok {
		cg.gen = c.gen
		return true
	}
	if len(c.byPath) >= c.maxCgroups {
		c.errs[errMaxCgroups].Add(1)
		if !c.capWarned {
			c.capWarned = true
			c.log.Warn("not tracking more cgroups: limit reached", "max_cgroups", c.maxCgroups, "target", string(rel))
		}
		return false
	}
	cg, err := c.openCgroup(string(rel))
	switch {
	case errors.Is(err, errVanished):
		return false
	case errors.Is(err, errNoFDs):
		c.errs[errFDLimit].Add(1)
		return false
	}
	c.log.Debug("cgroup added", "target", cg.path)
	cg.gen = c.gen
	c.byPath[cg.path] = cg
	c.disc.added++
	return true
}

// relink rebuilds the sorted list and the parent links.
func (c *Collector) relink() {
	c.cgroups = c.cgroups[:0]
	for _, cg := range c.byPath {
		c.cgroups = append(c.cgroups, cg)
	}
	slices.SortFunc(c.cgroups, func(a, b *cgroup) int { return strings.Compare(a.path, b.path) })
	for _, cg := range c.cgroups {
		cg.parent = nil
		for p := cg.path; p != "/"; {
			p = path.Dir(p)
			if parent, ok := c.byPath[p]; ok {
				cg.parent = parent
				break
			}
		}
	}
}

// ancestors lists the proper ancestors of p, root first.
func ancestors(p string) [][]byte {
	var out [][]byte
	for p != "/" {
		p = path.Dir(p)
		out = append(out, []byte(p))
	}
	slices.Reverse(out)
	return out
}

// walker lists the cgroup directories below the subtree with getdents,
// reusing its buffers: only new cgroups cost allocations.
type walker struct {
	bufs  [][]byte // one dirent buffer per depth
	rel   []byte   // path of the directory being listed
	start *byte    // NUL-terminated absolute directory of the subtree
}

// walkTree visits the subtree and every directory below it, parents first.
func (c *Collector) walkTree() error {
	w := &c.walk
	fd, err := openat(unix.AT_FDCWD, w.start, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return err
	}
	w.rel = append(w.rel[:0], c.subtree...)
	if !c.visit(w.rel) {
		unix.Close(fd)
		return nil
	}
	return c.walkDir(fd, 0)
}

// walkDir lists the directory open at fd (whose path is c.walk.rel), visits
// its subdirectories and closes fd.
func (c *Collector) walkDir(fd, depth int) error {
	defer unix.Close(fd)
	w := &c.walk
	if depth >= maxDepth {
		return nil
	}
	for len(w.bufs) <= depth {
		w.bufs = append(w.bufs, make([]byte, 16<<10))
	}
	buf := w.bufs[depth]
	base := len(w.rel)
	defer func() { w.rel = w.rel[:base] }()
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if isVanished(err) {
				return nil
			}
			return err
		}
		if n <= 0 {
			return nil
		}
		for off := 0; off+19 <= n; {
			// struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name.
			reclen := int(*(*uint16)(unsafe.Pointer(&buf[off+16])))
			if reclen <= 19 || off+reclen > n {
				break
			}
			typ := buf[off+18]
			nameAt := off + 19
			name := buf[nameAt : off+reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			off += reclen
			if len(name) == 0 || name[0] == '.' && (len(name) == 1 || len(name) == 2 && name[1] == '.') {
				continue
			}
			if typ == unix.DT_UNKNOWN {
				var st unix.Stat_t
				if unix.Fstatat(fd, string(name), &st, unix.AT_SYMLINK_NOFOLLOW) != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
					continue
				}
			} else if typ != unix.DT_DIR {
				continue
			}
			w.rel = w.rel[:base]
			if base > 1 {
				w.rel = append(w.rel, '/')
			}
			w.rel = append(w.rel, name...)
			if !c.visit(w.rel) {
				continue
			}
			// The name is NUL terminated inside buf: open it in place.
			cfd, err := openat(fd, &buf[nameAt], unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
			if err != nil {
				if !isVanished(err) {
					c.unlisted(w.rel, err)
				}
				continue
			}
			if err := c.walkDir(cfd, depth+1); err != nil {
				c.unlisted(w.rel, err)
			}
		}
	}
}

// unlisted keeps tracking what is below a directory that could not be
// listed: a transient error must not make its cgroups look removed.
func (c *Collector) unlisted(rel []byte, err error) {
	c.disc.walkErrs++
	c.log.Warn("cannot list cgroup directory", "target", string(rel), "err", err)
	prefix := string(rel) + "/"
	for p, cg := range c.byPath {
		if strings.HasPrefix(p, prefix) {
			cg.gen = c.gen
		}
	}
}

// openat opens a NUL-terminated name relative to dirfd without converting it
// to a string (unix.Openat would allocate a copy).
func openat(dirfd int, name *byte, flags int) (int, error) {
	r, _, e := unix.Syscall6(unix.SYS_OPENAT, uintptr(dirfd), uintptr(unsafe.Pointer(name)), uintptr(flags), 0, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

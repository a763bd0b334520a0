// Package cgroupfs owns vigil's per-cgroup memory collection on cgroup v1
// (legacy), v2 (unified) and hybrid hosts: it finds the memory hierarchy under
// the host root, discovers cgroups as they come and go, and reads every
// tracked cgroup once per tick into collectors.CgroupSample, with the derived
// signals (working set, effective limit, headroom, growth, time to limit,
// refault rate, reclaimable cache).
//
// The hot path holds each cgroup's files open and reads them with pread into
// a reused buffer, parsing without allocation: a steady-state Sweep does not
// allocate. The package only reads; it never writes a cgroup file.
//
// Field mapping:
//
//	                    v2                      v1
//	UsageBytes          memory.current          memory.usage_in_bytes
//	PeakBytes           memory.peak             memory.max_usage_in_bytes
//	MaxBytes            memory.max              memory.limit_in_bytes
//	HighBytes           memory.high             Unlimited
//	LowBytes, MinBytes  memory.low, memory.min  0
//	SoftLimitBytes      Unlimited               memory.soft_limit_in_bytes
//	SwapMaxBytes        memory.swap.max         Unlimited
//	SwapUsageBytes      memory.swap.current     memory.stat total_swap
//	MemswLimit/Usage    Unlimited / 0           memory.memsw.{limit,usage}_in_bytes
//	Stat                memory.stat             memory.stat total_* keys
//	Events              memory.events           Max=memory.failcnt, memory.oom_control
//	Pressure            memory.pressure         not present (Present=false)
//
// A limit file that is absent (memsw without swap accounting, memory.peak
// before Linux 5.19, the v2 root) reads as Unlimited; an absent counter as 0.
package cgroupfs

import (
	"errors"
	"fmt"
	"log/slog"
	"path"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vigil-agent/vigil/collectors"
)

// ErrClosed is returned by the methods of a closed Collector.
var ErrClosed = errors.New("cgroupfs: collector closed")

// Options configures a Collector. The zero value is usable.
type Options struct {
	// HostRoot is where the host's filesystem is mounted (default "/"); the
	// cgroup mounts are looked up under HostRoot/sys/fs/cgroup.
	HostRoot string
	// GrowthWindow is the span over which the working set growth rate is
	// fitted (default 30s).
	GrowthWindow time.Duration
	// MaxCgroups caps how many cgroups are tracked (default 20000), so that a
	// runaway creator of cgroups cannot exhaust vigil's memory or file
	// descriptors. It is lowered further so that every tracked cgroup's
	// hot files fit in MaxHeldFiles.
	MaxCgroups int
	// Subtree limits discovery to this cgroup and its descendants (default
	// "/", the whole hierarchy). Its ancestors are tracked too, so that
	// effective limits account for them.
	Subtree string
	// Workers is how many goroutines read cgroups during a Sweep (default
	// min(GOMAXPROCS, 2); 1 reads on the caller's goroutine only).
	Workers int
	// LimitsInterval is how often the limit files (memory.limit_in_bytes,
	// soft limit, memsw limit; v2 memory.max, high, low, min, swap.max) are
	// re-read by a Sweep (default 10s). They are not held open: a limit only
	// changes when someone writes it, and holding them would cost 3 (v1) or 5
	// (v2) file descriptors per cgroup. SweepPaths always reads them, and
	// RefreshLimits makes the next read of a cgroup read them.
	LimitsInterval time.Duration
	// StatMaxAge is the longest a cgroup goes without its memory.stat being
	// re-read (0, the default: at every read, as the other files). memory.stat
	// is by far the costliest file (v1 computes its hierarchical total_* keys
	// on every read); the cheap usage file is read at every sweep, and
	// memory.stat only when one of these holds: it was never read, it is
	// StatMaxAge old, usage moved by more than StatMoveRatio since it was
	// read, usage is at or above StatNearLimitRatio of the effective limit,
	// its trouble counters (major faults, refaults, scans, steals) moved
	// between its last two reads, RefreshLimits marked the cgroup hot, or the
	// read is a SweepPaths (an event). Between reads a sample carries the last
	// memory.stat values and Derived.StatAgeSeconds says how old they are;
	// the refault rate is computed between stat reads, at their times. The
	// peak (a high-water mark) and, on v1, failcnt (a counter) and memsw
	// usage (usage + swap) are read along with it: read later, they lose
	// nothing but time.
	StatMaxAge time.Duration
	// StatMoveRatio is the change of usage, relative to the usage at the last
	// memory.stat read and at least 1 MiB, that makes it due again (default
	// 0.02).
	StatMoveRatio float64
	// StatNearLimitRatio: a cgroup whose usage is at or above this fraction of
	// its effective limit has memory.stat read at every sweep (default 0.5).
	StatNearLimitRatio float64
	// HotHold is how long after RefreshLimits a cgroup has memory.stat read
	// at every sweep (default 2m): the agent calls RefreshLimits for cgroups
	// with a finding, whose remediation follows.
	HotHold time.Duration
	// MaxHeldFiles caps the cgroup files held open at once (default:
	// RLIMIT_NOFILE less a tenth, at least 1024, for the rest of the agent).
	// Every tracked cgroup holds its hot files (v1: 2, v2: 4); as many as
	// fit also hold memory.stat and the other gated files (v1: 4, v2: 2),
	// the others open them when due.
	MaxHeldFiles int
	// Logger receives warnings; default slog.Default().
	Logger *slog.Logger
}

// Error reasons counted in Stats.Errors.
const (
	ReasonOpen       = "open"        // a cgroup file could not be opened
	ReasonRead       = "read"        // a read failed (not because the cgroup vanished)
	ReasonParse      = "parse"       // a file's content was malformed
	ReasonWalk       = "walk"        // a directory of the hierarchy could not be listed
	ReasonMaxCgroups = "max_cgroups" // a cgroup was not tracked: MaxCgroups reached
	ReasonFDLimit    = "fd_limit"    // a cgroup was not tracked: out of file descriptors
)

var reasons = [...]string{ReasonOpen, ReasonRead, ReasonParse, ReasonWalk, ReasonMaxCgroups, ReasonFDLimit}

const (
	errOpen = iota
	errRead
	errParse
	errWalk
	errMaxCgroups
	errFDLimit
	numReasons
)

// Stats are the collector's self-metrics.
type Stats struct {
	// Tracked is the number of cgroups currently tracked.
	Tracked int
	// Added and Removed count cgroups Discover picked up and let go.
	Added, Removed uint64
	// Vanished counts cgroups that disappeared while being read (dropped
	// quietly, not errors).
	Vanished uint64
	// StatReads and StatSkips count, over every cgroup read, the reads of
	// memory.stat and the reads that reused its last values (StatMaxAge).
	StatReads, StatSkips uint64
	// HeldFiles is how many cgroup files are held open; OnDemand how many
	// tracked cgroups open their gated files (memory.stat, ...) when due
	// because holding them would pass Options.MaxHeldFiles.
	HeldFiles, OnDemand int
	// Errors counts problems by reason (every Reason* key is present).
	Errors map[string]uint64
}

// Collector reads the memory state of every cgroup of the host's memory
// hierarchy. Its methods are safe for concurrent use; Sweep, SweepPaths and
// Discover serialise.
type Collector struct {
	log        *slog.Logger
	hier       collectors.Hierarchy
	ver        version
	root       string // absolute memory hierarchy root
	subtree    string // cgroup path discovery starts from
	window     int64  // growth window, ns
	spacing    int64  // minimum spacing of stored growth samples, ns
	maxCgroups int
	fd         fdPlan
	heldFDs    int       // files held open by tracked cgroups (under mu)
	onDemand   int       // tracked cgroups whose gated files are not held (under mu)
	holders    []*cgroup // cgroups holding their gated files, in the order they got them
	limitsIval int64     // Options.LimitsInterval, ns
	stat       statPolicy

	mu        sync.Mutex
	closed    bool
	byPath    map[string]*cgroup
	cgroups   []*cgroup // sorted by path: parents before children
	gen       uint64    // discovery generation
	walk      walker
	disc      discovery
	ancestors [][]byte // of the subtree, root first
	capWarned bool
	main      *reader  // the caller's goroutine reads with this one
	helpers   []helper // extra sweep goroutines
	job       sweepJob
	partial   []*cgroup // scratch for SweepPaths
	seq       uint32    // cgroups opened so far
	lastNow   int64     // unix ns of the latest Sweep or SweepPaths

	tracked  atomic.Int64
	added    atomic.Uint64
	removed  atomic.Uint64
	vanished atomic.Uint64
	statRead atomic.Uint64
	statSkip atomic.Uint64
	// heldFiles and onDemandN publish heldFDs and onDemand for Stats.
	heldFiles, onDemandN atomic.Int64
	errs                 [numReasons]atomic.Uint64
}

// New detects the cgroup layout under opts.HostRoot and returns a Collector
// for its memory hierarchy, tracking nothing until the first Discover. It
// fails with ErrNoMemoryController if no hierarchy has the memory controller.
func New(opts Options) (*Collector, error) {
	if opts.HostRoot == "" {
		opts.HostRoot = "/"
	}
	if opts.GrowthWindow <= 0 {
		opts.GrowthWindow = 30 * time.Second
	}
	if opts.MaxCgroups <= 0 {
		opts.MaxCgroups = 20000
	}
	if opts.Subtree == "" {
		opts.Subtree = "/"
	}
	if opts.LimitsInterval <= 0 {
		opts.LimitsInterval = 10 * time.Second
	}
	if opts.StatMoveRatio <= 0 {
		opts.StatMoveRatio = 0.02
	}
	if opts.StatNearLimitRatio <= 0 {
		opts.StatNearLimitRatio = 0.5
	}
	if opts.HotHold <= 0 {
		opts.HotHold = 2 * time.Minute
	}
	if opts.Workers <= 0 {
		opts.Workers = min(runtime.GOMAXPROCS(0), 2)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	hier, err := detect(opts.HostRoot)
	if err != nil {
		return nil, fmt.Errorf("cgroupfs: %w", err)
	}
	c := &Collector{
		log:        opts.Logger.With("collector", "cgroupfs"),
		hier:       hier,
		root:       hier.MemoryRoot,
		subtree:    path.Clean("/" + opts.Subtree),
		window:     int64(opts.GrowthWindow),
		spacing:    2 * int64(opts.GrowthWindow) / ringSize,
		maxCgroups: opts.MaxCgroups,
		limitsIval: int64(opts.LimitsInterval),
		stat: statPolicy{maxAge: int64(max(opts.StatMaxAge, 0)), moveRatio: opts.StatMoveRatio,
			nearLimit: opts.StatNearLimitRatio, hotHold: int64(opts.HotHold)},
		byPath: map[string]*cgroup{},
	}
	c.ancestors = ancestors(c.subtree)
	if c.walk.start, err = unix.BytePtrFromString(c.Dir(c.subtree)); err != nil {
		return nil, fmt.Errorf("cgroupfs: subtree %q: %w", opts.Subtree, err)
	}
	c.main = newReader(c)
	c.ver = v1{}
	if hier.Version == 2 {
		c.ver = v2{}
	}
	c.fd = fitFDLimit(c.log, c.maxCgroups, opts.MaxHeldFiles, c.ver)
	c.maxCgroups = c.fd.maxCgroups
	for range opts.Workers - 1 {
		h := helper{start: make(chan struct{}), r: newReader(c)}
		c.helpers = append(c.helpers, h)
		go c.runHelper(h)
	}
	c.log.Info("cgroup memory hierarchy", "mode", hier.Mode, "version", hier.Version, "root", hier.MemoryRoot, "max_cgroups", c.maxCgroups)
	return c, nil
}

func max64(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

func max1(n int) int {
	if n < 1 {
		return 1
	}
	return n
}

// Hierarchy describes the detected layout.
func (c *Collector) Hierarchy() collectors.Hierarchy { return c.hier }

// Dir is the absolute directory of the cgroup at path in the memory
// hierarchy.
func (c *Collector) Dir(p string) string {
	return filepath.Join(c.root, path.Clean("/"+p))
}

// Stats returns the self-metrics.
func (c *Collector) Stats() Stats {
	s := Stats{
		Tracked:   int(c.tracked.Load()),
		Added:     c.added.Load(),
		Removed:   c.removed.Load(),
		Vanished:  c.vanished.Load(),
		StatReads: c.statRead.Load(),
		StatSkips: c.statSkip.Load(),
		HeldFiles: int(c.heldFiles.Load()),
		OnDemand:  int(c.onDemandN.Load()),
		Errors:    make(map[string]uint64, numReasons),
	}
	for i, r := range reasons {
		s.Errors[r] = c.errs[i].Load()
	}
	return s
}

// Close stops the sweep goroutines and closes every held file.
func (c *Collector) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	for _, h := range c.helpers {
		close(h.start)
	}
	c.helpers = nil
	for _, cg := range c.cgroups {
		cg.close()
	}
	c.cgroups = nil
	clear(c.byPath)
	c.tracked.Store(0)
	return nil
}

// Package agent wires vigil together and owns its lifecycle: it runs the
// loop that takes one snapshot per tick (and an off-cycle one when the
// kernel notifies), feeds it through rules and remediation, publishes it to
// the HTTP surface (/metrics, /healthz, /readyz, /api/v1/*), reloads the
// configuration on SIGHUP and drains on stop. It also hosts the `vigil`
// subcommands (cmd_*.go).
package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-agent/vigil/agent/config"
	"github.com/vigil-agent/vigil/agent/telemetry"
	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/collectors/events"
	"github.com/vigil-agent/vigil/collectors/node"
)

// Options configure an Agent.
type Options struct {
	// Config is the configuration to start with; it must be valid.
	Config *config.Config
	// Reload returns the configuration to switch to when Reload is called
	// (SIGHUP): typically it reads the file again and applies the command
	// line overrides. nil: reloading keeps the current configuration.
	Reload func() (*config.Config, error)
	// Logger is the one logger passed down to every component.
	Logger *slog.Logger
	// LogLevel, when not nil, follows log.level across reloads.
	LogLevel *slog.LevelVar
}

// Agent is one running vigil. Create it with New, mount extra handlers and
// collectors, then call Run.
type Agent struct {
	log      *slog.Logger
	logLevel *slog.LevelVar
	reload   func() (*config.Config, error)
	cfg      atomic.Pointer[config.Config]
	info     BuildInfo

	reg     *prometheus.Registry
	metrics *selfMetrics
	reloads *reloadMetrics
	stats   *collectorStats
	mux     *http.ServeMux
	token   atomic.Pointer[string]
	health  *health

	snaps    *snapshotBuffers
	partial  collectors.Snapshot
	sampler  *sampler
	pipeline pipeline

	facts    atomic.Pointer[node.Facts]
	reloadCh chan struct{}
	started  chan struct{}
	addr     atomic.Pointer[string]

	// Loop state, owned by the loop goroutine.
	nextDiscovery time.Time
	watcher       eventWatcher
	watcherStop   func()
	watches       *watchReconciler // registers notifications off the loop
	offCycle      *offCycleQueue
	lastErr       map[string]string // collector -> last error logged
	untracked     map[string]uint64 // cgroupfs reason -> count at the last discovery
	scratchPaths  []string

	ruleWatch *ruleDirWatch

	enrichers []Enricher
	onStop    []func()

	// The Forward client shared by the extensions that forward (see
	// Agent.forwarder).
	fwdOnce sync.Once
	fwd     *telemetry.Forwarder
	fwdErr  error

	runOnce sync.Once
}

// New builds an agent: registry, HTTP routes and self-metrics. Nothing is
// read or opened until Run.
func New(opts Options) (*Agent, error) {
	if opts.Config == nil {
		return nil, errors.New("agent: no config")
	}
	if err := opts.Config.Validate(); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	a := &Agent{
		log:       log,
		logLevel:  opts.LogLevel,
		reload:    opts.Reload,
		info:      ReadBuildInfo(),
		reg:       newRegistry(),
		mux:       http.NewServeMux(),
		health:    newHealth(),
		snaps:     newSnapshotBuffers(),
		reloadCh:  make(chan struct{}, 1),
		started:   make(chan struct{}),
		offCycle:  newOffCycleQueue(),
		lastErr:   map[string]string{},
		untracked: map[string]uint64{},
		stats:     newCollectorStats(),
	}
	a.cfg.Store(opts.Config)
	a.metrics = newSelfMetrics(a.reg, a.info)
	a.reloads = newReloadMetrics(a.reg)
	a.health.onChange = func(ready bool, degraded map[string]bool) {
		if ready {
			a.metrics.ready.Set(1)
		} else {
			a.metrics.ready.Set(0)
		}
		for r, on := range degraded {
			v := 0.0
			if on {
				v = 1
			}
			a.metrics.degraded.WithLabelValues(r).Set(v)
		}
	}
	a.health.setNotReady("snapshot", "no snapshot yet")
	a.reg.MustRegister(newSnapshotCollector(a.snaps, false), a.stats)
	if err := a.loadToken(opts.Config); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a.routes()
	return a, nil
}

// Config returns the configuration in force.
func (a *Agent) Config() *config.Config { return a.cfg.Load() }

// Registry is where other components register their metrics; /metrics
// serves it.
func (a *Agent) Registry() prometheus.Registerer { return a.reg }

// Logger is the agent's logger.
func (a *Agent) Logger() *slog.Logger { return a.log }

// Acquire returns the latest full snapshot, held intact until release is
// called (release promptly: the loop waits for it before reusing the
// buffer). It returns nil before the first snapshot. A caller that keeps
// data past release must copy it.
func (a *Agent) Acquire() (snap *collectors.Snapshot, release func()) { return a.snaps.Acquire() }

// SetNotReady marks component as not ready for reason ("" clears it);
// /readyz lists every such component. For example the journal owner sets
// "journal" while its database is unavailable, and pause sets "paused".
func (a *Agent) SetNotReady(component, reason string) { a.health.setNotReady(component, reason) }

// SetDegraded reports that the agent runs without something it wants
// (detail says what; "" clears it): /readyz lists it and
// vigil_degraded{reason} is 1, but the agent stays ready.
func (a *Agent) SetDegraded(reason, detail string) { a.health.setDegraded(reason, detail) }

// Started is closed once the HTTP listener is bound; Addr is valid then.
func (a *Agent) Started() <-chan struct{} { return a.started }

// Addr is the bound HTTP address ("" before Started).
func (a *Agent) Addr() string {
	if p := a.addr.Load(); p != nil {
		return *p
	}
	return ""
}

// Reload asks the running agent to reload its configuration; a config that
// fails to load or validate is logged and the last good one keeps running.
func (a *Agent) Reload() {
	select {
	case a.reloadCh <- struct{}{}:
	default: // a reload is already pending
	}
}

// Run starts the agent and blocks until ctx is done, then drains: the HTTP
// server finishes in-flight requests, notifications stop and collectors are
// closed. It returns an error only if the agent could not start.
func (a *Agent) Run(ctx context.Context) error {
	first := false
	a.runOnce.Do(func() { first = true })
	if !first {
		return errors.New("agent: Run called twice")
	}
	cfg := a.cfg.Load()
	a.protectSelf(cfg)

	s, err := newSampler(cfg, a.log)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	a.sampler = s
	a.stats.cgroups.Store(s.cgroups)
	defer func() {
		if err := s.close(); err != nil {
			a.log.Warn("closing collectors", "err", err)
		}
	}()
	factsCtx, cancelFacts := context.WithTimeout(ctx, 5*time.Second)
	if facts, err := s.node.Facts(factsCtx); err != nil {
		a.log.Warn("host facts unavailable", "err", err)
	} else {
		a.facts.Store(&facts)
		a.log.Info("host", "hostname", facts.Hostname, "kernel", facts.KernelVersion, "platform", facts.Platform+" "+facts.PlatformVersion,
			"cpus", facts.CPUs, "mem_total_bytes", facts.MemTotalBytes, "virtualization", facts.Virtualization)
	}
	cancelFacts()
	h := s.hierarchy()
	a.log.Info("vigil starting", "version", a.info.Version, "revision", a.info.Revision,
		"cgroup_mode", h.Mode, "cgroup_version", h.Version, "memory_root", h.MemoryRoot,
		"host_root", cfg.HostRoot, "tick", cfg.Tick, "dry_run", cfg.Remediation.DryRun)

	if err := a.buildPipeline(cfg, h); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	running := false
	defer func() {
		if !running {
			a.pipeline.closeUnstarted() // release the journal for a retry
		}
	}()

	if err := a.setupExtensions(); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	defer func() {
		for i := len(a.onStop) - 1; i >= 0; i-- {
			a.onStop[i]()
		}
	}()

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("agent: listen on %s: %w", cfg.Listen, err)
	}
	addr := ln.Addr().String()
	a.addr.Store(&addr)
	srv := a.newServer()
	serveDone := make(chan error, 1)
	go func() { serveDone <- srv.Serve(ln) }()
	close(a.started)
	a.log.Info("serving HTTP", "addr", addr)

	running = true
	stopPipeline := a.pipeline.start(ctx, a)
	a.loop(ctx)

	// Drain: the loop has stopped; stop notifications, finish in-flight
	// requests (they may read the journal), then release what remediation
	// holds and close the journal.
	a.log.Info("vigil stopping")
	a.SetNotReady("agent", "stopping")
	a.stopWatcher()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		a.log.Warn("HTTP shutdown", "err", err)
		srv.Close()
	}
	if err := <-serveDone; err != nil && !errors.Is(err, http.ErrServerClosed) {
		a.log.Warn("HTTP server", "err", err)
	}
	stopPipeline()
	return nil
}

// protectSelf applies the self-protection knobs; what cannot be applied
// leaves the agent running, degraded.
func (a *Agent) protectSelf(cfg *config.Config) {
	switch env := os.Getenv("GOMEMLIMIT"); {
	case env != "":
		// The runtime applied it at start; the operator's word wins.
		a.log.Info("Go memory limit from GOMEMLIMIT", "GOMEMLIMIT", env, "config_ignored", cfg.Self.MemoryLimitBytes)
	case cfg.Self.MemoryLimitBytes > 0:
		debug.SetMemoryLimit(cfg.Self.MemoryLimitBytes)
	}
	a.protectSelfCgroup(cfg)
	if cfg.Self.OOMScoreAdj != 0 {
		v := strconv.Itoa(cfg.Self.OOMScoreAdj)
		if err := os.WriteFile("/proc/self/oom_score_adj", []byte(v), 0); err != nil {
			a.log.Warn("cannot set own oom_score_adj (needs CAP_SYS_RESOURCE to lower it)", "value", v, "err", err)
			a.SetDegraded("oom_score_adj", err.Error())
		} else {
			a.SetDegraded("oom_score_adj", "")
		}
	}
}

// loop is the agent's one goroutine that collects and processes snapshots.
func (a *Agent) loop(ctx context.Context) {
	cfg := a.cfg.Load()
	a.startWatcher(ctx, cfg)
	a.watchRuleDirs(ctx, cfg.Rules.Dirs)
	defer a.stopRuleWatch()
	a.tick(time.Now(), nil)
	ticker := time.NewTicker(cfg.Tick)
	defer ticker.Stop()
	// debounce fires when events held back by events.min_interval or the
	// off-cycle budget are due.
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	var debounceC <-chan time.Time
	flush := func(now time.Time) {
		if next := a.flushEvents(now); next.IsZero() {
			debounce.Stop()
			debounceC = nil
		} else {
			debounce.Reset(time.Until(next))
			debounceC = debounce.C
		}
	}
	for {
		var evCh <-chan collectors.Event
		if a.watcher != nil {
			evCh = a.watcher.Events()
		}
		select {
		case <-ctx.Done():
			return
		case now := <-ticker.C:
			a.tick(now, nil)
		case ev, ok := <-evCh:
			if !ok {
				// The watcher stopped on its own: carry on with ticks only.
				a.log.Warn("kernel notifications stopped; relying on ticks")
				a.SetDegraded("events", "event watcher stopped")
				a.stopWatcher()
				continue
			}
			a.onEvent(ev)
			a.drainEvents(evCh)
			flush(time.Now())
		case now := <-debounceC:
			flush(now)
		case <-a.reloadCh:
			if old, cur := cfg, a.applyReload(ctx); cur != old {
				cfg = cur
				ticker.Reset(cfg.Tick)
			}
		}
	}
}

// tick takes a full snapshot, publishes it and runs it through the
// pipeline. trigger is the event that caused an off-cycle full snapshot.
func (a *Agent) tick(now time.Time, trigger *collectors.Event) {
	start := time.Now()
	cfg := a.cfg.Load()
	discovered := false
	if !now.Before(a.nextDiscovery) {
		discovered = true
		added, removed, err := a.sampler.discover()
		a.noteError(collectorCgroups, "discover", err)
		if added > 0 || removed > 0 {
			a.log.Debug("cgroups discovered", "added", added, "removed", removed)
		}
		a.trackLimits()
		a.nextDiscovery = now.Add(cfg.DiscoveryInterval)
	}
	var errs sampleErrors
	snap := a.snaps.fill(func(dst *collectors.Snapshot) {
		errs = a.sampler.sweep(now, dst)
		dst.Trigger = trigger
		a.enrich(dst)
	})
	if !discovered || errs.cgroups != nil {
		a.noteError(collectorCgroups, "sweep", errs.cgroups)
	}
	a.noteError(collectorNode, "collect", errs.node)
	a.health.setNotReady("snapshot", "")
	a.metrics.cgroupsTracked.Set(float64(len(snap.Cgroups)))
	a.metrics.lastTick.Set(float64(snap.Time.UnixNano()) / 1e9)
	if discovered {
		a.reconcileWatches(snap)
	}
	a.pipeline.process(snap, now)

	elapsed := time.Since(start)
	a.metrics.tickDuration.Observe(elapsed.Seconds())
	if trigger == nil && elapsed > cfg.Tick {
		// The ticker drops the ticks that fell inside this one.
		a.metrics.tickOverruns.Add(float64(elapsed / cfg.Tick))
	}
}

// noteError counts a collector error, marks the collector not ready while
// it fails, and logs each distinct error once.
func (a *Agent) noteError(collector, op string, err error) {
	if err == nil {
		if a.lastErr[collector] != "" {
			a.log.Info("collector recovered", "collector", collector)
			delete(a.lastErr, collector)
		}
		a.health.setNotReady(collector, "")
		return
	}
	a.metrics.collectionErrors.WithLabelValues(collector).Inc()
	msg := op + ": " + err.Error()
	a.health.setNotReady(collector, msg)
	if a.lastErr[collector] != msg {
		a.lastErr[collector] = msg
		a.log.Warn("collection failed", "collector", collector, "op", op, "err", err)
	}
}

// startWatcher starts kernel notifications if enabled.
func (a *Agent) startWatcher(ctx context.Context, cfg *config.Config) {
	if !cfg.Events.Enabled || a.watcher != nil {
		return
	}
	w, err := events.NewWatcher(a.log)
	if err != nil {
		a.log.Warn("kernel notifications unavailable; relying on ticks", "err", err)
		a.SetDegraded("events", err.Error())
		a.metrics.collectionErrors.WithLabelValues(collectorEvents).Inc()
		return
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := w.Run(wctx); err != nil && !errors.Is(err, context.Canceled) {
			a.log.Warn("event watcher stopped", "err", err)
		}
	}()
	a.watcher = w
	a.stats.watcher.Store(w)
	a.watches = newWatchReconciler(a, w)
	reconcileDone := make(chan struct{})
	go func() {
		defer close(reconcileDone)
		a.watches.run(wctx)
	}()
	a.watcherStop = func() {
		cancel()
		<-done
		// A registration stuck in the kernel must not hold up a stop.
		select {
		case <-reconcileDone:
		case <-time.After(2 * time.Second):
			a.log.Warn("kernel notification registration still blocked at stop")
		}
	}
	a.SetDegraded("events", "")
	if cfg.Events.PSI.Enabled {
		file := filepath.Join(cfg.HostRoot, "proc", "pressure", "memory")
		if err := w.WatchPressure("", file, cfg.Events.PSI.Stall, cfg.Events.PSI.Window); err != nil {
			a.log.Warn("node PSI trigger refused", "file", file, "err", err)
			a.SetDegraded("psi_trigger", err.Error())
		} else {
			a.SetDegraded("psi_trigger", "")
		}
	}
}

func (a *Agent) stopWatcher() {
	if a.watcherStop != nil {
		a.watcherStop()
	}
	a.watcher, a.watcherStop, a.watches = nil, nil, nil
	a.metrics.eventWatches.Set(0)
}

// reconcileWatches computes which cgroups need notifications: those with a
// limit. On v1 each gets a usage threshold at threshold_ratio of its
// effective limit and an OOM notification; on v2 a memory.events watch. The
// registrations themselves run on the reconciler's goroutine: a write to a
// v1 cgroup.event_control can block in the kernel, and the loop must keep
// ticking whatever happens there.
func (a *Agent) reconcileWatches(snap *collectors.Snapshot) {
	if a.watches == nil {
		return
	}
	ev := a.cfg.Load().Events
	want := make(map[string]uint64)
	limited := false
	for i := range snap.Cgroups {
		cg := &snap.Cgroups[i]
		lim := cg.Memory.EffectiveLimitBytes
		if lim == collectors.Unlimited || lim == 0 {
			continue
		}
		if len(want) >= ev.MaxWatchedCgroups {
			limited = true
			break
		}
		var threshold uint64
		if snap.Hierarchy.Version == 1 && ev.Thresholds {
			threshold = uint64(float64(lim) * ev.ThresholdRatio)
		}
		want[cg.Path] = threshold
	}
	a.watches.submit(watchRequest{version: snap.Hierarchy.Version, want: want, limited: limited, events: ev})
}

func (a *Agent) watch(version int, path string, threshold uint64, ev config.Events) error {
	dir := a.sampler.dir(path)
	if version == 2 {
		if ev.OOM {
			return a.watcher.WatchMemoryEvents(path, dir)
		}
		return nil
	}
	if threshold > 0 {
		if err := a.watcher.WatchThreshold(path, dir, threshold); err != nil {
			return err
		}
	}
	if ev.OOM {
		return a.watcher.WatchOOM(path, dir)
	}
	return nil
}

func (a *Agent) onEvent(ev collectors.Event) {
	a.metrics.eventsReceived.WithLabelValues(ev.Kind).Inc()
	a.offCycle.add(ev)
}

// drainEvents takes every event already queued, so a burst costs one
// off-cycle snapshot.
func (a *Agent) drainEvents(ch <-chan collectors.Event) {
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				return
			}
			a.onEvent(ev)
		default:
			return
		}
	}
}

// flushEvents takes the off-cycle snapshot the due events ask for (see
// offCycleQueue): a full one for a node-wide event, else a partial one of
// the cgroups concerned, and runs it through the pipeline. It returns when
// the events still held back are due (zero: none).
func (a *Agent) flushEvents(now time.Time) time.Time {
	b, next := a.offCycle.take(now, a.cfg.Load().Events.MinInterval, a.scratchPaths)
	a.scratchPaths = b.paths
	switch {
	case b.full:
		a.metrics.offCycle.Inc()
		a.tick(now, b.trigger)
	case len(b.paths) > 0:
		a.metrics.offCycle.Inc()
		var node *collectors.NodeSample
		if latest := a.snaps.latest(); latest != nil {
			node = &latest.Node
		}
		err := a.sampler.sweepPaths(now, b.paths, node, &a.partial)
		a.partial.Trigger = b.trigger
		a.enrich(&a.partial)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			a.noteError(collectorCgroups, "off-cycle sweep", err)
		}
		a.pipeline.process(&a.partial, now)
	}
	return next
}

// applyReload loads the new configuration and applies what can change
// while running. It returns the configuration in force afterwards.
func (a *Agent) applyReload(ctx context.Context) *config.Config {
	old := a.cfg.Load()
	if a.reload == nil {
		return old
	}
	next, err := a.reload()
	if err == nil {
		err = next.Validate()
	}
	if err != nil {
		a.reloads.failed(err)
		a.log.Error("config reload rejected; keeping the last good config", "err", err)
		return old
	}
	// Fields bound at start keep their running value.
	var restart []string
	keep := func(name string, changed bool) {
		if changed {
			restart = append(restart, name)
		}
	}
	keep("listen", next.Listen != old.Listen)
	keep("host_root", next.HostRoot != old.HostRoot)
	keep("growth_window", next.GrowthWindow != old.GrowthWindow)
	keep("max_cgroups", next.MaxCgroups != old.MaxCgroups)
	keep("stat_max_age", next.StatMaxAge != old.StatMaxAge)
	keep("stat_near_limit_ratio", next.StatNearLimitRatio != old.StatNearLimitRatio)
	keep("log.format", next.Log.Format != old.Log.Format)
	keep("rules.shadow", next.Rules.Shadow != old.Rules.Shadow)
	keep("remediation.journal", next.Remediation.Journal != old.Remediation.Journal)
	next.Listen, next.HostRoot, next.GrowthWindow, next.MaxCgroups, next.Log.Format =
		old.Listen, old.HostRoot, old.GrowthWindow, old.MaxCgroups, old.Log.Format
	next.StatMaxAge, next.StatNearLimitRatio = old.StatMaxAge, old.StatNearLimitRatio
	next.Rules.Shadow, next.Remediation.Journal = old.Rules.Shadow, old.Remediation.Journal
	keep("webhooks.outbound", !reflect.DeepEqual(next.Webhooks.Outbound, old.Webhooks.Outbound))
	keep("forward", next.Forward != old.Forward)
	keep("tracing", !reflect.DeepEqual(next.Tracing, old.Tracing))
	keep("kmsg", next.Kmsg != old.Kmsg)
	next.Webhooks.Outbound, next.Forward, next.Tracing, next.Kmsg = old.Webhooks.Outbound, old.Forward, old.Tracing, old.Kmsg
	if len(restart) > 0 {
		a.log.Warn("config fields changed that apply only after a restart", "fields", strings.Join(restart, ","))
	}
	if err := a.loadToken(next); err != nil {
		a.reloads.failed(err)
		a.log.Error("config reload rejected; keeping the last good config", "err", err)
		return old
	}
	if err := a.pipeline.reload(next); err != nil {
		a.reloads.failed(err)
		a.log.Error("config reload rejected; keeping the last good config", "err", err)
		_ = a.loadToken(old)
		return old
	}
	a.cfg.Store(next)
	if a.logLevel != nil {
		a.logLevel.Set(ParseLevel(next.Log.Level))
	}
	a.watchRuleDirs(ctx, next.Rules.Dirs)
	if next.Events != old.Events {
		a.stopWatcher()
		a.startWatcher(ctx, next)
		a.nextDiscovery = time.Time{} // re-register at the next tick
	}
	a.reloads.succeeded()
	a.log.Info("config reloaded", "tick", next.Tick, "dry_run", next.Remediation.DryRun)
	return next
}

func (a *Agent) loadToken(cfg *config.Config) error {
	tok, err := cfg.API.ReadToken()
	if err != nil {
		return err
	}
	a.token.Store(&tok)
	return nil
}

// ParseLevel maps a log.level value to a slog level (info if unknown).
func ParseLevel(s string) slog.Level {
	switch s {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// reloadMetrics report config reloads like Prometheus does.
type reloadMetrics struct {
	success   prometheus.Gauge
	timestamp prometheus.Gauge
}

func newReloadMetrics(reg prometheus.Registerer) *reloadMetrics {
	m := &reloadMetrics{
		success: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigil_config_last_reload_successful",
			Help: "1 if the last configuration reload succeeded (or none was tried).",
		}),
		timestamp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigil_config_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last successful configuration load.",
		}),
	}
	reg.MustRegister(m.success, m.timestamp)
	m.succeeded()
	return m
}

func (m *reloadMetrics) succeeded() {
	m.success.Set(1)
	m.timestamp.SetToCurrentTime()
}

func (m *reloadMetrics) failed(error) { m.success.Set(0) }

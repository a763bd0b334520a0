package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// SideBySideOptions configure one side-by-side run.
type SideBySideOptions struct {
	Counts   []int         // cgroups per round
	Duration time.Duration // per peer per round
	Warmup   time.Duration // excluded from CPU and steady RSS
	Peers    []string      // names from peerNames
	// BuildPeers builds or installs peers that are not cached; without it
	// an uncached cAdvisor is skipped (reported in Skipped).
	BuildPeers bool
	WorkDir    string
	// StartupTimeout bounds a peer's start to its first good scrape; a peer
	// that misses it is reported (Note) and the run goes on.
	StartupTimeout time.Duration
	// VigilBase is a git revision of this repository: when set, peer
	// "vigil-base" is vigil built from it, measured right after "vigil", so
	// that a change is compared before/after in the same run.
	VigilBase string
}

var peerNames = []string{"vigil", "cadvisor-1s", "cadvisor-10s", "node_exporter"}

// basePeer is vigil built from SideBySideOptions.VigilBase.
const basePeer = "vigil-base"

// isVigil tells the peers that are vigil (this tree or the base revision).
func isVigil(name string) bool { return name == "vigil" || name == basePeer }

// PeerResult is one peer measured over one round.
type PeerResult struct {
	Peer         string  `json:"peer"`
	Version      string  `json:"version"`
	Cgroups      int     `json:"cgroups"`
	CPUPercent   float64 `json:"cpu_percent"` // of one core
	PeakRSSBytes uint64  `json:"peak_rss_bytes"`
	SteadyRSS    uint64  `json:"steady_rss_bytes"`
	// SteadyAnonRSS is the same median of RssAnon: the RSS less the pages
	// of the program's file (its text, which a big binary touches at start)
	// and shared memory.
	SteadyAnonRSS uint64  `json:"steady_anon_rss_bytes"`
	ScrapeP50     float64 `json:"scrape_p50_ms"`
	ScrapeP95     float64 `json:"scrape_p95_ms"`
	ScrapeP99     float64 `json:"scrape_p99_ms"`
	Scrapes       int     `json:"scrapes"`
	ScrapeErrors  int     `json:"scrape_errors"`
	Series        int     `json:"series"`
	BodyBytes     int     `json:"body_bytes"`
	StartupMillis float64 `json:"startup_ms"` // start to first good scrape
	Seconds       float64 `json:"seconds"`    // measured window
	// vigil only: mean tick duration over the window (sweep + rules +
	// remediation bookkeeping) from vigil_tick_duration_seconds, and the
	// cgroups it tracked (every cgroup of the host, not only the bench's).
	TickMeanMillis float64 `json:"tick_mean_ms,omitempty"`
	Tracked        int     `json:"cgroups_tracked,omitempty"`
	// vigil only: share of the per-cgroup reads of the window that reused
	// the last memory.stat (vigil_cgroup_collector_stat_reads_total;
	// absent before stat_max_age existed).
	StatReused *float64 `json:"stat_reused_share,omitempty"`
	// Note says why a peer has no numbers (e.g. it never served metrics).
	Note string `json:"note,omitempty"`
}

// SideBySideReport is the whole run.
type SideBySideReport struct {
	Started  time.Time    `json:"started"`
	Duration string       `json:"duration"`
	Results  []PeerResult `json:"results"`
	Skipped  []string     `json:"skipped,omitempty"`
	// LoadAvg is /proc/loadavg at the start and the end: other work on
	// the machine shows in scrape latencies (CPU time is what it disturbs
	// least).
	LoadAvg []string `json:"loadavg"`
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}

func cmdSideBySide(ctx context.Context, log *slog.Logger, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("sidebyside", flag.ContinueOnError)
	counts := fs.String("n", "100,500,1000,5000", "comma-separated cgroup counts")
	dur := fs.Duration("duration", 60*time.Second, "measured time per peer and count")
	warm := fs.Duration("warmup", 0, "time after the first good scrape excluded from CPU and steady RSS (default duration/6, at most 10s)")
	peers := fs.String("peers", strings.Join(peerNames, ","), "peers to run")
	build := fs.Bool("build", true, "build or install peers that are not cached")
	jsonOut := fs.String("json", "", "also write the report as JSON to this file")
	startup := fs.Duration("startup-timeout", 2*time.Minute, "longest a peer may take to serve its first metrics")
	base := fs.String("vigil-base", "", "also measure vigil built from this git `revision` (peer vigil-base, right after vigil): before/after in the same run")
	if err := fs.Parse(args); err != nil {
		return err
	}
	opts := SideBySideOptions{Duration: *dur, Warmup: *warm, BuildPeers: *build, Peers: strings.Split(*peers, ","), StartupTimeout: *startup, VigilBase: *base}
	for _, s := range strings.Split(*counts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 0 {
			return fmt.Errorf("-n: bad count %q", s)
		}
		opts.Counts = append(opts.Counts, n)
	}
	rep, err := SideBySide(ctx, log, opts)
	if rep != nil {
		writeSideBySide(stdout, rep)
		if *jsonOut != "" {
			b, _ := json.MarshalIndent(rep, "", "  ")
			if werr := os.WriteFile(*jsonOut, b, 0o644); werr != nil {
				return werr
			}
		}
	}
	return err
}

// SideBySide runs every peer alone, one after the other, over the same
// cgroups, for each count.
func SideBySide(ctx context.Context, log *slog.Logger, opts SideBySideOptions) (*SideBySideReport, error) {
	if opts.StartupTimeout == 0 {
		opts.StartupTimeout = 2 * time.Minute
	}
	if opts.Warmup == 0 {
		opts.Warmup = min(opts.Duration/6, 10*time.Second)
	}
	for _, p := range opts.Peers {
		if !slices.Contains(peerNames, p) && p != basePeer {
			return nil, fmt.Errorf("unknown peer %q (known: %s, %s)", p, strings.Join(peerNames, ", "), basePeer)
		}
	}
	if opts.VigilBase != "" && !slices.Contains(opts.Peers, basePeer) {
		i := slices.Index(opts.Peers, "vigil") + 1 // 0 without vigil: first
		opts.Peers = slices.Insert(slices.Clone(opts.Peers), i, basePeer)
	}
	work := opts.WorkDir
	if work == "" {
		var err error
		if work, err = os.MkdirTemp("", "vigil-bench-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(work)
	}
	rep := &SideBySideReport{Started: time.Now().UTC(), Duration: opts.Duration.String(), LoadAvg: []string{loadAvg()}}
	defer func() { rep.LoadAvg = append(rep.LoadAvg, loadAvg()) }()

	// Resolve the binaries first: a missing build fails before any cgroup.
	specs := map[string]peer{}
	for _, name := range opts.Peers {
		p, err := resolvePeer(ctx, log, name, opts, work)
		if errors.Is(err, errNotCached) {
			rep.Skipped = append(rep.Skipped, fmt.Sprintf("%s: %v", name, err))
			log.Warn("skipping peer", "peer", name, "err", err)
			continue
		}
		if err != nil {
			return rep, err
		}
		specs[name] = p
	}

	for _, n := range opts.Counts {
		f, err := newFarm()
		if err != nil {
			return rep, err
		}
		start := time.Now()
		err = f.addChildren(n)
		log.Info("cgroups ready", "count", n, "parent", f.Rel, "took", time.Since(start).Round(time.Millisecond))
		if err == nil {
			for _, name := range opts.Peers {
				p, ok := specs[name]
				if !ok {
					continue
				}
				var res PeerResult
				res, err = measurePeer(ctx, log, p, n, opts, work)
				if errors.Is(err, errStartupExit) {
					// A peer that dies while it first walks the hierarchy
					// (cAdvisor exits when a cgroup it is about to watch
					// vanishes, e.g. other jobs' cgroups on a shared host)
					// gets one more start; the first failure is logged.
					log.Warn("peer exited during start-up; starting it once more", "peer", name, "cgroups", n, "err", err)
					res, err = measurePeer(ctx, log, p, n, opts, work)
				}
				if errors.Is(err, errNoStart) {
					res.Note, err = err.Error(), nil
					log.Warn("peer never served metrics", "peer", name, "cgroups", n, "err", res.Note)
				}
				if err != nil {
					break
				}
				rep.Results = append(rep.Results, res)
			}
		}
		if cerr := f.Close(); cerr != nil && err == nil {
			err = cerr
		}
		if err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// resolvePeer builds (or finds) a peer's binary and its command line.
func resolvePeer(ctx context.Context, log *slog.Logger, name string, opts SideBySideOptions, work string) (peer, error) {
	build := opts.BuildPeers
	addr, err := freePort()
	if err != nil {
		return peer{}, err
	}
	switch name {
	case "vigil", basePeer:
		bin, version := "", "this tree"
		if name == "vigil" {
			bin, err = buildVigil(ctx, log, work)
		} else {
			if opts.VigilBase == "" {
				return peer{}, fmt.Errorf("peer %s needs -vigil-base", basePeer)
			}
			bin, version, err = buildVigilAt(ctx, log, opts.VigilBase, filepath.Join(work, basePeer))
		}
		if err != nil {
			return peer{}, err
		}
		dir := filepath.Join(work, name+"-state")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return peer{}, err
		}
		// The default configuration, pointed at a throw-away journal.
		cfg := filepath.Join(dir, "vigil.yaml")
		if err := os.WriteFile(cfg, []byte("remediation:\n  journal:\n    path: "+filepath.Join(dir, "journal.db")+"\n"), 0o644); err != nil {
			return peer{}, err
		}
		return peer{Name: name, Version: version, Addr: addr, Path: "/metrics", Dir: dir,
			Argv: []string{bin, "run", "--config", cfg, "--listen", addr, "--tick", "1s"}}, nil
	case "cadvisor-1s", "cadvisor-10s":
		bin, err := cadvisorBinary(ctx, log, build)
		if err != nil {
			return peer{}, err
		}
		argv := []string{bin, "-listen", addr}
		if name == "cadvisor-1s" {
			// Every container housekept every second, no back-off.
			argv = append(argv, "-housekeeping_interval=1s", "-allow_dynamic_housekeeping=false")
		} else {
			// The kubelet's settings.
			argv = append(argv, "-housekeeping_interval=10s", "-max_housekeeping_interval=15s", "-allow_dynamic_housekeeping=true")
		}
		return peer{Name: name, Version: cadvisorVersion, Addr: addr, Path: "/metrics", Dir: work, Argv: argv}, nil
	case "node_exporter":
		bin, version, err := nodeExporterBinary(ctx, log, build)
		if err != nil {
			return peer{}, err
		}
		return peer{Name: name, Version: version, Addr: addr, Path: "/metrics", Dir: work,
			Argv: []string{bin, "--web.listen-address=" + addr}}, nil
	}
	return peer{}, fmt.Errorf("unknown peer %q", name)
}

var (
	errNoStart     = errors.New("no metrics served")
	errStartupExit = errors.New("exited during start-up")
)

// measurePeer starts p, waits for its first good scrape, then scrapes once
// a second for warmup+duration while sampling its CPU time and RSS.
func measurePeer(ctx context.Context, log *slog.Logger, p peer, n int, opts SideBySideOptions, work string) (PeerResult, error) {
	res := PeerResult{Peer: p.Name, Version: p.Version, Cgroups: n}
	proc, err := startPeer(p, filepath.Join(work, fmt.Sprintf("%s-%d.log", p.Name, n)))
	if err != nil {
		return res, err
	}
	defer proc.stop()
	sc := newScraper(p.Addr, p.Path)
	started := time.Now()

	// Ready: first successful scrape with series, within 2 minutes.
	for {
		if proc.exited() {
			return res, fmt.Errorf("%w: %w", errStartupExit, proc.exitError(p.Name, "before serving metrics"))
		}
		if _, series, _, err := sc.scrape(ctx); err == nil && series > 0 {
			break
		}
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		if time.Since(started) > opts.StartupTimeout {
			return res, fmt.Errorf("%s: %w within %v", p.Name, errNoStart, opts.StartupTimeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	res.StartupMillis = ms(time.Since(started))
	log.Info("measuring", "peer", p.Name, "cgroups", n, "startup", time.Since(started).Round(time.Millisecond))

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	end := time.Now().Add(opts.Warmup + opts.Duration)
	measureFrom := time.Now().Add(opts.Warmup)
	var (
		lats      []time.Duration
		rss, anon []uint64
		cpu0      uint64
		t0        time.Time
		haveStart bool
		tick0     [2]float64 // vigil_tick_duration_seconds sum, count
		tick1     [2]float64
		stat0     [2]float64 // vigil_cgroup_collector_stat_reads_total read, reused
		stat1     [2]float64
	)
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-tick.C:
		}
		if proc.exited() {
			return res, proc.exitError(p.Name, "while measured")
		}
		now := time.Now()
		if !haveStart && !now.Before(measureFrom) {
			c, err := cpuTicks(proc.pid())
			if err != nil {
				return res, err
			}
			cpu0, t0, haveStart = c, now, true
		}
		lat, series, body, err := sc.scrapeBody(ctx)
		if err != nil {
			res.ScrapeErrors++
		} else {
			lats = append(lats, lat)
			res.Series, res.BodyBytes = series, len(body)
			if isVigil(p.Name) {
				sum, ok1 := sampleValue(body, "vigil_tick_duration_seconds_sum")
				cnt, ok2 := sampleValue(body, "vigil_tick_duration_seconds_count")
				if tr, ok := sampleValue(body, "vigil_cgroups_tracked"); ok {
					res.Tracked = int(tr)
				}
				if ok1 && ok2 {
					if tick0[1] == 0 && haveStart {
						tick0 = [2]float64{sum, cnt}
					}
					tick1 = [2]float64{sum, cnt}
				}
				read, ok1 := sampleValue(body, `vigil_cgroup_collector_stat_reads_total{result="read"}`)
				reused, ok2 := sampleValue(body, `vigil_cgroup_collector_stat_reads_total{result="reused"}`)
				if ok1 && ok2 {
					if stat0 == [2]float64{} && haveStart {
						stat0 = [2]float64{read, reused}
					}
					stat1 = [2]float64{read, reused}
				}
			}
		}
		if haveStart {
			r, _, a, err := memStatusAnon(proc.pid())
			if err == nil {
				rss = append(rss, r)
				anon = append(anon, a)
			}
		}
	}
	cpu1, err := cpuTicks(proc.pid())
	if err != nil {
		return res, err
	}
	_, hwm, err := memStatus(proc.pid())
	if err != nil {
		return res, err
	}
	wall := time.Since(t0)
	res.Seconds = wall.Seconds()
	res.CPUPercent = 100 * float64(cpu1-cpu0) / clockTicks / wall.Seconds()
	// VmHWM is updated lazily by the kernel (per-thread RSS counters are
	// folded in periodically): the peak is the larger of it and any sample.
	res.PeakRSSBytes = max(hwm, slices.Max(append(rss, 0)))
	if tick1[1] > tick0[1] {
		res.TickMeanMillis = 1000 * (tick1[0] - tick0[0]) / (tick1[1] - tick0[1])
	}
	if reads := stat1[0] - stat0[0] + stat1[1] - stat0[1]; reads > 0 {
		share := (stat1[1] - stat0[1]) / reads
		res.StatReused = &share
	}
	// Steady: the median of the second half of the window.
	res.SteadyRSS = medianU64(rss[len(rss)/2:])
	res.SteadyAnonRSS = medianU64(anon[len(anon)/2:])
	slices.Sort(lats)
	res.Scrapes = len(lats)
	res.ScrapeP50, res.ScrapeP95, res.ScrapeP99 = ms(percentile(lats, .50)), ms(percentile(lats, .95)), ms(percentile(lats, .99))
	log.Info("measured", "peer", p.Name, "cgroups", n, "cpu_percent", fmt.Sprintf("%.2f", res.CPUPercent),
		"steady_rss_mib", res.SteadyRSS>>20, "scrape_p95_ms", fmt.Sprintf("%.2f", res.ScrapeP95), "series", res.Series)
	return res, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// writeSideBySide prints the report as Markdown tables, one per count, with
// the vigil/peer ratios of the same run.
func writeSideBySide(w io.Writer, rep *SideBySideReport) {
	fmt.Fprintf(w, "Side by side, %s per peer, 1 Hz scrape, started %s\n\n", rep.Duration, rep.Started.Format(time.RFC3339))
	var counts []int
	for _, r := range rep.Results {
		if !slices.Contains(counts, r.Cgroups) {
			counts = append(counts, r.Cgroups)
		}
	}
	for _, n := range counts {
		fmt.Fprintf(w, "#### %d cgroups\n\n", n)
		fmt.Fprintln(w, "| peer | version | CPU % | peak RSS MiB | steady RSS MiB | steady anon RSS MiB | scrape p50 ms | p95 ms | p99 ms | series | body KiB | start-up ms |")
		fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
		var vigil, base *PeerResult
		for i, r := range rep.Results {
			if r.Cgroups != n {
				continue
			}
			if r.Note != "" {
				fmt.Fprintf(w, "| %s | %s | %s | | | | | | | | | |\n", r.Peer, r.Version, r.Note)
				continue
			}
			switch r.Peer {
			case "vigil":
				vigil = &rep.Results[i]
			case basePeer:
				base = &rep.Results[i]
			}
			fmt.Fprintf(w, "| %s | %s | %.2f | %.1f | %.1f | %.1f | %.2f | %.2f | %.2f | %d | %d | %.0f |\n", r.Peer, r.Version, r.CPUPercent,
				mib(r.PeakRSSBytes), mib(r.SteadyRSS), mib(r.SteadyAnonRSS), r.ScrapeP50, r.ScrapeP95, r.ScrapeP99, r.Series, r.BodyBytes>>10, r.StartupMillis)
		}
		if vigil != nil {
			fmt.Fprintln(w)
			for _, v := range []*PeerResult{vigil, base} {
				if v == nil {
					continue
				}
				fmt.Fprintf(w, "%s tracked %d cgroups (the whole host, the bench's included); mean tick %.2f ms (%.2f µs per cgroup)", v.Peer,
					v.Tracked, v.TickMeanMillis, 1000*v.TickMeanMillis/float64(max(v.Tracked, 1)))
				if v.StatReused != nil {
					fmt.Fprintf(w, "; memory.stat reused (not re-read) in %.1f %% of cgroup reads", 100**v.StatReused)
				}
				fmt.Fprintln(w, ".")
			}
			fmt.Fprintln(w)
			for _, v := range []*PeerResult{vigil, base} {
				if v == nil {
					continue
				}
				for _, r := range rep.Results {
					if r.Cgroups != n || isVigil(r.Peer) && (v == base || r.Peer == "vigil") || r.Note != "" {
						continue
					}
					fmt.Fprintf(w, "- %s/%s: CPU %s, steady RSS %s, scrape p95 %s (%s faster)\n", v.Peer, r.Peer,
						ratio(v.CPUPercent, r.CPUPercent), ratio(float64(v.SteadyRSS), float64(r.SteadyRSS)),
						ratio(v.ScrapeP95, r.ScrapeP95), ratio(r.ScrapeP95, v.ScrapeP95))
				}
			}
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "Load average (1/5/15 min) at start and end: %s\n\n", strings.Join(rep.LoadAvg, " → "))
	for _, s := range rep.Skipped {
		fmt.Fprintf(w, "- skipped %s\n", s)
	}
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

func ratio(a, b float64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.3g×", a/b)
}

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// helperEnv marks a re-executed bench binary that must act as the crossing
// helper; its value is "<memory.usage_in_bytes file>:<threshold>:<overshoot>"
// (bytes).
const helperEnv = "VIGIL_BENCH_HELPER"

// runHelper waits for a line on stdin, then touches memory page by page
// until its cgroup's usage is overshoot bytes past the threshold, rereading usage
// every 16 pages so it notices the crossing within microseconds of its own
// charge; it prints the wall-clock time (Unix ns) of the first read at or
// above the threshold ("never" if none), then holds its memory until stdin
// closes.
func runHelper(spec string) int {
	parts := strings.Split(spec, ":")
	if len(parts) != 3 {
		fmt.Fprintln(os.Stderr, "bench helper: bad spec", spec)
		return 2
	}
	file := parts[0]
	threshold, err1 := strconv.ParseUint(parts[1], 10, 64)
	overshoot, err2 := strconv.ParseUint(parts[2], 10, 64)
	if err1 != nil || err2 != nil {
		fmt.Fprintln(os.Stderr, "bench helper: bad spec", spec)
		return 2
	}
	usage, err := os.Open(file)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench helper:", err)
		return 2
	}
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		return 0
	}
	buf := make([]byte, 32)
	read := func() uint64 {
		n, _ := usage.ReadAt(buf, 0)
		v, _ := strconv.ParseUint(strings.TrimSpace(string(buf[:n])), 10, 64)
		return v
	}
	start := read()
	if start >= threshold {
		fmt.Println("already")
		_, _ = io.Copy(io.Discard, in)
		return 0
	}
	mem := make([]byte, threshold-start+overshoot)
	const page, checkEvery = 4096, 16
	crossed := false
	for i := 0; i < len(mem); i += page {
		mem[i] = 1
		if crossed || (i/page)%checkEvery != 0 {
			continue
		}
		if read() >= threshold {
			crossed = true
			fmt.Println(time.Now().UnixNano())
		}
	}
	if !crossed {
		fmt.Println("never")
	}
	_, _ = io.Copy(io.Discard, in)
	mem[0] = 2 // keep mem alive until here
	return 0
}

// LatencyOptions configure a detection latency run.
type LatencyOptions struct {
	Trials   int
	Limit    uint64        // memory limit of each trial cgroup
	Ratio    float64       // threshold = Ratio × Limit (vigil's events.threshold_ratio)
	Interval time.Duration // between trial starts
	Settle   time.Duration // from cgroup creation to the allocation (vigil discovers it)
	Pollers  []time.Duration
	WorkDir  string
}

// Trial is one crossing and when each observer saw it.
type Trial struct {
	Cgroup   string          `json:"cgroup"`
	Crossing time.Time       `json:"crossing"`
	Polls    []time.Duration `json:"polls"` // per poller: crossing -> first poll that saw it
	// From vigil's journal.
	Finding  time.Duration `json:"finding"`  // crossing -> Finding.Time (the snapshot that showed it)
	Decision time.Duration `json:"decision"` // crossing -> record created
	Action   time.Duration `json:"action"`   // crossing -> first step applied (finished)
	Found    bool          `json:"found"`
	Result   string        `json:"result"`
}

// LatencyReport is the whole run.
type LatencyReport struct {
	Started time.Time       `json:"started"`
	Options LatencyOptions  `json:"options"`
	Trials  []Trial         `json:"trials"`
	Pollers []time.Duration `json:"pollers"`
	LoadAvg []string        `json:"loadavg"`
	Errors  []string        `json:"errors,omitempty"`
	// VigilCounters are vigil's own counters at the end of the run: how
	// many kernel notifications it received and off-cycle snapshots it took.
	VigilCounters map[string]float64 `json:"vigil_counters,omitempty"`
}

// vigilCounters are the self-metrics the latency report quotes.
var vigilCounters = []string{"vigil_offcycle_snapshots_total", "vigil_events_coalesced_total", "vigil_events_dropped_total", "vigil_tick_overruns_total"}

func cmdLatency(ctx context.Context, log *slog.Logger, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("latency", flag.ContinueOnError)
	o := LatencyOptions{}
	fs.IntVar(&o.Trials, "trials", 200, "crossings")
	limit := fs.Int("limit-mib", 64, "memory limit of each trial cgroup (MiB)")
	fs.Float64Var(&o.Ratio, "ratio", 0.9, "threshold as a fraction of the limit (vigil's events.threshold_ratio default)")
	fs.DurationVar(&o.Interval, "interval", 750*time.Millisecond, "time between trial starts")
	fs.DurationVar(&o.Settle, "settle", 2500*time.Millisecond, "time from a trial cgroup's creation to its allocation (vigil runs with a 1s discovery interval)")
	jsonOut := fs.String("json", "", "also write the report as JSON to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o.Limit = uint64(*limit) << 20
	o.Pollers = []time.Duration{time.Second, 10 * time.Second}
	rep, err := Latency(ctx, log, o)
	if rep != nil {
		writeLatency(stdout, rep)
		if *jsonOut != "" {
			b, _ := json.MarshalIndent(rep, "", "  ")
			if werr := os.WriteFile(*jsonOut, b, 0o644); werr != nil {
				return werr
			}
		}
	}
	return err
}

// latencyRule fires as soon as the working set is at the threshold (no
// "for"), and its first action is cheap and leaves the allocator running,
// so that the pollers of the same trial see the same crossing.
const latencyRule = `rules:
  - name: bench-crossing
    description: The working set crossed the bench threshold.
    severity: critical
    selector:
      opt_in: true
    condition: limit_bytes < inf && working_set_bytes >= limit_bytes * %g
    clear: working_set_bytes < limit_bytes * 0.5
    cooldown: 1h
    actions:
      - action: exec
        params: {command: ["/bin/true"]}
`

// Latency runs vigil (event path on, 1 s tick) with a rule on the trial
// cgroups, then crosses the threshold in each trial cgroup while 1 s and
// 10 s pollers with a random phase watch the same cgroup.
func Latency(ctx context.Context, log *slog.Logger, o LatencyOptions) (*LatencyReport, error) {
	rep := &LatencyReport{Started: time.Now().UTC(), Options: o, Pollers: o.Pollers, LoadAvg: []string{loadAvg()}}
	defer func() { rep.LoadAvg = append(rep.LoadAvg, loadAvg()) }()
	work := o.WorkDir
	if work == "" {
		var err error
		if work, err = os.MkdirTemp("", "vigil-bench-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(work)
	}
	bin, err := buildVigil(ctx, log, work)
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	f, err := newFarm()
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := f.Close(); err != nil {
			log.Warn("cleanup", "err", err)
		}
	}()
	// vigil never acts on its own cgroup or its relatives: it runs in a
	// sibling of the trials' parent.
	agentDir, err := f.child("agent", 0)
	if err != nil {
		return nil, err
	}
	trialsDir, err := f.child("trials", 0)
	if err != nil {
		return nil, err
	}
	trialsRel := filepath.Join(f.Rel, "trials")

	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	cfgDir := filepath.Join(work, "vigil-state")
	if err := os.MkdirAll(filepath.Join(cfgDir, "rules"), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(cfgDir, "rules", "bench.yaml"), []byte(fmt.Sprintf(latencyRule, o.Ratio)), 0o644); err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`discovery_interval: 1s
events:
  threshold_ratio: %g
rules:
  dirs: [%s]
  builtin: false
remediation:
  dry_run: false
  opt_in: ["%s/**"]
  per_node: {every: 1ms, burst: 1000}
  max_concurrent: 1000
  max_targets_per_hour: 1000000
  journal:
    path: %s
`, o.Ratio, filepath.Join(cfgDir, "rules"), trialsRel, filepath.Join(cfgDir, "journal.db"))
	cfgFile := filepath.Join(cfgDir, "vigil.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	// Start vigil inside the agent group from its first instruction.
	p := peer{Name: "vigil", Addr: addr, Path: "/metrics", Dir: cfgDir,
		Argv: []string{"/bin/sh", "-c", `echo $$ > "$1/cgroup.procs" && exec "$2" run --config "$3" --listen "$4" --tick 1s`,
			"sh", agentDir, bin, cfgFile, addr}}
	proc, err := startPeer(p, filepath.Join(work, "vigil-latency.log"))
	if err != nil {
		return nil, err
	}
	defer proc.stop()
	sc := newScraper(addr, "/metrics")
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		if _, n, _, err := sc.scrape(ctx); err == nil && n > 0 {
			break
		}
		if proc.exited() || time.Since(start) > time.Minute {
			b, _ := os.ReadFile(proc.logFile.Name())
			return nil, fmt.Errorf("vigil did not start: %s", b)
		}
	}

	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	rep.Trials = make([]Trial, o.Trials)
	tick := time.NewTicker(o.Interval)
	defer tick.Stop()
	for i := 0; i < o.Trials; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			tr, err := runTrial(ctx, self, trialsDir, trialsRel, fmt.Sprintf("t%04d", i), o)
			mu.Lock()
			defer mu.Unlock()
			rep.Trials[i] = tr
			if err != nil {
				rep.Errors = append(rep.Errors, err.Error())
				log.Warn("trial", "n", i, "err", err)
			}
		}(i)
		if i%20 == 19 {
			log.Info("trials started", "n", i+1)
		}
	}
	wg.Wait()
	if ctx.Err() != nil {
		return rep, ctx.Err()
	}
	// vigil's side, from its journal API and its counters.
	time.Sleep(time.Second)
	if _, _, body, err := sc.scrapeBody(ctx); err == nil {
		rep.VigilCounters = map[string]float64{}
		for _, name := range vigilCounters {
			if v, ok := sampleValue(body, name); ok {
				rep.VigilCounters[name] = v
			}
		}
		rep.VigilCounters["vigil_events_received_total"] = sumFamily(body, "vigil_events_received_total")
	}
	if err := fillFromJournal(ctx, addr, rep); err != nil {
		return rep, err
	}
	if len(rep.Errors) > o.Trials/10 {
		return rep, fmt.Errorf("%d of %d trials failed (first: %s)", len(rep.Errors), o.Trials, rep.Errors[0])
	}
	return rep, nil
}

// runTrial creates the cgroup, starts the helper and the pollers, lets
// vigil discover the cgroup, releases the helper, and waits until every
// poller saw the crossing.
func runTrial(ctx context.Context, self, parentDir, parentRel, name string, o LatencyOptions) (Trial, error) {
	tr := Trial{Cgroup: filepath.Join(parentRel, name), Polls: make([]time.Duration, len(o.Pollers))}
	dir := filepath.Join(parentDir, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return tr, err
	}
	defer removeTree(dir)
	if err := os.WriteFile(filepath.Join(dir, "memory.limit_in_bytes"), []byte(strconv.FormatUint(o.Limit, 10)), 0); err != nil {
		return tr, err
	}
	threshold := uint64(o.Ratio * float64(o.Limit))
	usageFile := filepath.Join(dir, "memory.usage_in_bytes")
	cmd := exec.Command(self)
	// Past the threshold by half the remaining headroom: far enough for the
	// working set check, never near the limit (no reclaim, no OOM kill).
	overshoot := min(4<<20, (o.Limit-threshold)/2)
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s:%d:%d", helperEnv, usageFile, threshold, overshoot))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return tr, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return tr, err
	}
	if err := cmd.Start(); err != nil {
		return tr, err
	}
	defer func() { stdin.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if err := moveTo(dir, cmd.Process.Pid); err != nil {
		return tr, err
	}

	// Pollers: read usage every period from a random phase, like oomd's
	// and the kubelet's housekeeping loops.
	pctx, cancel := context.WithTimeout(ctx, o.Settle+15*time.Second)
	defer cancel()
	seen := make([]time.Time, len(o.Pollers))
	var pwg sync.WaitGroup
	for k, period := range o.Pollers {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			seen[k] = poll(pctx, usageFile, threshold, period, time.Duration(rand.Int64N(int64(period))))
		}()
	}

	select {
	case <-time.After(o.Settle):
	case <-ctx.Done():
		return tr, ctx.Err()
	}
	if _, err := io.WriteString(stdin, "go\n"); err != nil {
		return tr, err
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		return tr, fmt.Errorf("%s: helper: %w", name, err)
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
	if err != nil {
		return tr, fmt.Errorf("%s: helper reported %q, not a crossing time", name, strings.TrimSpace(line))
	}
	tr.Crossing = time.Unix(0, ns)
	pwg.Wait()
	for k := range o.Pollers {
		if seen[k].IsZero() {
			return tr, fmt.Errorf("%s: the %v poller never saw the crossing", name, o.Pollers[k])
		}
		tr.Polls[k] = seen[k].Sub(tr.Crossing)
	}
	return tr, nil
}

// poll reads usage every period starting after phase and returns the time
// of the first read at or above threshold.
func poll(ctx context.Context, file string, threshold uint64, period, phase time.Duration) time.Time {
	fh, err := os.Open(file)
	if err != nil {
		return time.Time{}
	}
	defer fh.Close()
	buf := make([]byte, 32)
	t := time.NewTimer(phase)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return time.Time{}
		case <-t.C:
		}
		n, _ := fh.ReadAt(buf, 0)
		v, _ := strconv.ParseUint(strings.TrimSpace(string(buf[:n])), 10, 64)
		if v >= threshold {
			return time.Now()
		}
		t.Reset(period)
	}
}

// journalRecord is the part of vigil's journal record the bench reads.
type journalRecord struct {
	Time    time.Time             `json:"time"`
	Target  struct{ Path string } `json:"target"`
	Finding *struct {
		Time time.Time `json:"time"`
	} `json:"finding"`
	Steps []struct {
		Intent   time.Time `json:"intent"`
		Finished time.Time `json:"finished"`
		Result   string    `json:"result"`
	} `json:"steps"`
	Outcome string `json:"outcome"`
	Kind    string `json:"kind"`
}

func fillFromJournal(ctx context.Context, addr string, rep *LatencyReport) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/api/v1/remediations?limit=-1&format=jsonl", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("vigil journal API: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("vigil journal API: %s: %s", resp.Status, b)
	}
	byPath := map[string]journalRecord{}
	dec := json.NewDecoder(resp.Body)
	for {
		var r journalRecord
		if err := dec.Decode(&r); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return fmt.Errorf("vigil journal API: %w", err)
		}
		if old, ok := byPath[r.Target.Path]; !ok || r.Time.Before(old.Time) {
			byPath[r.Target.Path] = r
		}
	}
	for i := range rep.Trials {
		tr := &rep.Trials[i]
		r, ok := byPath[tr.Cgroup]
		if !ok || tr.Crossing.IsZero() || r.Finding == nil {
			continue
		}
		tr.Found = true
		tr.Result = r.Kind + "/" + r.Outcome
		tr.Finding = r.Finding.Time.Sub(tr.Crossing)
		tr.Decision = r.Time.Sub(tr.Crossing)
		for _, s := range r.Steps {
			if s.Result == "applied" {
				tr.Action = s.Finished.Sub(tr.Crossing)
				tr.Result = "applied"
				break
			}
		}
	}
	return nil
}

type dist struct {
	N             int
	P50, P99, Max time.Duration
}

func distOf(v []time.Duration) dist {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return dist{}
	}
	return dist{N: len(s), P50: percentile(s, .5), P99: percentile(s, .99), Max: s[len(s)-1]}
}

func writeLatency(w io.Writer, rep *LatencyReport) {
	var finding, decision, action []time.Duration
	polls := make([][]time.Duration, len(rep.Pollers))
	missing := 0
	for _, tr := range rep.Trials {
		if tr.Crossing.IsZero() {
			continue
		}
		for k, d := range tr.Polls {
			if k < len(polls) && d != 0 {
				polls[k] = append(polls[k], d)
			}
		}
		if !tr.Found {
			missing++
			continue
		}
		finding = append(finding, tr.Finding)
		decision = append(decision, tr.Decision)
		if tr.Result == "applied" {
			action = append(action, tr.Action)
		}
	}
	fmt.Fprintf(w, "Detection latency, started %s, limit %d MiB, threshold %.0f%%\n\n", rep.Started.Format(time.RFC3339), rep.Options.Limit>>20, 100*rep.Options.Ratio)
	fmt.Fprintln(w, "| observer | trials | p50 | p99 | max |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|")
	row := func(name string, d dist) {
		fmt.Fprintf(w, "| %s | %d | %s | %s | %s |\n", name, d.N, fmtDur(d.P50), fmtDur(d.P99), fmtDur(d.Max))
	}
	row("vigil: crossing → Finding (snapshot time)", distOf(finding))
	row("vigil: crossing → decision (journal record)", distOf(decision))
	row("vigil: crossing → first action applied", distOf(action))
	for k, p := range rep.Pollers {
		row(fmt.Sprintf("poller every %v, random phase", p), distOf(polls[k]))
	}
	if len(rep.VigilCounters) > 0 {
		var kv []string
		for k, v := range rep.VigilCounters {
			kv = append(kv, fmt.Sprintf("%s %g", k, v))
		}
		slices.Sort(kv)
		fmt.Fprintf(w, "\nvigil's counters at the end: %s\n", strings.Join(kv, ", "))
	}
	fmt.Fprintf(w, "\nTrials without a vigil record: %d. Trial errors: %d. Load average at start and end: %s\n", missing, len(rep.Errors), strings.Join(rep.LoadAvg, " → "))
	if f, p := distOf(finding), distOf(polls[0]); f.P50 > 0 && len(polls) > 0 {
		fmt.Fprintf(w, "\nRatios: 1 s poller p50 / vigil Finding p50 = %.0f×; p99 %.0f×\n", float64(p.P50)/float64(f.P50), float64(p.P99)/float64(max(f.P99, 1)))
	}
}

func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.0f µs", float64(d)/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}

// sumFamily adds up every sample of a counter family, whatever its labels.
func sumFamily(body []byte, name string) float64 {
	total := 0.0
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			total += v
		}
	}
	return total
}

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// workEnv marks a re-executed scenario binary (or test binary) that must act
// as a workload process.
const workEnv = "SCENARIO_WORKLOAD"

// cellOptions are the inputs of one matrix cell.
type cellOptions struct {
	Scenario string
	Agent    string // none, earlyoom, oomd, vigil
	// Binaries of the agents (absolute paths); empty when not available.
	Vigil, EarlyOOM, OOMD string
	// Rules is an extra vigil rules directory (empty: the shipped rules only).
	Rules string
	// DataDir holds the thrash file (must be a real file system, not tmpfs).
	DataDir string
	// WorkDir holds agent configs, logs and the journal.
	WorkDir string
	// OwnView runs vigil on cgroup v1 with host_root set to a private view
	// whose cgroup root is the runner's own cgroup (see agents.go).
	OwnView bool
	// Window overrides the scenario's window when > 0.
	Window time.Duration
	Log    *slog.Logger
}

// JournalEntry is one vigil journal record, as the table shows it.
type JournalEntry struct {
	ID      string   `json:"id"`
	Kind    string   `json:"kind"`
	Rule    string   `json:"rule"`
	Target  string   `json:"target"`
	Outcome string   `json:"outcome"`
	Done    bool     `json:"done"`
	Steps   []string `json:"steps"` // action:result
	// Destructive counts applied steps that stop or freeze processes.
	Destructive int       `json:"destructive"`
	FirstStep   time.Time `json:"first_step"`
}

// CellResult is what one cell measured.
type CellResult struct {
	Scenario string `json:"scenario"`
	Agent    string `json:"agent"`
	// Rules is the rules directory that replaced the shipped rules ("" for
	// the shipped rules).
	Rules  string `json:"rules,omitempty"`
	Cgroup int    `json:"cgroup"`
	Kernel string `json:"kernel"`
	// Skipped says why the cell could not run (then nothing else is set).
	Skipped string  `json:"skipped,omitempty"`
	Window  float64 `json:"window_seconds"`
	// KernelOOMKills are the kernel's OOM kills in the workload cgroups.
	KernelOOMKills uint64 `json:"kernel_oom_kills"`
	// AgentKills are workload processes that died of a signal the kernel
	// OOM killer did not send.
	AgentKills int `json:"agent_kills"`
	// Processes is how many workload processes were started.
	Processes         int    `json:"processes"`
	CriticalUntouched bool   `json:"critical_untouched"`
	CriticalNote      string `json:"critical_note,omitempty"`
	// PressureToAction is seconds from the first pressure sample to the
	// agent's first action; -1 when there was no action or no pressure.
	PressureToAction float64 `json:"pressure_to_action"`
	FirstPressure    string  `json:"first_pressure,omitempty"`
	FirstAction      string  `json:"first_action,omitempty"`
	FalsePositives   int     `json:"false_positives"`
	// PeakNodePSI is the peak of /proc/pressure/memory some avg10; PeakParentPSI
	// that of the scenario parent's memory.pressure (v2 only).
	PeakNodePSI   float64 `json:"peak_node_psi"`
	PeakParentPSI float64 `json:"peak_parent_psi"`
	PeakParentMiB float64 `json:"peak_parent_mib"`
	Restarts      int     `json:"restarts,omitempty"`
	// FrozenAtEnd lists workload cgroups an agent left frozen at the end of
	// the window (their processes survive, stalled).
	FrozenAtEnd []string       `json:"frozen_at_end,omitempty"`
	Journal     []JournalEntry `json:"journal,omitempty"`
	Notes       []string       `json:"notes,omitempty"`
}

// proc is a workload process the cell started.
type proc struct {
	group string
	cmd   *exec.Cmd
	done  chan struct{}
	sig   syscall.Signal // 0 when it exited normally
	at    time.Time
}

// cell is one running scenario under one agent.
type cell struct {
	opts     cellOptions
	sc       scenario
	version  int
	tree     *tree
	parent   *group
	critical *group
	work     map[string]*group
	self     string
	own      string // the runner's own cgroup path

	mu       sync.Mutex
	procs    []*proc
	notes    map[string]int
	finished chan struct{}
	once     sync.Once
	cleanups []func()
}

func (c *cell) note(what string) {
	c.mu.Lock()
	c.notes[what]++
	c.mu.Unlock()
}

func (c *cell) allDone() { c.once.Do(func() { close(c.finished) }) }

func (c *cell) running(w string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, p := range c.procs {
		if p.group == w {
			select {
			case <-p.done:
			default:
				n++
			}
		}
	}
	return n
}

// command runs this binary as `work args...` inside g: a shell writes
// itself into g's cgroup.procs (every controller) and execs the workload, so
// it is charged to g from its first allocation.
func (c *cell) command(g *group, args ...string) *exec.Cmd {
	var sb strings.Builder
	for _, f := range g.procsFiles() {
		fmt.Fprintf(&sb, "echo $$ > %s || exit 111; ", f)
	}
	sb.WriteString(`exec "$@"`)
	argv := append([]string{"-c", sb.String(), "sh", c.self, "work"}, args...)
	cmd := exec.Command("/bin/sh", argv...)
	cmd.Env = append(os.Environ(), workEnv+"=1")
	return cmd
}

func (c *cell) start(w string, args ...string) (*proc, error) {
	g := c.work[w]
	if g == nil {
		return nil, fmt.Errorf("scenario %s: no workload cgroup %s", c.sc.Name, w)
	}
	p := &proc{group: w, cmd: c.command(g, args...), done: make(chan struct{})}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s in %s: %w", args[0], g.rel, err)
	}
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	go func() {
		err := p.cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				p.sig = ws.Signal()
			}
		}
		p.at = time.Now()
		close(p.done)
	}()
	return p, nil
}

// runCell runs one scenario under one agent and measures it. Every cgroup
// and process it created is gone when it returns.
func runCell(ctx context.Context, opts cellOptions) (res CellResult, err error) {
	sc, ok := scenarioByName(opts.Scenario)
	if !ok {
		return res, fmt.Errorf("unknown scenario %q", opts.Scenario)
	}
	if opts.Window > 0 {
		sc.Window = opts.Window
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	version := cgroupVersion()
	res = CellResult{Scenario: sc.Name, Agent: opts.Agent, Cgroup: version, Kernel: kernelRelease(), PressureToAction: -1}
	if opts.Agent == "vigil" {
		res.Rules = opts.Rules
	}
	if why := agentUnavailable(opts, version); why != "" {
		res.Skipped = why
		return res, nil
	}
	self, err := os.Executable()
	if err != nil {
		return res, err
	}
	own, err := ownMemoryPath(version)
	if err != nil {
		return res, err
	}
	c := &cell{opts: opts, sc: sc, version: version, tree: &tree{version: version}, work: map[string]*group{},
		self: self, own: own, notes: map[string]int{}, finished: make(chan struct{})}
	defer func() {
		for i := len(c.cleanups) - 1; i >= 0; i-- {
			c.cleanups[i]()
		}
		if rerr := c.tree.remove(); rerr != nil {
			if err == nil {
				res.Notes = append(res.Notes, "cleanup: "+rerr.Error())
			}
			log.Error("cleanup", "err", rerr)
		}
	}()
	id := randomSuffix()
	base := strings.TrimSuffix(own, "/")
	if c.parent, err = c.tree.newGroup(base + "/vigil-scenario-" + id); err != nil {
		return res, err
	}
	if err = c.parent.setLimit(int64(sc.ParentMiB) * mib); err != nil {
		return res, err
	}
	if err = c.parent.enableChildren(); err != nil {
		return res, err
	}
	if c.critical, err = c.tree.newGroup(c.parent.rel + "/critical"); err != nil {
		return res, err
	}
	if err = c.critical.setLimit(criticalLimitMiB * mib); err != nil {
		return res, err
	}
	names := make([]string, 0, len(sc.Workloads))
	for name := range sc.Workloads {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		g, err := c.tree.newGroup(c.parent.rel + "/" + name)
		if err != nil {
			return res, err
		}
		if err := g.setLimit(int64(sc.Workloads[name]) * mib); err != nil {
			return res, err
		}
		c.work[name] = g
	}
	agentGroup, err := c.tree.newGroup(base + "/vigil-scenario-" + id + "-agent")
	if err != nil {
		return res, err
	}

	// The critical workload starts first and must survive untouched.
	crit := &proc{group: "critical", cmd: c.command(c.critical, "hold", fmt.Sprint(criticalMiB)), done: make(chan struct{})}
	if err := crit.cmd.Start(); err != nil {
		return res, fmt.Errorf("start critical workload: %w", err)
	}
	go func() {
		err := crit.cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				crit.sig = ws.Signal()
			}
		}
		close(crit.done)
	}()
	defer func() {
		_ = crit.cmd.Process.Kill()
		<-crit.done
	}()
	time.Sleep(500 * time.Millisecond)
	critKnobs := c.critical.knobs()
	critOOM0 := c.critical.oomKills()

	ag, err := startAgent(ctx, c, agentGroup)
	if err != nil {
		return res, fmt.Errorf("start %s: %w", opts.Agent, err)
	}
	agentStopped := false
	defer func() {
		if !agentStopped {
			ag.stop()
		}
	}()

	oom0 := map[string]uint64{}
	for n, g := range c.work {
		oom0[n] = g.oomKills()
	}
	psi0 := c.parent.pressureTotal()
	start := time.Now()
	log.Info("cell start", "scenario", sc.Name, "agent", opts.Agent, "cgroup", version, "parent", c.parent.rel, "window", sc.Window)

	driveCtx, cancel := context.WithTimeout(ctx, sc.Window)
	defer cancel()
	driveErr := make(chan error, 1)
	go func() { driveErr <- sc.Drive(driveCtx, c) }()

	var firstPressure time.Time
	var pressureWhy string
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	finishedAt := time.Time{}
sampling:
	for {
		select {
		case <-driveCtx.Done():
			break sampling
		case <-c.finished:
			if finishedAt.IsZero() {
				finishedAt = time.Now()
			}
		case <-tick.C:
		}
		if !finishedAt.IsZero() && time.Since(finishedAt) > 3*time.Second {
			break
		}
		now := time.Now()
		if np := float64(parsePSIFile("/proc/pressure/memory")) / 100; np > res.PeakNodePSI {
			res.PeakNodePSI = np
		}
		if version == 2 {
			if pp := float64(parsePSIFile(filepath.Join(c.parent.memDir(), "memory.pressure"))) / 100; pp > res.PeakParentPSI {
				res.PeakParentPSI = pp
			}
		}
		pu := c.parent.usage()
		if m := float64(pu) / mib; m > res.PeakParentMiB {
			res.PeakParentMiB = m
		}
		if firstPressure.IsZero() {
			for _, n := range names {
				if u := c.work[n].usage(); float64(u) >= 0.8*float64(sc.Workloads[n])*mib {
					firstPressure, pressureWhy = now, fmt.Sprintf("%s usage ≥ 80%% of its limit", n)
					break
				}
			}
			if firstPressure.IsZero() && float64(pu) >= 0.8*float64(sc.ParentMiB)*mib {
				firstPressure, pressureWhy = now, "parent usage ≥ 80% of its limit"
			}
			if firstPressure.IsZero() && version == 2 && c.parent.pressureTotal() > psi0 {
				firstPressure, pressureWhy = now, "parent memory.pressure some total rose"
			}
		}
	}
	cancel()
	if err := <-driveErr; err != nil {
		return res, err
	}
	res.Window = time.Since(start).Seconds()

	// vigil: let pending outcomes be measured (15 s after a decision) while
	// the workloads still run, then stop the agent and read its journal.
	var entries []JournalEntry
	if opts.Agent == "vigil" {
		entries = ag.settle(ctx, 25*time.Second)
	}
	for _, n := range names {
		if c.work[n].frozen() {
			res.FrozenAtEnd = append(res.FrozenAtEnd, n)
		}
	}
	// Stop the workloads before the agent, so no agent acts on their end.
	c.mu.Lock()
	procs := append([]*proc(nil), c.procs...)
	c.mu.Unlock()
	var kernelKills uint64
	for n, g := range c.work {
		kernelKills += g.oomKills() - oom0[n]
	}
	var ended []*proc
	for _, p := range procs {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			ended = append(ended, p)
		}
	}
	// A frozen cgroup must be thawed for its killed processes to die.
	c.thaw()
	for _, p := range ended {
		<-p.done
		p.sig = 0 // ended by the scenario, not by an agent
	}
	ag.stop()
	agentStopped = true
	if opts.Agent == "vigil" {
		if entries, err = ag.journal(ctx); err != nil {
			res.Notes = append(res.Notes, "journal: "+err.Error())
		}
	}

	res.KernelOOMKills = kernelKills
	res.Processes = len(procs)
	signaled := 0
	var firstAgentKill time.Time
	for _, p := range procs {
		if p.sig != 0 {
			signaled++
			if p.sig == syscall.SIGTERM && (firstAgentKill.IsZero() || p.at.Before(firstAgentKill)) {
				firstAgentKill = p.at
			}
		}
	}
	if d := signaled - int(kernelKills); d > 0 {
		res.AgentKills = d
	}
	res.Restarts = c.notes["restart"]

	// The critical workload: alive, never OOM-killed, knobs unchanged, no
	// journal record on it.
	res.CriticalUntouched = true
	var why []string
	select {
	case <-crit.done:
		res.CriticalUntouched = false
		why = append(why, fmt.Sprintf("died (signal %v)", crit.sig))
	default:
	}
	if k := c.critical.oomKills() - critOOM0; k > 0 {
		res.CriticalUntouched = false
		why = append(why, fmt.Sprintf("%d kernel OOM kills", k))
	}
	if k := c.critical.knobs(); k != critKnobs {
		res.CriticalUntouched = false
		why = append(why, "settings changed: "+critKnobs+" -> "+k)
	}
	for _, e := range entries {
		if e.Target == c.critical.rel && len(e.Steps) > 0 {
			res.CriticalUntouched = false
			why = append(why, "journal "+e.ID+" acted on it")
			res.FalsePositives++
		}
	}
	res.CriticalNote = strings.Join(why, "; ")

	// The first action: vigil's first applied step, a peer's first kill
	// line in its log, or the first SIGTERM death of a workload.
	first := firstAgentKill
	for _, e := range entries {
		if e.Kind != "remediation" || !strings.HasPrefix(e.Target, c.parent.rel+"/") {
			continue // another cgroup's record, or a start-up recovery
		}
		if !e.FirstStep.IsZero() && (first.IsZero() || e.FirstStep.Before(first)) {
			first = e.FirstStep
		}
	}
	if t := ag.firstKillLine(); !t.IsZero() && (first.IsZero() || t.Before(first)) {
		first = t
	}
	if !firstPressure.IsZero() {
		res.FirstPressure = fmt.Sprintf("+%.1fs (%s)", firstPressure.Sub(start).Seconds(), pressureWhy)
	}
	if !first.IsZero() {
		res.FirstAction = fmt.Sprintf("+%.1fs", first.Sub(start).Seconds())
		if !firstPressure.IsZero() {
			res.PressureToAction = first.Sub(firstPressure).Seconds()
		}
	}
	if sc.NoDestructive {
		res.FalsePositives += res.AgentKills
		for _, e := range entries {
			res.FalsePositives += e.Destructive
		}
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Target, c.parent.rel+"/") || e.Target == c.parent.rel || e.Target == "node" || e.Target == "" {
			res.Journal = append(res.Journal, e)
		}
	}
	if n := ag.logCount("not tracking more cgroups: limit reached"); n > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("vigil's cgroup cap was reached (%d memory cgroups on the machine): its discovery stops at the cap in walk order, so the scenario's cgroups may not have been tracked", countCgroups(c)))
	}
	if ag.exitedEarly() {
		res.Notes = append(res.Notes, opts.Agent+" exited during the run: "+ag.tail())
	}
	log.Info("cell done", "scenario", sc.Name, "agent", opts.Agent, "kernel_oom_kills", res.KernelOOMKills,
		"agent_kills", res.AgentKills, "critical_untouched", res.CriticalUntouched, "journal", len(res.Journal))
	return res, nil
}

// thaw unfreezes every workload cgroup (an agent may have frozen one).
func (c *cell) thaw() {
	for _, g := range c.work {
		if c.version == 2 {
			_ = os.WriteFile(filepath.Join(g.dirs[""], "cgroup.freeze"), []byte("0"), 0)
		} else {
			_ = os.WriteFile(filepath.Join(g.dirs["freezer"], "freezer.state"), []byte("THAWED"), 0)
		}
	}
}

func parsePSIFile(path string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return parsePSI(b, "avg10")
}

func kernelRelease() string {
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		return "?"
	}
	var sb strings.Builder
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		sb.WriteByte(byte(c))
	}
	return sb.String()
}

// countCgroups counts the memory cgroups on the machine (what vigil walks).
func countCgroups(c *cell) int {
	root := filepath.Join(cgroupRoot, "memory")
	if c.version == 2 {
		root = cgroupRoot
	}
	n := 0
	_ = filepath.WalkDir(root, func(_ string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			n++
		}
		return nil
	})
	return n
}

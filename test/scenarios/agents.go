package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vigil-agent/vigil/remediate/journal"
)

// destructiveActions stop or freeze the workload's processes.
var destructiveActions = map[string]bool{
	"signal": true, "kill-cgroup": true, "restart-unit": true, "restart-container": true,
	"evict": true, "freeze": true, "scale-out": false,
}

// agentUnavailable says why opts.Agent cannot run here ("" when it can).
func agentUnavailable(opts cellOptions, version int) string {
	switch opts.Agent {
	case "none":
		return ""
	case "vigil":
		if opts.Vigil == "" {
			return "no vigil binary"
		}
	case "earlyoom":
		if opts.EarlyOOM == "" {
			return "earlyoom not installable here"
		}
	case "oomd":
		if version != 2 {
			return "oomd needs cgroup v2 with the memory controller (this hybrid v1 host's unified hierarchy has no controllers)"
		}
		if opts.OOMD == "" {
			return "oomd not installable here"
		}
	default:
		return "unknown agent " + opts.Agent
	}
	return ""
}

// agent is a running peer or vigil, in its own cgroup beside the scenario.
type agent struct {
	name   string
	cmd    *exec.Cmd
	done   chan struct{}
	log    *lineLog
	vigil  string
	db     string
	listen string
	// hostRoot, when set, is vigil's host_root: a view whose cgroup root
	// is the runner's own cgroup (prefix), so vigil reports paths
	// relative to it.
	hostRoot, prefix string
}

// lineLog keeps the agent's output with the time each line arrived.
type lineLog struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	lines []timedLine
	file  io.Writer
}

type timedLine struct {
	at   time.Time
	text string
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.file != nil {
		_, _ = l.file.Write(p)
	}
	l.buf.Write(p)
	for {
		i := bytes.IndexByte(l.buf.Bytes(), '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, timedLine{time.Now(), string(l.buf.Next(i + 1))})
	}
	return len(p), nil
}

func startAgent(ctx context.Context, c *cell, g *group) (*agent, error) {
	a := &agent{name: c.opts.Agent, done: make(chan struct{})}
	if a.name == "none" {
		close(a.done)
		return a, nil
	}
	f, err := os.Create(filepath.Join(c.opts.WorkDir, fmt.Sprintf("%s-%s-v%d.log", c.sc.Name, a.name, c.version)))
	if err != nil {
		return nil, err
	}
	c.cleanups = append(c.cleanups, func() { f.Close() })
	a.log = &lineLog{file: f}
	var argv []string
	switch a.name {
	case "earlyoom":
		// Debian's defaults: act when available memory and free swap are
		// both under 10%; -r 0 silences the periodic report.
		argv = []string{c.opts.EarlyOOM, "-r", "0"}
	case "oomd":
		conf := filepath.Join(c.opts.WorkDir, "oomd.json")
		if err := os.WriteFile(conf, oomdConfig(c), 0o644); err != nil {
			return nil, err
		}
		argv = []string{c.opts.OOMD, "--interval", "1", "--config", conf, "--cgroup-fs", cgroupRoot}
	case "vigil":
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		a.listen = "127.0.0.1:" + port
		a.vigil = c.opts.Vigil
		// The journal (bbolt, mmap) needs a local file system: in the
		// microVM the work directory is a 9p share, /tmp a tmpfs.
		jdir, err := os.MkdirTemp("", "vigil-scenario-journal-")
		if err != nil {
			return nil, err
		}
		c.cleanups = append(c.cleanups, func() { os.RemoveAll(jdir) })
		a.db = filepath.Join(jdir, fmt.Sprintf("journal-%s-v%d.db", c.sc.Name, c.version))
		if c.opts.OwnView && c.version == 1 && c.own != "/" {
			if a.hostRoot, err = os.MkdirTemp("", "vigil-scenario-root-"); err != nil {
				return nil, err
			}
			hr := a.hostRoot
			c.cleanups = append(c.cleanups, func() { os.RemoveAll(hr) })
			for _, d := range append([]string{"proc"}, v1Controllers...) {
				if d != "proc" {
					d = filepath.Join("sys/fs/cgroup", d)
				}
				if err := os.MkdirAll(filepath.Join(hr, d), 0o755); err != nil {
					return nil, err
				}
			}
			a.prefix = c.own
		}
		conf := filepath.Join(c.opts.WorkDir, "vigil.yaml")
		if err := os.WriteFile(conf, vigilConfig(c, a.listen, a.db, a.hostRoot, a.prefix), 0o644); err != nil {
			return nil, err
		}
		argv = []string{c.opts.Vigil, "run", "--config", conf}
	}
	var sb strings.Builder
	for _, pf := range g.procsFiles() {
		fmt.Fprintf(&sb, "echo $$ > %s || exit 111; ", pf)
	}
	shell := []string{"/bin/sh"}
	if a.hostRoot != "" {
		// vigil sees the runner's own cgroup subtree as the host's cgroup
		// root: bind mounts in a private mount namespace, nothing changes
		// for anyone else.
		shell = []string{"unshare", "-m", "--propagation", "private", "/bin/sh"}
		for _, ctl := range v1Controllers {
			fmt.Fprintf(&sb, "mount --bind %s %s || exit 112; ", filepath.Join(cgroupRoot, ctl, c.own), filepath.Join(a.hostRoot, "sys/fs/cgroup", ctl))
		}
		fmt.Fprintf(&sb, "mount --rbind /proc %s || exit 112; ", filepath.Join(a.hostRoot, "proc"))
	}
	sb.WriteString(`exec "$@"`)
	a.cmd = exec.Command(shell[0], append(append(shell[1:], "-c", sb.String(), "sh"), argv...)...)
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	a.cmd.Dir = c.opts.WorkDir
	if err := a.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = a.cmd.Wait(); close(a.done) }()
	if a.name == "vigil" {
		if err := a.waitReady(ctx, 90*time.Second); err != nil {
			a.stop()
			return nil, fmt.Errorf("%w; log: %s", err, a.tail())
		}
		return a, nil
	}
	// Peers have no readiness endpoint: give them a moment to start.
	select {
	case <-a.done:
		return nil, fmt.Errorf("%s exited at start: %s", a.name, a.tail())
	case <-time.After(2 * time.Second):
	}
	return a, nil
}

func (a *agent) waitReady(ctx context.Context, max time.Duration) error {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		select {
		case <-a.done:
			return fmt.Errorf("vigil exited at start")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
		resp, err := http.Get("http://" + a.listen + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
	}
	return fmt.Errorf("vigil not healthy on %s within %s", a.listen, max)
}

func (a *agent) exitedEarly() bool {
	if a.name == "none" || a.cmd == nil {
		return false
	}
	select {
	case <-a.done:
		return a.cmd.ProcessState != nil && !a.stopped()
	default:
		return false
	}
}

func (a *agent) stopped() bool {
	ws, ok := a.cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && (ws.Signal() == syscall.SIGTERM || ws.Signal() == syscall.SIGKILL) || a.cmd.ProcessState.ExitCode() == 0
}

// stop ends the agent: SIGTERM, then SIGKILL after 10 s.
func (a *agent) stop() {
	if a.cmd == nil || a.cmd.Process == nil {
		return
	}
	select {
	case <-a.done:
		return
	default:
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(10 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
	}
}

func (a *agent) tail() string {
	if a.log == nil {
		return ""
	}
	a.log.mu.Lock()
	defer a.log.mu.Unlock()
	var s []string
	for _, l := range a.log.lines {
		s = append(s, strings.TrimSpace(l.text))
	}
	if len(s) > 5 {
		s = s[len(s)-5:]
	}
	return strings.Join(s, " | ")
}

// killLine matches a peer's log line announcing a kill (earlyoom:
// "sending SIGTERM to process 123 ..."; its start-up line "sending SIGTERM
// when mem <= ..." does not match).
var killLine = map[string]*regexp.Regexp{
	"earlyoom": regexp.MustCompile(`sending SIG[A-Z]+ to process`),
	"oomd":     regexp.MustCompile(`(?i)\bkill(ed|ing)\b`),
}

func (a *agent) firstKillLine() time.Time {
	re := killLine[a.name]
	if a.log == nil || re == nil {
		return time.Time{}
	}
	a.log.mu.Lock()
	defer a.log.mu.Unlock()
	for _, l := range a.log.lines {
		if re.MatchString(l.text) {
			return l.at
		}
	}
	return time.Time{}
}

// settle waits (at most max) until every journal record of the running
// vigil has its outcome measured, and returns them.
func (a *agent) settle(ctx context.Context, max time.Duration) []JournalEntry {
	deadline := time.Now().Add(max)
	var entries []JournalEntry
	for {
		var err error
		entries, err = a.journal(ctx)
		pending := err != nil
		for _, e := range entries {
			if e.Kind == journal.KindRemediation && (!e.Done || e.Outcome == journal.OutcomePending) {
				pending = true
			}
		}
		if !pending || time.Now().After(deadline) {
			return entries
		}
		select {
		case <-ctx.Done():
			return entries
		case <-time.After(2 * time.Second):
		}
	}
}

// journal exports vigil's journal with `vigil journal export` (from the file,
// or from the agent's API while it runs).
func (a *agent) journal(ctx context.Context) ([]JournalEntry, error) {
	cmd := exec.CommandContext(ctx, a.vigil, "journal", "export", "--db", a.db, "--api", "http://"+a.listen)
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		return nil, fmt.Errorf("vigil journal export: %w: %s", err, strings.TrimSpace(stderr))
	}
	entries, err := parseJournal(out)
	if a.prefix != "" {
		for i := range entries {
			if entries[i].Target != "node" && entries[i].Target != "" {
				entries[i].Target = strings.TrimSuffix(a.prefix, "/") + entries[i].Target
			}
		}
	}
	return entries, err
}

func parseJournal(b []byte) ([]JournalEntry, error) {
	var out []JournalEntry
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var r journal.Record
		if err := json.Unmarshal(line, &r); err != nil {
			return out, fmt.Errorf("journal line: %w", err)
		}
		e := JournalEntry{ID: r.ID, Kind: r.Kind, Rule: r.Rule, Target: r.Target.Path, Outcome: r.Outcome, Done: r.Done}
		if r.Target.Kind == "node" {
			e.Target = "node"
		}
		for _, s := range r.Steps {
			e.Steps = append(e.Steps, s.Action+":"+s.Result)
			if s.Result == "applied" {
				if e.FirstStep.IsZero() || s.Intent.Before(e.FirstStep) {
					e.FirstStep = s.Intent
				}
				if destructiveActions[s.Action] {
					e.Destructive++
				}
			}
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, sc.Err()
}

// vigilConfig opts the scenario's workload cgroups in (dry-run off) and
// protects the critical one; every other field keeps its default.
func vigilConfig(c *cell, listen, db, hostRoot, prefix string) []byte {
	if hostRoot == "" {
		hostRoot = "/"
	}
	rel := func(p string) string { return "/" + strings.TrimPrefix(strings.TrimPrefix(p, prefix), "/") }
	// -rules replaces the shipped rules (a proposed variant of a shipped
	// rule keeps its name).
	rulesDirs, builtin := "[]", true
	if c.opts.Rules != "" {
		rulesDirs, builtin = fmt.Sprintf("[%q]", c.opts.Rules), false
	}
	return []byte(fmt.Sprintf(`listen: %q
host_root: %q
tick: 1s
discovery_interval: 2s
log:
  level: info
rules:
  builtin: %t
  dirs: %s
remediation:
  dry_run: false
  opt_in: [%q]
  protected: [%q]
  journal:
    path: %q
self:
  oom_score_adj: 0
`, listen, hostRoot, builtin, rulesDirs, rel(c.parent.rel)+"/w-*", rel(c.critical.rel), db))
}

// oomdConfig: one ruleset, memory pressure of the scenario parent or of a
// workload above 10% for 5 s kills the largest (or fastest-growing)
// workload cgroup. The critical cgroup is never a candidate.
func oomdConfig(c *cell) []byte {
	rel := strings.TrimPrefix(c.parent.rel, "/")
	conf := map[string]any{
		"rulesets": []any{map[string]any{
			"name": "vigil scenario: workload memory pressure",
			"detectors": []any{
				[]any{"parent memory pressure above 10 for 5s", map[string]any{"name": "pressure_above",
					"args": map[string]string{"cgroup": rel, "resource": "memory", "threshold": "10", "duration": "5"}}},
				[]any{"workload memory pressure above 10 for 5s", map[string]any{"name": "pressure_above",
					"args": map[string]string{"cgroup": rel + "/w-*", "resource": "memory", "threshold": "10", "duration": "5"}}},
			},
			"actions": []any{map[string]any{"name": "kill_by_memory_size_or_growth",
				"args": map[string]string{"cgroup": rel + "/w-*"}}},
		}},
	}
	b, _ := json.MarshalIndent(conf, "", "  ")
	return b
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port, nil
}

// logCount counts the agent's log lines containing s.
func (a *agent) logCount(s string) int {
	if a.log == nil {
		return 0
	}
	a.log.mu.Lock()
	defer a.log.mu.Unlock()
	n := 0
	for _, l := range a.log.lines {
		if strings.Contains(l.text, s) {
			n++
		}
	}
	return n
}

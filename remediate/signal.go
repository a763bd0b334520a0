package remediate

import (
	"context"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/shirou/gopsutil/v3/process"

	"github.com/vigil-agent/vigil/remediate/journal"
)

// VictimPolicy says which process a signal picks inside a cgroup: the largest
// resident set, except that names matching Prefer go first, names matching
// Avoid go last, names matching Omit are never picked, and vigil itself is
// never picked. Patterns are path.Match globs on the process name.
type VictimPolicy struct {
	Prefer, Avoid, Omit []string
	// SelfPID is vigil's pid (never a victim); 0 means os.Getpid().
	SelfPID int
}

func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

// topProcesses returns the processes of pids by RSS, largest first.
func topProcesses(pids []int) []journal.Process {
	out := make([]journal.Process, 0, len(pids))
	for _, pid := range pids {
		p, err := process.NewProcess(int32(pid))
		if err != nil {
			continue
		}
		mi, err := p.MemoryInfo()
		if err != nil {
			continue
		}
		name, _ := p.Name()
		out = append(out, journal.Process{PID: pid, Name: name, RSSBytes: mi.RSS})
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].RSSBytes > out[b].RSSBytes })
	return out
}

// pick chooses the victim among procs (largest RSS first).
func (v VictimPolicy) pick(procs []journal.Process, extra VictimPolicy) (journal.Process, bool) {
	self := v.SelfPID
	if self == 0 {
		self = os.Getpid()
	}
	prefer, avoid, omit := append(v.Prefer, extra.Prefer...), append(v.Avoid, extra.Avoid...), append(v.Omit, extra.Omit...)
	rank := func(p journal.Process) int {
		switch {
		case matchAny(prefer, p.Name):
			return 0
		case matchAny(avoid, p.Name):
			return 2
		}
		return 1
	}
	best, found := journal.Process{}, false
	for _, p := range procs {
		if p.PID == self || matchAny(omit, p.Name) {
			continue
		}
		if !found || rank(p) < rank(best) || rank(p) == rank(best) && p.RSSBytes > best.RSSBytes {
			best, found = p, true
		}
	}
	return best, found
}

// gone reports whether pid has exited (a zombie counts as exited).
func gone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] == 'Z' || s[i+2] == 'X'
	}
	return false
}

// Signal sends a signal (default SIGTERM) to the victim process of the
// target's cgroup, waits the grace period, and sends SIGKILL only if the
// process is still there AND the condition still holds (earlyoom's lesson:
// memory may have been freed meanwhile).
//
// Params: signal (TERM, INT, HUP, USR1, ...), grace (10s), kill (true),
// prefer/avoid/omit (process name globs, added to the configured ones).
type Signal struct{}

var _ Action = (*Signal)(nil)

var signals = map[string]syscall.Signal{"TERM": syscall.SIGTERM, "INT": syscall.SIGINT, "HUP": syscall.SIGHUP,
	"USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2, "QUIT": syscall.SIGQUIT, "KILL": syscall.SIGKILL}

func validateSignal(m map[string]any) error {
	p := params(m)
	if err := p.known("signal", "grace", "kill", "prefer", "avoid", "omit"); err != nil {
		return err
	}
	s, err := p.str("signal", "TERM")
	if err != nil {
		return err
	}
	if _, ok := signals[strings.TrimPrefix(strings.ToUpper(s), "SIG")]; !ok {
		return fmt.Errorf("signal: unknown signal %q", s)
	}
	if _, err := p.duration("grace", 0); err != nil {
		return err
	}
	if _, err := p.boolean("kill", true); err != nil {
		return err
	}
	for _, k := range []string{"prefer", "avoid", "omit"} {
		if _, err := p.strs(k); err != nil {
			return err
		}
	}
	return nil
}

func init() { RegisterValidator(ActionSignal, validateSignal) }

func (*Signal) Name() string { return ActionSignal }

// minStepDeadline lets the grace period and the SIGKILL run even when the
// step's timeout is shorter.
func (*Signal) minStepDeadline(m map[string]any) time.Duration {
	grace, err := params(m).duration("grace", 10*time.Second)
	if err != nil {
		return 0
	}
	return grace + 5*time.Second
}

func (*Signal) Do(ctx context.Context, req Request) (Result, error) {
	if err := validateSignal(req.Params); err != nil {
		return Result{}, err
	}
	p := params(req.Params)
	sname, _ := p.str("signal", "TERM")
	sname = strings.TrimPrefix(strings.ToUpper(sname), "SIG") // details say SIG<name> either way
	sig := signals[sname]
	grace, _ := p.duration("grace", 10*time.Second)
	kill, _ := p.boolean("kill", true)
	var extra VictimPolicy
	extra.Prefer, _ = p.strs("prefer")
	extra.Avoid, _ = p.strs("avoid")
	extra.Omit, _ = p.strs("omit")
	if req.Cgroup == nil {
		return Result{}, fmt.Errorf("signal: target %s has no cgroup", req.Target.Key())
	}
	pids, err := req.Cgroup.Pids()
	if err != nil {
		return Result{}, fmt.Errorf("signal: list processes of %s: %w", req.Target.Key(), err)
	}
	victim, ok := req.Victims.pick(topProcesses(pids), extra)
	if !ok {
		return Result{}, fmt.Errorf("signal: no eligible process in %s", req.Target.Key())
	}
	who := fmt.Sprintf("pid %d (%s, rss %s)", victim.PID, victim.Name, humanBytes(victim.RSSBytes))
	if req.DryRun {
		return Result{Detail: fmt.Sprintf("would send SIG%s to %s, SIGKILL after %s if still needed", sname, who, grace)}, nil
	}
	if err := syscall.Kill(victim.PID, sig); err != nil {
		return Result{}, fmt.Errorf("signal: %v to %s: %w", sig, who, err)
	}
	// A ladder may signal a cgroup it froze. A frozen task handles neither
	// SIGTERM (v1 and v2) nor SIGKILL (v1 freezer) until it is thawed, so
	// thaw right after the signal is queued: the pending signal is delivered
	// before the task returns to user space, so an allocator that does not
	// catch SIGTERM dies without allocating again.
	thawed := ""
	if req.Limits != nil && req.Limits.Held(req.Cgroup, KnobFreeze) {
		if _, err := req.Limits.Restore(req.Cgroup, KnobFreeze); err != nil {
			return Result{}, fmt.Errorf("signal: thaw %s after SIG%s: %w", req.Target.Key(), sname, err)
		}
		thawed = " (thawed to deliver it)"
	}
	who += thawed
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	deadline := time.Now().Add(grace)
	for !gone(victim.PID) {
		if time.Now().After(deadline) {
			if !kill {
				return Result{Detail: fmt.Sprintf("sent SIG%s to %s; still running after %s, kill disabled", sname, who, grace)}, nil
			}
			if req.ConditionHolds != nil && !req.ConditionHolds() {
				return Result{Detail: fmt.Sprintf("sent SIG%s to %s; still running after %s but the condition cleared: no SIGKILL", sname, who, grace)}, nil
			}
			if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil && !gone(victim.PID) {
				return Result{}, fmt.Errorf("signal: SIGKILL to %s: %w", who, err)
			}
			return Result{Detail: fmt.Sprintf("sent SIG%s to %s; SIGKILL after %s", sname, who, grace), Terminated: true}, nil
		}
		select {
		case <-ctx.Done():
			return Result{Detail: fmt.Sprintf("sent SIG%s to %s", sname, who)}, ctx.Err()
		case <-t.C:
		}
	}
	return Result{Detail: fmt.Sprintf("sent SIG%s to %s; it exited", sname, who), Terminated: true}, nil
}

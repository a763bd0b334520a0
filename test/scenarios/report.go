package main

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

type report struct {
	Started, Finished time.Time
	Options           matrixOptions
	Host              hostInfo
	Cells             []CellResult
	// Runs are the options of further runs merged with -from.
	Runs []matrixOptions `json:",omitempty"`
}

func (r *report) add(c CellResult) { r.Cells = append(r.Cells, c) }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "**no**"
}

// markdown renders SCENARIOS.md: how it was produced, what each column
// means, one table per scenario.
func (r *report) markdown() []byte {
	var b bytes.Buffer
	b.WriteString("# Scenarios: vigil, earlyoom, oomd and no agent against the same memory incidents\n\n")
	b.WriteString("Produced by ")
	for i, o := range append([]matrixOptions{r.Options}, r.Runs...) {
		if i > 0 {
			b.WriteString(" and ")
		}
		writeCommand(&b, o)
	}
	fmt.Fprintf(&b, " on %s (host: kernel %s, cgroup v%d, %d CPUs, %d MiB)", r.Started.Format("2006-01-02 15:04 MST"), r.Host.Kernel, r.Host.Cgroup, r.Host.CPUs, r.Host.MemMiB)
	if len(r.Runs) > 0 {
		b.WriteString(", merged with `-from`")
	}
	b.WriteString(".")
	if r.Finished.IsZero() {
		b.WriteString(" **The run had not finished when this file was last written: cells not listed did not run.**")
	}
	b.WriteString("\n\n")
	b.WriteString(intro)
	r.tables(&b)
	return b.Bytes()
}

func writeCommand(b *bytes.Buffer, o matrixOptions) {
	b.WriteString("`go run ./test/scenarios -matrix")
	if len(o.Scenarios) != len(scenarios) {
		fmt.Fprintf(b, " -scenarios %s", strings.Join(o.Scenarios, ","))
	}
	if len(o.Agents) != len(allAgents) {
		fmt.Fprintf(b, " -agents %s", strings.Join(o.Agents, ","))
	}
	if len(o.Cgroups) != 2 {
		fmt.Fprintf(b, " -cgroups %d", o.Cgroups[0])
	}
	if o.Rules != "" {
		fmt.Fprintf(b, " -rules %s", o.Rules)
	}
	if o.Window > 0 {
		fmt.Fprintf(b, " -window %s", o.Window)
	}
	b.WriteString("`")
	if o.Rules != "" {
		b.WriteString(" (**proposed rules, not the shipped ones**)")
	}
}

const intro = `Every cell is a real run, nothing is simulated: cgroup v1 cells run on this host, cgroup v2 cells in the
test/vm QEMU microVM (TCG, 2 vCPUs, 1 GiB, Debian's 6.1 kernel) running the same scenario binary and the
same vigil build. Each scenario creates a parent cgroup under the runner's own cgroup holding the
workload cgroup(s) ` + "`w-*`" + ` (opted in to vigil, dry-run off) and a protected ` + "`critical`" + ` cgroup (64 MiB limit,
a process holding 24 MiB); the agent runs in a sibling cgroup. Everything is removed after the cell.

Agents:
- **none**: the kernel alone.
- **earlyoom** 1.7 (Debian package, unpacked with apt-get download + dpkg -x, Debian's defaults: SIGTERM the
  largest process when available memory *and* free swap are under 10% of the node's). It looks at node-wide
  MemAvailable only: on the 24 GiB host the scenarios (a few hundred MiB) never come near its threshold, in
  the 1 GiB VM only the node scenario approaches it. It is blind to cgroup limits.
- **oomd** 0.5 (Debian package, same unpacking; cgroup v2 only): one ruleset: memory PSI of the scenario
  parent or of a ` + "`w-*`" + ` cgroup above 10 for 5 s → ` + "`kill_by_memory_size_or_growth`" + ` among ` + "`w-*`" + ` (never the critical cgroup).
- **vigil** built from this checkout, ` + "`vigil run`" + ` with the **shipped rules only** (` + "`rules.builtin: true`" + `, no rules
  directory), tick 1 s, ` + "`opt_in: [<parent>/w-*]`" + `, ` + "`protected: [<parent>/critical]`" + `, ` + "`dry_run: false`" + `, other settings default.
  On the cgroup v1 host (with ` + "`-own-view`" + `, the default) vigil runs with ` + "`host_root`" + ` set to a private view (bind
  mounts in its own mount namespace) whose cgroup root is the runner's own cgroup, as a containerised vigil
  sees its host: this shared build machine sometimes holds thousands of other sessions' cgroups, more than
  vigil's cgroup cap (2000 here: RLIMIT_NOFILE 20000 / 9 files per cgroup, and root cannot raise the limit
  without CAP_SYS_RESOURCE), and vigil's discovery then stops in walk order before reaching the scenario's
  cgroups. A cell where vigil still hit its cap says so in its notes.

Columns:
- **kernel OOM kills**: increase of the kernel's oom_kill counter of the workload cgroups (v1
  memory.oom_control, v2 memory.events) during the window.
- **killed by agent**: workload processes that died of a signal, minus the kernel's OOM kills.
- **critical untouched**: the critical process is alive, its cgroup had no OOM kill, its memory/cpu/freezer
  settings are unchanged and no vigil record acted on it.
- **pressure → action**: seconds from the first pressure sample (sampled every 200 ms: a workload cgroup's
  usage ≥ 80% of its limit, the parent's usage ≥ 80% of its limit, or on v2 the parent's memory.pressure
  total rising) to the agent's first action (vigil: first applied journal step; earlyoom/oomd: first kill line
  in their log, or the first SIGTERM death). "–": no action.
- **false positives**: actions on the critical workload, plus, in the page-cache thrash scenario (where the
  right answer is no destructive action), processes killed by the agent and vigil steps that signal, kill,
  freeze, restart or evict.
- **peak PSI**: the peak of node ` + "`/proc/pressure/memory`" + ` some avg10 (node-wide: on v1 there is no per-cgroup PSI)
  and, on v2, of the scenario parent's memory.pressure; peak parent usage in MiB.
- **vigil journal**: each record of the scenario's cgroups: id, rule, kind, steps (action:result), outcome.

`

func (r *report) tables(b *bytes.Buffer) {
	for _, sc := range scenarios {
		var cells []CellResult
		for _, c := range r.Cells {
			if c.Scenario == sc.Name {
				cells = append(cells, c)
			}
		}
		if len(cells) == 0 {
			continue
		}
		fmt.Fprintf(b, "## %s\n\n%s. Window %s", sc.Name, sc.Title, sc.Window)
		if r.Options.Window > 0 {
			fmt.Fprintf(b, " (overridden: %s)", r.Options.Window)
		}
		b.WriteString(".\n\n")
		b.WriteString("| cgroup | kernel | agent | kernel OOM kills | killed by agent | critical untouched | pressure → action | false positives | peak PSI node / parent | peak parent MiB | vigil journal | notes |\n")
		b.WriteString("|---|---|---|---:|---:|---|---:|---:|---|---:|---|---|\n")
		for _, c := range cells {
			if c.Rules != "" {
				c.Agent += " (proposed rules: " + filepath.Base(c.Rules) + ")"
			}
			if c.Skipped != "" {
				fmt.Fprintf(b, "| v%d | %s | %s | not run: %s | | | | | | | | |\n", c.Cgroup, dash(c.Kernel), c.Agent, escape(c.Skipped))
				continue
			}
			pta := "–"
			switch {
			case c.FirstAction != "" && c.FirstPressure != "" && c.PressureToAction <= 0:
				pta = fmt.Sprintf("%.1f s (acted before the 200 ms sampler saw pressure)", c.PressureToAction)
			case c.FirstAction != "" && c.FirstPressure != "":
				pta = fmt.Sprintf("%.1f s", c.PressureToAction)
			case c.FirstAction != "":
				pta = "acted, no pressure sample"
			}
			parentPSI := "n/a (v1)"
			if c.Cgroup == 2 {
				parentPSI = fmt.Sprintf("%.1f", c.PeakParentPSI)
			}
			var notes []string
			if c.FirstPressure != "" {
				notes = append(notes, "pressure "+c.FirstPressure)
			}
			if c.FirstAction != "" {
				notes = append(notes, "first action "+c.FirstAction)
			}
			notes = append(notes, fmt.Sprintf("%d processes, window %.0f s", c.Processes, c.Window))
			if len(c.FrozenAtEnd) > 0 {
				notes = append(notes, "left frozen at the end of the window: "+strings.Join(c.FrozenAtEnd, ", "))
			}
			if c.Restarts > 0 {
				notes = append(notes, fmt.Sprintf("%d restarts", c.Restarts))
			}
			if c.CriticalNote != "" {
				notes = append(notes, "critical: "+c.CriticalNote)
			}
			notes = append(notes, c.Notes...)
			fmt.Fprintf(b, "| v%d | %s | %s | %d | %d | %s | %s | %d | %.1f / %s | %.0f | %s | %s |\n",
				c.Cgroup, c.Kernel, c.Agent, c.KernelOOMKills, c.AgentKills, yesNo(c.CriticalUntouched), pta,
				c.FalsePositives, c.PeakNodePSI, parentPSI, c.PeakParentMiB, journalCell(c), escape(strings.Join(notes, "; ")))
		}
		b.WriteString("\n")
	}
}

func journalCell(c CellResult) string {
	if !strings.HasPrefix(c.Agent, "vigil") {
		return ""
	}
	if len(c.Journal) == 0 {
		return "no records"
	}
	var parts []string
	for _, e := range c.Journal {
		target := e.Target
		if i := strings.LastIndex(target, "/"); i >= 0 && target != "node" {
			target = target[i+1:]
		}
		s := fmt.Sprintf("`%s` %s %s on %s", shortID(e.ID), e.Rule, e.Kind, target)
		if len(e.Steps) > 0 {
			s += " [" + strings.Join(e.Steps, ", ") + "]"
		}
		s += " → **" + e.Outcome + "**"
		if !e.Done && e.Kind == "remediation" {
			s += " (measured 15 s after the decision; the 60 s measurement was not in when the cell ended)"
		}
		parts = append(parts, s)
	}
	return escape(strings.Join(parts, "<br>"))
}

func shortID(id string) string {
	if len(id) > 13 {
		return id[:13]
	}
	return id
}

func dash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

func escape(s string) string { return strings.ReplaceAll(s, "|", "\\|") }

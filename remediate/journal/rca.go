package journal

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-agent/vigil/collectors"
)

func mib(v uint64) string {
	if v == collectors.Unlimited {
		return "max"
	}
	return strconv.FormatFloat(float64(v)/(1<<20), 'f', 1, 64) + "MiB"
}

func rel(t, since time.Time) string {
	if t.IsZero() {
		return "?"
	}
	d := t.Sub(since)
	sign := "+"
	if d < 0 {
		sign, d = "-", -d
	}
	return sign + d.Round(time.Millisecond).String()
}

func sampleLine(s Sample) string {
	growth := ""
	if s.GrowthBytesPerS != 0 && !math.IsNaN(s.GrowthBytesPerS) {
		growth = fmt.Sprintf("  growth %+.1fMiB/s", s.GrowthBytesPerS/(1<<20))
	}
	return fmt.Sprintf("working set %s  usage %s  limit %s  high %s%s  psi some %.1f%% full %.1f%%  oom kills %d",
		mib(s.WorkingSetBytes), mib(s.UsageBytes), mib(uint64(s.LimitBytes)), mib(uint64(s.HighBytes)), growth, s.PSISomeAvg10, s.PSIFullAvg10, s.OOMKills)
}

// WriteTimeline writes r as a readable root-cause timeline: who and what,
// the signals and samples before the decision, each step (intent, result,
// verification), and the outcome measured after. Times are relative to the
// decision.
func (r *Record) WriteTimeline(w io.Writer) error {
	var b strings.Builder
	t0 := r.Time
	id := r.Target.Identity
	who := r.Target.Key()
	var extra []string
	if id.Namespace != "" || id.Pod != "" {
		extra = append(extra, "pod "+id.Namespace+"/"+id.Pod)
	}
	if id.Container != "" || id.ContainerID != "" {
		extra = append(extra, "container "+firstNonEmpty(id.Container, shortID(id.ContainerID)))
	}
	if id.Unit != "" {
		extra = append(extra, "unit "+id.Unit)
	}
	if len(extra) > 0 {
		who += " (" + strings.Join(extra, ", ") + ")"
	}
	fmt.Fprintf(&b, "%s %s on node %s at %s\n", r.Kind, r.ID, r.Node, r.Time.UTC().Format(time.RFC3339Nano))
	fmt.Fprintf(&b, "target:  %s\n", who)
	if r.Rule != "" {
		sev := ""
		if r.Finding != nil && r.Finding.Severity != "" {
			sev = " (" + r.Finding.Severity + ", " + string(r.Finding.Mode) + ")"
		}
		fmt.Fprintf(&b, "rule:    %s%s\n", r.Rule, sev)
		if r.Finding != nil && !r.Finding.Since.IsZero() {
			fmt.Fprintf(&b, "         condition held since %s\n", rel(r.Finding.Since, t0))
		}
	}
	flags := []string{}
	if r.DryRun {
		flags = append(flags, "dry-run")
	}
	if r.Shadow {
		flags = append(flags, "shadow")
	}
	fmt.Fprintf(&b, "outcome: %s%s\n", r.Outcome, map[bool]string{true: " [" + strings.Join(flags, ", ") + "]", false: ""}[len(flags) > 0])

	if len(r.Evidence.Signals) > 0 {
		b.WriteString("\nsignals that fired:\n")
		keys := make([]string, 0, len(r.Evidence.Signals))
		for k := range r.Evidence.Signals {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "  %s = %s\n", k, strconv.FormatFloat(r.Evidence.Signals[k], 'g', 6, 64))
		}
	}
	if len(r.Evidence.Samples) > 0 {
		b.WriteString("\nbefore the decision:\n")
		for _, s := range r.Evidence.Samples {
			fmt.Fprintf(&b, "  %9s  %s\n", rel(s.Time, t0), sampleLine(s))
		}
	}
	if len(r.Evidence.TopProcesses) > 0 {
		b.WriteString("\ntop processes by RSS:\n")
		for _, p := range r.Evidence.TopProcesses {
			fmt.Fprintf(&b, "  pid %-8d %-20s %s\n", p.PID, p.Name, mib(p.RSSBytes))
		}
	}
	fmt.Fprintf(&b, "\n%9s  decision: %s\n", rel(t0, t0), r.Decision)
	for _, s := range r.Steps {
		dry := ""
		if s.DryRun {
			dry = " (dry-run)"
		}
		if strings.HasSuffix(s.Action, ":release") || s.Result == "released" {
			fmt.Fprintf(&b, "%9s  release %s: %s\n", rel(s.Finished, t0), strings.TrimSuffix(s.Action, ":release"), s.Detail)
			continue
		}
		fmt.Fprintf(&b, "%9s  step %d %s%s: intent\n", rel(s.Intent, t0), s.Index, s.Action, dry)
		res := s.Result
		if res == "" {
			res = "no result recorded (vigil stopped mid-action)"
		}
		line := fmt.Sprintf("%9s  step %d %s: %s", rel(s.Finished, t0), s.Index, s.Action, res)
		if s.Detail != "" {
			line += ": " + s.Detail
		}
		if s.Error != "" {
			line += " [error: " + s.Error + "]"
		}
		b.WriteString(line + "\n")
		switch {
		case s.Verified:
			fmt.Fprintf(&b, "%9s  step %d verify held: %s\n", rel(s.VerifiedAt, t0), s.Index, s.VerifyExpr)
		case s.VerifyTimedOut:
			fmt.Fprintf(&b, "%9s  step %d verify did not hold within %s: %s -> next step\n", rel(s.Intent.Add(s.Timeout), t0), s.Index, s.Timeout, s.VerifyExpr)
		}
	}
	if len(r.Measurements) > 0 {
		b.WriteString("\nafter:\n")
		for _, m := range r.Measurements {
			state := "target present"
			if !m.Present {
				state = "target gone"
			}
			fmt.Fprintf(&b, "  %9s  %-12s %s, kernel OOM kills since decision %d", rel(m.Time, t0), m.Outcome, state, m.OOMKillsSince)
			if m.Present {
				b.WriteString("\n             " + sampleLine(m.Sample))
			}
			b.WriteString("\n")
		}
	} else if !r.Done {
		b.WriteString("\nafter: not measured yet\n")
	}
	if len(r.Errors) > 0 {
		b.WriteString("\nerrors:\n")
		for _, e := range r.Errors {
			b.WriteString("  " + e + "\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func shortID(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

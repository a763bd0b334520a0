package journal

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/vigil-agent/vigil/collectors"
)

// WriteHTML writes r as a self-contained HTML incident report (inline CSS
// and SVG, no external assets): the target's memory timeline (working set,
// limit, memory.high, PSI) from the record's samples with each ladder step
// marked, the steps, the evidence and the outcome.
func (r *Record) WriteHTML(w io.Writer) error {
	v := buildReport(r)
	if err := reportTemplate.Execute(w, v); err != nil {
		return fmt.Errorf("journal: html report of %s: %w", r.ID, err)
	}
	return nil
}

const (
	chartW, chartH                                       = 960.0, 340.0
	padL, padR, padT, padB                               = 70.0, 60.0, 20.0, 40.0
	plotW                                                = chartW - padL - padR
	plotH                                                = chartH - padT - padB
	seriesWorkingSet, seriesLimit, seriesHigh, seriesPSI = "working_set", "limit", "memory_high", "psi_some"
)

type reportSeries struct {
	Name, Label, Color, Path, Dash string
}

type reportMarker struct {
	Index          int
	X              float64
	Label, Color   string
	LabelY         float64
	Action, Result string
	Time           string
	Anchor         string
	DX             float64
}

type reportTick struct {
	Pos   float64
	Label string
}

type reportStep struct {
	Index                         int
	Action, Result, Detail, Error string
	Intent, Took, Verify          string
}

type reportKV struct{ Key, Value string }

type reportView struct {
	R                *Record
	Title, Target    string
	Time, Updated    string
	OutcomeClass     string
	Series           []reportSeries
	Markers          []reportMarker
	XTicks, YTicks   []reportTick
	PSITicks         []reportTick
	HasChart         bool
	W, H, PadL, PadT float64
	PlotW, PlotH     float64
	PlotR, PlotB     float64
	Steps            []reportStep
	Signals          []reportKV
	Measurements     []reportKV
	Processes        []Process
	Kills            []collectors.KernelOOMKill
}

func buildReport(r *Record) reportView {
	v := reportView{R: r, Target: r.Target.Key(), Time: r.Time.UTC().Format(time.RFC3339), Updated: r.Updated.UTC().Format(time.RFC3339),
		W: chartW, H: chartH, PadL: padL, PadT: padT, PlotW: plotW, PlotH: plotH, PlotR: padL + plotW, PlotB: padT + plotH,
		Processes: r.Evidence.TopProcesses, Kills: r.Evidence.KernelOOMKills}
	v.Title = fmt.Sprintf("vigil %s %s on %s", r.Kind, r.ID, v.Target)
	switch r.Outcome {
	case OutcomeOOMAvoided, OutcomeRecovered, OutcomeRestored:
		v.OutcomeClass = "good"
	case OutcomeOOMKilled, OutcomeFailed, OutcomeNoEffect:
		v.OutcomeClass = "bad"
	default:
		v.OutcomeClass = "neutral"
	}
	samples := append([]Sample(nil), r.Evidence.Samples...)
	for _, m := range r.Measurements {
		if m.Present && !m.Sample.Time.IsZero() {
			samples = append(samples, m.Sample)
		}
	}
	sort.SliceStable(samples, func(i, j int) bool { return samples[i].Time.Before(samples[j].Time) })
	for _, s := range r.Steps {
		v.Steps = append(v.Steps, reportStep{Index: s.Index, Action: s.Action, Result: s.Result, Detail: s.Detail, Error: s.Error,
			Intent: s.Intent.UTC().Format("15:04:05.000"), Took: took(s), Verify: verifyText(s)})
	}
	keys := make([]string, 0, len(r.Evidence.Signals))
	for k := range r.Evidence.Signals {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		val := fmt.Sprintf("%.4g", r.Evidence.Signals[k])
		if f := r.Evidence.Signals[k]; strings.HasSuffix(k, "_bytes") && f >= 0 && !math.IsInf(f, 0) {
			val = bytesLabel(f)
		}
		v.Signals = append(v.Signals, reportKV{k, val})
	}
	for _, m := range r.Measurements {
		v.Measurements = append(v.Measurements, reportKV{fmt.Sprintf("after %s", m.After), fmt.Sprintf("%s (OOM kills since: %d, present: %v)", m.Outcome, m.OOMKillsSince, m.Present)})
	}
	if len(samples) == 0 {
		return v
	}
	v.HasChart = true
	t0, t1 := samples[0].Time, samples[len(samples)-1].Time
	for _, s := range r.Steps {
		if !s.Intent.IsZero() && s.Intent.Before(t0) {
			t0 = s.Intent
		}
		if !s.Intent.IsZero() && s.Intent.After(t1) {
			t1 = s.Intent
		}
	}
	if !t1.After(t0) {
		t1 = t0.Add(time.Second)
	}
	span := t1.Sub(t0).Seconds()
	x := func(t time.Time) float64 { return padL + plotW*t.Sub(t0).Seconds()/span }
	// Bytes axis: up to the largest finite value shown.
	finite := func(b collectors.Bytes) bool { return b != collectors.Unlimited && b != 0 }
	var ymax float64
	for _, s := range samples {
		ymax = math.Max(ymax, float64(s.WorkingSetBytes))
		if finite(s.LimitBytes) {
			ymax = math.Max(ymax, float64(s.LimitBytes))
		}
		if finite(s.HighBytes) {
			ymax = math.Max(ymax, float64(s.HighBytes))
		}
	}
	if ymax <= 0 {
		ymax = 1 << 20
	}
	ymax *= 1.08
	y := func(b float64) float64 { return padT + plotH*(1-b/ymax) }
	ypsi := func(p float64) float64 { return padT + plotH*(1-p/100) }
	path := func(val func(Sample) (float64, bool), yf func(float64) float64) string {
		var b strings.Builder
		pen := false
		for _, s := range samples {
			f, ok := val(s)
			if !ok {
				pen = false
				continue
			}
			if pen {
				fmt.Fprintf(&b, " L%.1f,%.1f", x(s.Time), yf(f))
			} else {
				fmt.Fprintf(&b, " M%.1f,%.1f", x(s.Time), yf(f))
				pen = true
			}
		}
		return strings.TrimSpace(b.String())
	}
	add := func(name, label, color, dash string, val func(Sample) (float64, bool), yf func(float64) float64) {
		if p := path(val, yf); p != "" {
			v.Series = append(v.Series, reportSeries{Name: name, Label: label, Color: color, Path: p, Dash: dash})
		}
	}
	add(seriesWorkingSet, "working set", "#1f6feb", "", func(s Sample) (float64, bool) { return float64(s.WorkingSetBytes), true }, y)
	add(seriesLimit, "limit", "#cf222e", "8 4", func(s Sample) (float64, bool) { return float64(s.LimitBytes), finite(s.LimitBytes) }, y)
	add(seriesHigh, "memory.high", "#bf8700", "3 3", func(s Sample) (float64, bool) { return float64(s.HighBytes), finite(s.HighBytes) }, y)
	add(seriesPSI, "PSI some avg10 (%, right axis)", "#8250df", "", func(s Sample) (float64, bool) { return s.PSISomeAvg10, true }, ypsi)
	for i := 0; i <= 4; i++ {
		b := ymax / 1.08 * float64(i) / 4
		v.YTicks = append(v.YTicks, reportTick{Pos: y(b), Label: bytesLabel(b)})
		v.PSITicks = append(v.PSITicks, reportTick{Pos: ypsi(float64(i) * 25), Label: fmt.Sprintf("%d%%", i*25)})
	}
	for i := 0; i <= 5; i++ {
		t := t0.Add(time.Duration(float64(t1.Sub(t0)) * float64(i) / 5))
		v.XTicks = append(v.XTicks, reportTick{Pos: x(t), Label: t.UTC().Format("15:04:05")})
	}
	for i, s := range r.Steps {
		if s.Intent.IsZero() {
			continue
		}
		color := "#57606a"
		switch s.Result {
		case "applied", "released":
			color = "#1a7f37"
		case "error", "refused":
			color = "#cf222e"
		case "dry_run":
			color = "#9a6700"
		}
		anchor, dx := "start", 4.0
		if x(s.Intent) > padL+plotW*0.6 {
			anchor, dx = "end", -4 // keep the label inside the plot
		}
		v.Markers = append(v.Markers, reportMarker{Index: s.Index, X: x(s.Intent), Color: color, LabelY: padT + 14 + float64(i%4)*14, Anchor: anchor, DX: dx,
			Label: fmt.Sprintf("%d %s: %s", s.Index, s.Action, orDash(s.Result)), Action: s.Action, Result: s.Result,
			Time: s.Intent.UTC().Format("15:04:05.000")})
	}
	return v
}

func took(s Step) string {
	if s.Finished.IsZero() || s.Intent.IsZero() {
		return ""
	}
	return s.Finished.Sub(s.Intent).Round(time.Millisecond).String()
}

func verifyText(s Step) string {
	switch {
	case s.Verified:
		return "held at " + s.VerifiedAt.UTC().Format("15:04:05")
	case s.VerifyTimedOut:
		return "timed out"
	case s.VerifyExpr != "":
		return s.VerifyExpr
	}
	return ""
}

func orDash(s string) string {
	if s == "" {
		return "running"
	}
	return s
}

func bytesLabel(b float64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", b/(1<<30))
	case b >= 10<<20:
		return fmt.Sprintf("%.0f MiB", b/(1<<20))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	default:
		return fmt.Sprintf("%.0f KiB", b/(1<<10))
	}
}

var reportTemplate = template.Must(template.New("report").Funcs(template.FuncMap{
	"kib": func(b uint64) string { return bytesLabel(float64(b)) },
	"ts":  func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:24px;color:#1f2328;background:#fff;max-width:1000px}
h1{font-size:20px;margin:0 0 4px}h3{font-size:14px;margin:16px 0 6px}h2{font-size:16px;margin:24px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.meta{color:#57606a;font-size:13px}.outcome{display:inline-block;padding:4px 10px;border-radius:12px;font-weight:600;font-size:14px;margin:8px 0}
.good{background:#dafbe1;color:#1a7f37}.bad{background:#ffebe9;color:#cf222e}.neutral{background:#fff8c5;color:#9a6700}
table{border-collapse:collapse;font-size:13px;width:100%}td,th{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f6f8fa}
svg text{font-size:11px;fill:#57606a}.legend span{display:inline-block;margin-right:16px;font-size:13px}.legend i{display:inline-block;width:18px;height:3px;margin-right:6px;vertical-align:middle}
pre{background:#f6f8fa;padding:8px;font-size:11px;overflow-x:auto}
</style></head><body>
<h1>{{.R.Kind}} on {{.Target}}</h1>
<div class="meta">record {{.R.ID}} · node {{.R.Node}} · rule {{if .R.Rule}}{{.R.Rule}}{{else}}-{{end}} · {{.Time}}{{if .R.TraceID}} · trace {{.R.TraceID}}{{end}}{{if .R.DryRun}} · dry-run{{end}}</div>
<div id="outcome" class="outcome {{.OutcomeClass}}">outcome: {{.R.Outcome}}</div>
<p id="decision">{{.R.Decision}}</p>
<h2>Memory timeline</h2>
{{if .HasChart}}<div class="legend">{{range .Series}}<span><i style="background:{{.Color}}"></i>{{.Label}}</span>{{end}}<span><i style="background:#1a7f37"></i>ladder step</span></div>
<svg id="chart" xmlns="http://www.w3.org/2000/svg" width="{{.W}}" height="{{.H}}" viewBox="0 0 {{.W}} {{.H}}" role="img" aria-label="memory timeline">
<rect x="{{.PadL}}" y="{{.PadT}}" width="{{.PlotW}}" height="{{.PlotH}}" fill="#fff" stroke="#d0d7de"/>
{{range .YTicks}}<line x1="{{$.PadL}}" x2="{{$.PlotR}}" y1="{{.Pos}}" y2="{{.Pos}}" stroke="#eaeef2"/><text x="{{$.PadL}}" dx="-6" y="{{.Pos}}" dy="4" text-anchor="end">{{.Label}}</text>{{end}}
{{range .PSITicks}}<text x="{{$.PlotR}}" dx="6" y="{{.Pos}}" dy="4">{{.Label}}</text>{{end}}
{{range .XTicks}}<text x="{{.Pos}}" y="{{$.PlotB}}" dy="16" text-anchor="middle">{{.Label}}</text>{{end}}
{{range .Series}}<path class="series" data-series="{{.Name}}" d="{{.Path}}" fill="none" stroke="{{.Color}}" stroke-width="2"{{if .Dash}} stroke-dasharray="{{.Dash}}"{{end}}/>
{{end}}{{range .Markers}}<g class="step-marker" data-step="{{.Index}}" data-action="{{.Action}}" data-result="{{.Result}}"><line x1="{{.X}}" x2="{{.X}}" y1="{{$.PadT}}" y2="{{$.PlotB}}" stroke="{{.Color}}" stroke-width="1.5" stroke-dasharray="4 3"/><circle cx="{{.X}}" cy="{{$.PlotB}}" r="4" fill="{{.Color}}"/><text x="{{.X}}" dx="{{.DX}}" y="{{.LabelY}}" text-anchor="{{.Anchor}}" style="fill:{{.Color}};font-weight:600">{{.Label}}</text><title>step {{.Label}} at {{.Time}}</title></g>
{{end}}</svg>{{else}}<p id="nochart">No samples of the target in this record.</p>{{end}}
<h2>Ladder</h2>
{{if .Steps}}<table id="steps"><tr><th>#</th><th>action</th><th>intent</th><th>took</th><th>result</th><th>detail</th><th>verify</th><th>error</th></tr>
{{range .Steps}}<tr><td>{{.Index}}</td><td>{{.Action}}</td><td>{{.Intent}}</td><td>{{.Took}}</td><td>{{.Result}}</td><td>{{.Detail}}</td><td>{{.Verify}}</td><td>{{.Error}}</td></tr>
{{end}}</table>{{else}}<p>No step ran.</p>{{end}}
<h2>Evidence</h2>
{{if .Signals}}<table id="evidence"><tr><th>signal</th><th>value at the decision</th></tr>{{range .Signals}}<tr><td>{{.Key}}</td><td>{{.Value}}</td></tr>{{end}}</table>{{end}}
{{if .Processes}}<h3>Top processes</h3><table id="processes"><tr><th>pid</th><th>name</th><th>rss</th></tr>{{range .Processes}}<tr><td>{{.PID}}</td><td>{{.Name}}</td><td>{{kib .RSSBytes}}</td></tr>{{end}}</table>{{end}}
{{if .Kills}}<h3>Kernel OOM kills</h3><table id="kills"><tr><th>time</th><th>pid</th><th>comm</th><th>anon-rss</th><th>constraint</th><th>cgroup</th></tr>{{range .Kills}}<tr><td>{{ts .Time}}</td><td>{{.PID}}</td><td>{{.Comm}}</td><td>{{kib .AnonRSSBytes}}</td><td>{{.Constraint}}</td><td>{{.CgroupPath}}</td></tr>{{end}}</table>
{{range .Kills}}{{if .Report}}<pre>{{range .Report}}{{.}}
{{end}}</pre>{{end}}{{end}}{{end}}
<h2>Outcome</h2>
{{if .Measurements}}<table id="measurements"><tr><th>measured</th><th>outcome</th></tr>{{range .Measurements}}<tr><td>{{.Key}}</td><td>{{.Value}}</td></tr>{{end}}</table>{{else}}<p>Not measured yet.</p>{{end}}
{{if .R.Errors}}<h3>Errors</h3><ul>{{range .R.Errors}}<li>{{.}}</li>{{end}}</ul>{{end}}
<p class="meta">Written by vigil rca.{{if not .R.Updated.IsZero}} Record last updated {{.Updated}}.{{end}}</p>
</body></html>
`))

package agent

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/vigil-agent/vigil/collectors"
)

var update = flag.Bool("update", false, "rewrite the generated sections of README.md")

const readmePath = "../README.md"

// TestReadmeGenerated fails when a generated section of README.md (config
// reference, signals, metrics) no longer matches its source; -update
// rewrites them.
func TestReadmeGenerated(t *testing.T) {
	readme, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile("../vigil.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	sections := map[string]string{
		"config":  "```yaml\n" + string(example) + "```\n",
		"signals": signalsTable(),
		"metrics": metricsTable(t),
	}
	got, err := replaceGenerated(readme, sections)
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(readmePath, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if !bytes.Equal(got, readme) {
		t.Errorf("README.md generated sections are stale: run go test ./agent -run TestReadmeGenerated -update")
	}
}

// replaceGenerated replaces the body between each
// "<!-- BEGIN GENERATED: name ... -->" and "<!-- END GENERATED: name -->".
func replaceGenerated(doc []byte, sections map[string]string) ([]byte, error) {
	out := string(doc)
	names := make([]string, 0, len(sections))
	for n := range sections {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		begin := "<!-- BEGIN GENERATED: " + name
		end := "<!-- END GENERATED: " + name + " -->"
		i := strings.Index(out, begin)
		if i < 0 {
			return nil, fmt.Errorf("README.md has no %q marker", begin)
		}
		j := strings.Index(out[i:], "-->")
		k := strings.Index(out, end)
		if j < 0 || k < i {
			return nil, fmt.Errorf("README.md section %s is not closed by %q", name, end)
		}
		bodyStart := i + j + len("-->\n")
		out = out[:bodyStart] + sections[name] + out[k:]
	}
	return []byte(out), nil
}

func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

func signalsTable() string {
	var b strings.Builder
	b.WriteString("Per cgroup:\n\n| Signal | Unit | Metric | Meaning |\n| --- | --- | --- | --- |\n")
	for _, s := range collectors.CgroupSignals {
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", s.Name, s.Unit, metricCell(s.Metric), cell(s.Help))
	}
	b.WriteString("\nNode (in rules also as `node.<signal>`):\n\n| Signal | Unit | Metric | Meaning |\n| --- | --- | --- | --- |\n")
	for _, s := range collectors.NodeSignals {
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", s.Name, s.Unit, metricCell(s.Metric), cell(s.Help))
	}
	return b.String()
}

func metricCell(m string) string {
	if m == "" {
		return "(rules only)"
	}
	return "`" + m + "`"
}

func kind(counter bool) string {
	if counter {
		return "counter"
	}
	return "gauge"
}

func metricsTable(t *testing.T) string {
	var b strings.Builder
	labels := "`" + strings.Join(cgroupLabelNames(), "`, `") + "`"
	b.WriteString("| Metric | Type | Labels | Help |\n| --- | --- | --- | --- |\n")
	for _, s := range collectors.CgroupSignals {
		if s.Metric != "" {
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", s.Metric, kind(s.Counter), labels, cell(s.Help))
		}
	}
	for _, s := range collectors.NodeSignals {
		if s.Metric != "" {
			fmt.Fprintf(&b, "| `%s` | %s | | %s |\n", s.Metric, kind(s.Counter), cell(s.Help))
		}
	}
	// Self-metrics, straight from an agent's registry.
	a, err := New(Options{Config: testConfig(t), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	a.SetDegraded("reason", "example") // so the vector has a child to gather
	mfs, err := a.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, s := range collectors.CgroupSignals {
		exported[s.Metric] = true
	}
	for _, s := range collectors.NodeSignals {
		exported[s.Metric] = true
	}
	for _, mf := range mfs {
		name := mf.GetName()
		if !strings.HasPrefix(name, "vigil_") || exported[name] {
			continue
		}
		var lnames []string
		if len(mf.Metric) > 0 {
			for _, l := range mf.Metric[0].Label {
				lnames = append(lnames, "`"+l.GetName()+"`")
			}
		}
		typ := strings.ToLower(mf.GetType().String())
		if mf.GetType() == dto.MetricType_UNTYPED {
			typ = "untyped"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", name, typ, strings.Join(lnames, ", "), cell(mf.GetHelp()))
	}
	for _, d := range collectorStatDefs {
		var lnames []string
		for _, l := range d.Labels {
			lnames = append(lnames, "`"+l+"`")
		}
		typ := "counter"
		if d.Gauge {
			typ = "gauge"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", d.Name, typ, strings.Join(lnames, ", "), cell(d.Help))
	}
	b.WriteString("\nPlus the standard `go_*` and `process_*` metrics of client_golang.\n")
	return b.String()
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	vmtest "github.com/vigil-agent/vigil/test/vm"
)

var allAgents = []string{"none", "earlyoom", "oomd", "vigil"}

type matrixOptions struct {
	Scenarios []string
	Agents    []string
	Cgroups   []int
	Out       string
	JSON      string
	OwnView   bool
	Rules     string
	Window    time.Duration
}

func cmdMatrix(ctx context.Context, log *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("scenarios", flag.ContinueOnError)
	run := fs.Bool("matrix", false, "run the matrix (required)")
	scs := fs.String("scenarios", "leak,spike,thrash,storm,crashloop,node", "scenarios to run")
	ags := fs.String("agents", strings.Join(allAgents, ","), "agents to run")
	cgs := fs.String("cgroups", "1,2", "cgroup versions: 1 = this host, 2 = the microVM")
	out := fs.String("out", "SCENARIOS.md", "results file (rewritten after every cell)")
	rules := fs.String("rules", "", "vigil rules directory that replaces the shipped rules (default: the shipped rules)")
	window := fs.Duration("window", 0, "override every scenario's window")
	jsonOut := fs.String("json", "", "also write the raw results as JSON to this file")
	ownView := fs.Bool("own-view", true, "cgroup v1: run vigil with host_root set to a private view of this process's own cgroup subtree, so other cgroups on the machine do not count against vigil's cgroup cap")
	from := fs.String("from", "", "render -out from these comma-separated -json files instead of running (no -matrix needed)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *from != "" {
		return renderFrom(split(*from), *out)
	}
	if !*run {
		fs.Usage()
		return errors.New("pass -matrix")
	}
	if *rules != "" {
		abs, err := filepath.Abs(*rules)
		if err != nil {
			return err
		}
		*rules = abs
	}
	o := matrixOptions{Scenarios: split(*scs), Agents: split(*ags), Out: *out, JSON: *jsonOut, Rules: *rules, Window: *window, OwnView: *ownView}
	for _, v := range split(*cgs) {
		switch v {
		case "1":
			o.Cgroups = append(o.Cgroups, 1)
		case "2":
			o.Cgroups = append(o.Cgroups, 2)
		default:
			return fmt.Errorf("-cgroups: %q is not 1 or 2", v)
		}
	}
	for _, s := range o.Scenarios {
		if _, ok := scenarioByName(s); !ok {
			return fmt.Errorf("unknown scenario %q", s)
		}
	}
	return runMatrix(ctx, log, o)
}

func split(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func runMatrix(ctx context.Context, log *slog.Logger, o matrixOptions) error {
	defer removeEmptyCgroups(missingMirrorAncestors())
	cache, err := cacheDir()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp(cache, "run-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bins := binaries{}
	if bins.Vigil, err = buildVigil(ctx, work); err != nil {
		return err
	}
	bins.EarlyOOM, bins.EarlyOOMWhy = debBinary(ctx, cache, "earlyoom", "usr/bin/earlyoom")
	bins.OOMD, bins.OOMDWhy = debBinary(ctx, cache, "oomd", "usr/bin/oomd")
	log.Info("agents", "vigil", bins.Vigil, "earlyoom", bins.EarlyOOM+bins.EarlyOOMWhy, "oomd", bins.OOMD+bins.OOMDWhy)

	rep := &report{Started: time.Now().UTC(), Options: o, Host: hostFacts()}
	flush := func() {
		if err := os.WriteFile(o.Out, rep.markdown(), 0o644); err != nil {
			log.Error("write results", "file", o.Out, "err", err)
		}
		if o.JSON != "" {
			b, _ := json.MarshalIndent(rep, "", "  ")
			if err := os.WriteFile(o.JSON, b, 0o644); err != nil {
				log.Error("write results", "file", o.JSON, "err", err)
			}
		}
	}
	for _, v := range o.Cgroups {
		if v == 1 {
			if cgroupVersion() != 1 {
				for _, s := range o.Scenarios {
					for _, a := range o.Agents {
						rep.add(CellResult{Scenario: s, Agent: a, Cgroup: 1, Kernel: kernelRelease(), Skipped: "this machine is not a cgroup v1 host"})
					}
				}
				continue
			}
			for _, s := range o.Scenarios {
				for _, a := range o.Agents {
					opts := cellOptions{Scenario: s, Agent: a, Vigil: bins.Vigil, EarlyOOM: bins.EarlyOOM, OOMD: bins.OOMD,
						Rules: o.Rules, DataDir: work, WorkDir: work, Window: o.Window, OwnView: o.OwnView, Log: log}
					res, err := runCell(ctx, opts)
					if err != nil {
						res.Skipped = "error: " + err.Error()
					}
					rep.add(res.withWhy(bins))
					flush()
					if ctx.Err() != nil {
						return ctx.Err()
					}
				}
			}
			continue
		}
		// cgroup v2: one microVM per scenario runs the same binary and
		// vigil inside, cell by cell.
		self, err := os.Executable()
		if err != nil {
			return err
		}
		for _, s := range o.Scenarios {
			results, err := runInVM(ctx, log, self, bins, o, s)
			if err != nil {
				for _, a := range o.Agents {
					rep.add(CellResult{Scenario: s, Agent: a, Cgroup: 2, Skipped: "microVM: " + firstLine(err.Error())})
				}
			}
			for _, r := range results {
				rep.add(r.withWhy(bins))
			}
			flush()
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	rep.Finished = time.Now().UTC()
	flush()
	return nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

type binaries struct {
	Vigil                 string
	EarlyOOM, EarlyOOMWhy string
	OOMD, OOMDWhy         string
}

// withWhy replaces a generic "not installable" by the reason found.
func (r CellResult) withWhy(b binaries) CellResult {
	switch {
	case r.Agent == "earlyoom" && b.EarlyOOM == "" && strings.HasPrefix(r.Skipped, "earlyoom not installable"):
		r.Skipped = "earlyoom not installable here: " + b.EarlyOOMWhy
	case r.Agent == "oomd" && b.OOMD == "" && strings.HasPrefix(r.Skipped, "oomd not installable"):
		r.Skipped = "oomd not installable here: " + b.OOMDWhy
	}
	return r
}

// runInVM runs scenario s under every requested agent inside the cgroup v2
// microVM, with this binary and vigil copied into the VM's share.
func runInVM(ctx context.Context, log *slog.Logger, self string, b binaries, o matrixOptions, s string) ([]CellResult, error) {
	sc, _ := scenarioByName(s)
	window := sc.Window
	if o.Window > 0 {
		window = o.Window
	}
	var script strings.Builder
	script.WriteString("mkdir -p /tmp/out/work\n")
	files := map[string]string{self: "scenarios", b.Vigil: "vigil"}
	rules := ""
	if o.Rules != "" {
		abs, err := filepath.Abs(o.Rules)
		if err != nil {
			return nil, err
		}
		rules = abs // the guest sees the host's root read-only
	}
	for _, a := range o.Agents {
		fmt.Fprintf(&script, "/tmp/out/scenarios cell -scenario %s -agent %s -vigil /tmp/out/vigil -earlyoom %q -oomd %q -rules %q -data /tmp/out -work /tmp/out/work -window %s > /tmp/out/res-%s.json 2> /tmp/out/log-%s.txt\n",
			s, a, b.EarlyOOM, b.OOMD, rules, o.Window, a, a)
	}
	script.WriteString("cp /tmp/out/work/*.log /tmp/out/ 2>/dev/null; true\n")
	timeout := time.Duration(len(o.Agents))*(window+90*time.Second) + 2*time.Minute
	log.Info("microVM", "scenario", s, "agents", o.Agents, "timeout", timeout)
	res, err := vmtest.Exec(ctx, vmtest.Spec{Script: script.String(), Files: files, Timeout: timeout,
		Logf: func(f string, a ...any) { log.Info(fmt.Sprintf(f, a...)) }})
	if res.OutDir != "" {
		defer os.RemoveAll(res.OutDir)
	}
	if err != nil {
		return nil, err
	}
	var out []CellResult
	for _, a := range o.Agents {
		r := CellResult{Scenario: s, Agent: a, Cgroup: 2, Kernel: res.Kernel}
		if a == "vigil" {
			r.Rules = o.Rules
		}
		data, rerr := os.ReadFile(filepath.Join(res.OutDir, "res-"+a+".json"))
		if rerr == nil {
			rerr = json.Unmarshal(bytes.TrimSpace(data), &r)
		}
		if rerr != nil {
			logTail, _ := os.ReadFile(filepath.Join(res.OutDir, "log-"+a+".txt"))
			r.Skipped = fmt.Sprintf("no result from the guest (%v): %s", rerr, firstLine(lastLines(string(logTail), 1)))
		}
		if logs, _ := filepath.Glob(filepath.Join(res.OutDir, "*.log")); len(logs) > 0 {
			for _, l := range logs {
				keep := filepath.Join(filepath.Dir(o.Out), ".scenario-logs")
				_ = os.MkdirAll(keep, 0o755)
				_ = copyFile(l, filepath.Join(keep, "v2-"+filepath.Base(l)))
			}
		}
		out = append(out, r)
	}
	return out, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// cacheDir is $XDG_CACHE_HOME/vigil-test/scenarios (default ~/.cache/...):
// not under /tmp, which the microVM hides behind its own tmpfs.
func cacheDir() (string, error) {
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("cache dir: %w", err)
		}
		base = filepath.Join(home, ".cache")
	}
	dir := filepath.Join(base, "vigil-test", "scenarios")
	return dir, os.MkdirAll(dir, 0o755)
}

// repoRoot finds the vigil module root from the working directory up.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.HasPrefix(b, []byte("module github.com/vigil-agent/vigil\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the vigil repository (go.mod of github.com/vigil-agent/vigil not found)")
		}
		dir = parent
	}
}

// buildVigil builds vigil from this checkout into dir.
func buildVigil(ctx context.Context, dir string) (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "vigil")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, ".")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build vigil: %w\n%s", err, b)
	}
	return out, nil
}

// debBinary returns a Debian package's binary, unpacked (apt-get download +
// dpkg -x, never installed: the packages would start host-wide services)
// into the cache, or "" and why not. The binary must start (--help) here.
func debBinary(ctx context.Context, cache, pkg, rel string) (string, string) {
	dir := filepath.Join(cache, pkg)
	bin := filepath.Join(dir, rel)
	if _, err := os.Stat(bin); err != nil {
		tmp, err := os.MkdirTemp(cache, "deb-")
		if err != nil {
			return "", err.Error()
		}
		defer os.RemoveAll(tmp)
		dl := exec.CommandContext(ctx, "apt-get", "download", pkg)
		dl.Dir = tmp
		if b, err := dl.CombinedOutput(); err != nil {
			return "", fmt.Sprintf("apt-get download %s: %v: %s", pkg, err, lastLines(string(b), 1))
		}
		debs, _ := filepath.Glob(filepath.Join(tmp, pkg+"_*.deb"))
		if len(debs) != 1 {
			return "", fmt.Sprintf("apt-get download %s left %d packages", pkg, len(debs))
		}
		if b, err := exec.CommandContext(ctx, "dpkg", "-x", debs[0], dir).CombinedOutput(); err != nil {
			return "", fmt.Sprintf("dpkg -x: %v: %s", err, b)
		}
	}
	b, err := exec.CommandContext(ctx, bin, "--help").CombinedOutput()
	if err != nil && strings.Contains(string(b), "error while loading shared libraries") {
		return "", fmt.Sprintf("%s does not start: %s (apt-get install its libraries)", pkg, strings.TrimSpace(string(b)))
	}
	return bin, ""
}

type hostInfo struct {
	Kernel string
	Cgroup int
	CPUs   int
	MemMiB uint64
}

func hostFacts() hostInfo {
	h := hostInfo{Kernel: kernelRelease(), Cgroup: cgroupVersion(), CPUs: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 && f[0] == "MemTotal:" {
				var kb uint64
				fmt.Sscan(f[1], &kb)
				h.MemMiB = kb >> 10
			}
		}
	}
	return h
}

// renderFrom merges reports saved with -json (e.g. a v1 run and a v2 run
// made separately) into one results file.
func renderFrom(files []string, out string) error {
	var merged *report
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var r report
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		if merged == nil {
			merged = &r
			continue
		}
		// A later file's cell replaces an earlier one of the same scenario,
		// agent and cgroup version (a re-run).
		for _, c := range r.Cells {
			replaced := false
			for i, m := range merged.Cells {
				if m.Scenario == c.Scenario && m.Agent == c.Agent && m.Cgroup == c.Cgroup && m.Rules == c.Rules {
					merged.Cells[i], replaced = c, true
				}
			}
			if !replaced {
				merged.Cells = append(merged.Cells, c)
			}
		}
		if r.Finished.IsZero() || merged.Finished.IsZero() {
			merged.Finished = time.Time{}
		} else if r.Finished.After(merged.Finished) {
			merged.Finished = r.Finished
		}
		merged.Runs = append(merged.Runs, r.Options)
	}
	if merged == nil {
		return errors.New("-from: no files")
	}
	return os.WriteFile(out, merged.markdown(), 0o644)
}

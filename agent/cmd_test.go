package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/agent/config"
	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/remediate"
	"github.com/vigil-agent/vigil/rules"
	"github.com/vigil-agent/vigil/rules/builtin"
	"github.com/vigil-agent/vigil/test/cgtest"
	"github.com/vigil-agent/vigil/test/testenv"
)

// runCmd runs a registered command in-process.
func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := LookupCommand(args[0])
	if cmd == nil {
		t.Fatalf("command %q not registered", args[0])
	}
	var out, errOut bytes.Buffer
	code = cmd.Run(context.Background(), args[1:], &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestSnapshotCommandOnRealHost(t *testing.T) {
	code, out, errOut := runCmd(t, "snapshot", "--format", "json")
	if code != 0 {
		t.Fatalf("vigil snapshot --format json = %d\n%s", code, errOut)
	}
	var snap collectors.Snapshot
	if err := json.Unmarshal([]byte(out), &snap); err != nil {
		t.Fatalf("output is not a snapshot: %v", err)
	}
	if snap.Hierarchy.Version != cgtest.Version() {
		t.Errorf("hierarchy version = %d, want %d", snap.Hierarchy.Version, cgtest.Version())
	}
	controller := "memory"
	if cgtest.Version() == 2 {
		controller = ""
	}
	own, err := cgtest.OwnPath(controller)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range snap.Cgroups {
		if c.Path == own {
			found = true
			if c.Memory.UsageBytes == 0 {
				t.Errorf("own cgroup %s has usage 0", own)
			}
		}
	}
	if !found {
		t.Errorf("snapshot lacks this test's own cgroup %s", own)
	}
	if snap.Node.MemTotalBytes == 0 || snap.Seq != 1 {
		t.Errorf("node MemTotal %d seq %d, want > 0 and 1", snap.Node.MemTotalBytes, snap.Seq)
	}

	code, out, errOut = runCmd(t, "snapshot")
	if code != 0 || !strings.Contains(out, "CGROUP") || !strings.Contains(out, "WORKING SET") {
		t.Errorf("vigil snapshot (table) = %d\n%s\n%s", code, out, errOut)
	}
}

// TestSnapshotCommandOnFixture reads a captured-style cgroup v2 host
// (testdata/hostroot-v2) and checks identities and derived signals.
func TestSnapshotCommandOnFixture(t *testing.T) {
	code, out, errOut := runCmd(t, "snapshot", "--format", "json", "--host-root", "testdata/hostroot-v2")
	if code != 0 {
		t.Fatalf("vigil snapshot = %d\n%s", code, errOut)
	}
	var snap collectors.Snapshot
	if err := json.Unmarshal([]byte(out), &snap); err != nil {
		t.Fatal(err)
	}
	if snap.Hierarchy.Mode != "unified" || snap.Hierarchy.Version != 2 {
		t.Errorf("hierarchy = %+v, want unified v2", snap.Hierarchy)
	}
	if snap.Node.Hostname != "fixture-node" {
		t.Errorf("hostname = %q, want fixture-node (from proc/sys/kernel/hostname)", snap.Node.Hostname)
	}
	byPath := map[string]collectors.CgroupSample{}
	for _, c := range snap.Cgroups {
		byPath[c.Path] = c
	}
	const container = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6b1f2c3d_4e5f_4a6b_8c7d_9e0f1a2b3c4d.slice/cri-containerd-3f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b6a7f8e9d0c1b2a3f4e.scope"
	tests := []struct {
		path       string
		kind       string
		podUID     string
		unit       string
		workingSet uint64 // memory.current - inactive_file
		limit      collectors.Bytes
		oomKills   uint64
	}{
		{container, "container", "6b1f2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "cri-containerd-3f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b6a7f8e9d0c1b2a3f4e.scope", 230686720 - 10485760, 268435456, 1},
		{"/system.slice/nginx.service", "unit", "", "nginx.service", 104857600 - 10485760, collectors.Unlimited, 0},
		{"/system.slice", "slice", "", "system.slice", 335544320 - 31457280, collectors.Unlimited, 0},
	}
	for _, tt := range tests {
		c, ok := byPath[tt.path]
		if !ok {
			t.Errorf("snapshot lacks %s", tt.path)
			continue
		}
		if c.Identity.Kind != tt.kind || c.Identity.PodUID != tt.podUID || c.Identity.Unit != tt.unit {
			t.Errorf("%s identity = %+v, want kind %s pod_uid %q unit %q", tt.path, c.Identity, tt.kind, tt.podUID, tt.unit)
		}
		if c.Derived.WorkingSetBytes != tt.workingSet {
			t.Errorf("%s working set = %d, want %d", tt.path, c.Derived.WorkingSetBytes, tt.workingSet)
		}
		if c.Memory.EffectiveLimitBytes != tt.limit {
			t.Errorf("%s effective limit = %d, want %d", tt.path, c.Memory.EffectiveLimitBytes, tt.limit)
		}
		if c.Events.OOMKill != tt.oomKills {
			t.Errorf("%s oom_kill = %d, want %d", tt.path, c.Events.OOMKill, tt.oomKills)
		}
	}

	code, out, _ = runCmd(t, "snapshot", "--host-root", "testdata/hostroot-v2", "--top", "2")
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	// node, memory, blank, header, 2 rows, "… more" line
	if code != 0 || len(lines) != 7 || !strings.HasPrefix(lines[4], "/kubepods.slice ") ||
		lines[6] != fmt.Sprintf("… %d more cgroups (--top 0 shows all)", len(snap.Cgroups)-2) {
		t.Errorf("--top 2 = %d:\n%s", code, out)
	}

	code, out, _ = runCmd(t, "snapshot", "--host-root", "testdata/hostroot-v2", "--sort", "path")
	if code != 0 {
		t.Fatalf("table = %d", code)
	}
	for _, want := range []string{"fixture-node", "unified (v2", "unit=nginx.service", "256Mi", "82.0", "container_id=3f4e5d6c7b8a"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestCommandUsageErrors(t *testing.T) {
	tests := []struct {
		args     []string
		wantCode int
		wantErr  string
	}{
		{[]string{"snapshot", "--format", "xml"}, 2, `unknown format "xml"`},
		{[]string{"snapshot", "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"snapshot", "--host-root", "/nonexistent"}, 1, "vigil snapshot:"},
		{[]string{"record"}, 2, "--out is required"},
		{[]string{"check-config"}, 2, "no config file given"},
		{[]string{"run", "--tick", "1ms"}, 1, "tick: must be between 10ms and 1m"},
		{[]string{"run", "--bogus"}, 2, "flag provided but not defined: -bogus"},
	}
	for _, tt := range tests {
		code, _, errOut := runCmd(t, tt.args...)
		if code != tt.wantCode || !strings.Contains(errOut, tt.wantErr) {
			t.Errorf("vigil %v = %d %q, want %d and %q", tt.args, code, errOut, tt.wantCode, tt.wantErr)
		}
	}
}

func TestEveryCommandHasHelp(t *testing.T) {
	for _, c := range Commands() {
		code, out, errOut := runCmd(t, c.Name, "--help")
		if code != 0 || !strings.Contains(out+errOut, "Usage: vigil "+c.Name) {
			t.Errorf("vigil %s --help = %d, stdout %q stderr %q", c.Name, code, out, errOut)
		}
		if c.Summary == "" {
			t.Errorf("command %s has no summary", c.Name)
		}
	}
}

func TestCheckConfigCommand(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("tick: 1s\nevents:\n  psi:\n    windw: 2s\nremediation:\n  max_concurrent: 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The shipped rules count when every action they name is in this
	// build; otherwise check-config warns and the agent runs without them.
	n, wantWarn := 0, ""
	if shipped, err := builtin.Load(rules.LoadOptions{Actions: remediate.Validators()}); err == nil {
		n = len(shipped.Rules)
	} else {
		wantWarn = "../vigil.example.yaml: warning: built-in rules do not compile in this build"
	}
	code, out, errOut := runCmd(t, "check-config", "../vigil.example.yaml")
	if want := fmt.Sprintf("../vigil.example.yaml: ok (%d rules, built-in true, 0 rule dirs)\n", n); code != 0 || out != want ||
		!strings.HasPrefix(errOut, wantWarn) || (wantWarn == "") != (errOut == "") {
		t.Errorf("check-config example = %d %q %q, want %q and a warning %q", code, out, errOut, want, wantWarn)
	}
	code, _, errOut = runCmd(t, "check-config", bad)
	want := bad + `:4:5: events.psi.windw: unknown field "windw"` + "\n"
	if code != 1 || errOut != want {
		t.Errorf("check-config bad = %d %q, want 1 %q", code, errOut, want)
	}
	valueErr := filepath.Join(dir, "value.yaml")
	if err := os.WriteFile(valueErr, []byte("remediation:\n  max_concurrent: 0\n  per_node:\n    burst: 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A config whose rule files do not compile is not valid either.
	rulesDir := filepath.Join(dir, "rules")
	if err := os.Mkdir(rulesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rulesDir, "r.yaml"), []byte("rules:\n- name: a\n  condition: usage_ration > 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	withRules := filepath.Join(dir, "with-rules.yaml")
	if err := os.WriteFile(withRules, []byte("rules:\n  builtin: false\n  dirs: ["+rulesDir+"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = runCmd(t, "check-config", withRules)
	want = filepath.Join(rulesDir, "r.yaml") + `:3:14: rule "a": condition: undeclared reference to 'usage_ration'`
	if code != 1 || !strings.HasPrefix(errOut, want) {
		t.Errorf("check-config with a bad rule = %d %q, want it to start with %q", code, errOut, want)
	}
	if err := os.WriteFile(filepath.Join(rulesDir, "r.yaml"), []byte("rules:\n- name: a\n  condition: usage_ratio > 0.9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = runCmd(t, "check-config", withRules)
	if code != 0 || out != withRules+": ok (1 rules, built-in false, 1 rule dirs)\n" {
		t.Errorf("check-config with a good rule = %d %q %q", code, out, errOut)
	}

	code, _, errOut = runCmd(t, "check-config", valueErr)
	want = valueErr + ":4:12: remediation.per_node.burst: must be at least 1, got 0\n" +
		valueErr + ":2:19: remediation.max_concurrent: must be at least 1, got 0\n"
	if code != 1 || errOut != want {
		t.Errorf("check-config value errors = %d\n%s\nwant\n%s", code, errOut, want)
	}
}

func TestVersionCommand(t *testing.T) {
	code, out, _ := runCmd(t, "version")
	bi := ReadBuildInfo()
	if code != 0 || !strings.HasPrefix(out, "vigil "+bi.Version+" (revision ") || !strings.Contains(out, bi.GoVersion) {
		t.Errorf("vigil version = %d %q", code, out)
	}
	code, out, _ = runCmd(t, "version", "--json")
	var got BuildInfo
	if err := json.Unmarshal([]byte(out), &got); err != nil || code != 0 || got != bi {
		t.Errorf("vigil version --json = %d %q (%v), want %+v", code, out, err, bi)
	}
}

// TestRecordCommand records the real host for a short while and checks
// the JSON lines are consecutive full snapshots.
func TestRecordCommand(t *testing.T) {
	out := filepath.Join(t.TempDir(), "rec.jsonl")
	code, _, errOut := runCmd(t, "record", "--out", out, "--count", "3", "--tick", "100ms")
	if code != 0 {
		t.Fatalf("vigil record = %d %s", code, errOut)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	var seqs []uint64
	for sc.Scan() {
		var snap collectors.Snapshot
		if err := json.Unmarshal(sc.Bytes(), &snap); err != nil {
			t.Fatalf("line %d: %v", len(seqs)+1, err)
		}
		if len(snap.Cgroups) == 0 || snap.Partial {
			t.Errorf("line %d: %d cgroups, partial %v", len(seqs)+1, len(snap.Cgroups), snap.Partial)
		}
		seqs = append(seqs, snap.Seq)
	}
	if len(seqs) != 3 {
		t.Fatalf("recorded %d snapshots, want 3", len(seqs))
	}
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Errorf("snapshot %d has seq %d", i, s)
		}
	}
	if !strings.Contains(errOut, "snapshots written to "+out) {
		t.Errorf("stderr = %q", errOut)
	}
}

// TestRunCommandReloadsOnSIGHUP runs `vigil run` in-process with a config
// file, sends the process SIGHUP with a broken and then a good file, and
// checks the broken one is rejected while the agent keeps serving.
func TestRunCommandReloadsOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	addr := testenv.FreeAddr(t)
	file := filepath.Join(dir, "vigil.yaml")
	good := "tick: 200ms\ndiscovery_interval: 1s\nself:\n  oom_score_adj: 0\nremediation:\n  journal:\n    path: " + filepath.Join(dir, "journal.db") + "\n"
	if err := os.WriteFile(file, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- LookupCommand("run").Run(ctx, []string{"--config", file, "--listen", addr, "--log-level", "debug"}, io.Discard, &stderr)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("vigil run exited %d\n%s", code, stderr.String())
			}
		case <-time.After(10 * time.Second):
			t.Errorf("vigil run did not stop")
		}
	})
	base := "http://" + addr
	testenv.Eventually(t, 10*time.Second, "vigil run to be ready", func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	reloadOK := func() float64 {
		_, body := get(t, base+"/metrics")
		v, _ := metricValue(body, "vigil_config_last_reload_successful", "")
		return v
	}

	if err := os.WriteFile(file, []byte(good+"tick_rate: 5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "the broken config to be rejected", func() bool { return reloadOK() == 0 })
	if !strings.Contains(stderr.String(), `unknown field \"tick_rate\"`) {
		t.Errorf("log does not name the bad field:\n%s", stderr.String())
	}
	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d after a rejected reload", code)
	}

	if err := os.WriteFile(file, []byte(strings.Replace(good, "tick: 200ms", "tick: 300ms", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "the good config to be applied", func() bool { return reloadOK() == 1 })
	if !strings.Contains(stderr.String(), "config reloaded") || !strings.Contains(stderr.String(), "tick=300ms") {
		t.Errorf("log does not show the reload:\n%s", stderr.String())
	}
}

// syncBuffer is a bytes.Buffer safe for the agent's logger and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestFlagsOverrideConfig checks that only the flags given on the command
// line override the file.
func TestFlagsOverrideConfig(t *testing.T) {
	file := filepath.Join(t.TempDir(), "vigil.yaml")
	if err := os.WriteFile(file, []byte("tick: 2s\ndiscovery_interval: 20s\nlisten: 127.0.0.1:1234\nlog:\n  level: warn\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args  []string
		check func(t *testing.T, c *config.Config)
	}{
		{[]string{"--config", file}, func(t *testing.T, c *config.Config) {
			if c.Tick != 2*time.Second || c.Listen != "127.0.0.1:1234" || c.Log.Level != "warn" || c.HostRoot != "/" {
				t.Errorf("file values not kept: %+v", c)
			}
		}},
		{[]string{"--config", file, "--tick", "500ms", "--listen", "127.0.0.1:9999", "--dry-run=false", "--log-level", "debug"}, func(t *testing.T, c *config.Config) {
			if c.Tick != 500*time.Millisecond || c.Listen != "127.0.0.1:9999" || c.Remediation.DryRun || c.Log.Level != "debug" {
				t.Errorf("flags did not override: %+v", c)
			}
			if c.DiscoveryInterval != 20*time.Second {
				t.Errorf("discovery_interval = %v, want the file's 20s", c.DiscoveryInterval)
			}
		}},
		{[]string{"--host-root", "testdata/hostroot-v2"}, func(t *testing.T, c *config.Config) {
			want, _ := filepath.Abs("testdata/hostroot-v2")
			if c.HostRoot != want || c.Tick != time.Second {
				t.Errorf("host_root %q tick %v, want %q and the default 1s", c.HostRoot, c.Tick, want)
			}
		}},
	}
	for _, tt := range tests {
		fs := NewFlagSet("run", "", io.Discard)
		flags := addConfigFlags(fs, true)
		if err := fs.Parse(tt.args); err != nil {
			t.Fatal(err)
		}
		c, err := flags.load()
		if err != nil {
			t.Fatalf("%v: %v", tt.args, err)
		}
		tt.check(t, c)
	}
}

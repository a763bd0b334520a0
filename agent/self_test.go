package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/test/cgtest"
	"github.com/vigil-agent/vigil/test/testenv"
	vmtest "github.com/vigil-agent/vigil/test/vm"
)

func TestParseProcCgroup(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []procCgroup
		wantErr bool
	}{
		{"v2", "0::/system.slice/vigil.service\n", []procCgroup{{ID: 0, Path: "/system.slice/vigil.service"}}, false},
		{"v1 hybrid", "4:memory:/a/b\n1:cpu,cpuacct:/\n0::/\n", []procCgroup{
			{ID: 4, Controllers: []string{"memory"}, Path: "/a/b"},
			{ID: 1, Controllers: []string{"cpu", "cpuacct"}, Path: "/"},
			{ID: 0, Path: "/"}}, false},
		{"path with colon", "0::/a:b\n", []procCgroup{{ID: 0, Path: "/a:b"}}, false},
		{"blank lines", "\n\n0::/\n\n", []procCgroup{{ID: 0, Path: "/"}}, false},
		{"empty", "", nil, false},
		{"two fields", "0:/\n", nil, true},
		{"bad id", "x::/\n", nil, true},
		{"negative id", "-1::/\n", nil, true},
		{"relative path", "0::a\n", nil, true},
	}
	for _, tt := range tests {
		got, err := parseProcCgroup([]byte(tt.in))
		if (err != nil) != tt.wantErr || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: parseProcCgroup(%q) = %+v, %v; want %+v, error %v", tt.name, tt.in, got, err, tt.want, tt.wantErr)
		}
	}
	own, err := readProcCgroup(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	controller := "memory"
	if cgtest.Version() == 2 {
		controller = ""
	}
	want, err := cgtest.OwnPath(controller)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := cgroupOf(own, controller); !ok || got != want {
		t.Errorf("own %q cgroup = %q (%v), want %q", controller, got, ok, want)
	}
}

func FuzzParseProcCgroup(f *testing.F) {
	files, _ := filepath.Glob("testdata/proc-cgroup/*")
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("0::\n:::\n4294967296:memory:/\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, err := parseProcCgroup(b)
		if err != nil {
			return
		}
		for _, e := range entries {
			if e.ID < 0 || !strings.HasPrefix(e.Path, "/") {
				t.Fatalf("accepted entry %+v from %q", e, b)
			}
			for _, c := range e.Controllers {
				if _, ok := cgroupOf(entries, c); !ok {
					t.Fatalf("controller %q listed but not found", c)
				}
			}
		}
	})
}

// childAgentEnv carries the config file of a child agent: the test binary
// re-executed with -test.run=^TestSelfAgentChild$ runs `vigil run` in its
// own process, so the agent can move itself, change its oom_score_adj and
// be killed without touching the test process.
const childAgentEnv = "VIGIL_TEST_CHILD_AGENT_CONFIG"

// TestSelfAgentChild is the child agent (skipped unless re-executed).
func TestSelfAgentChild(t *testing.T) {
	file := os.Getenv(childAgentEnv)
	if file == "" {
		t.Skip("runs only as a child agent")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if code := LookupCommand("run").Run(ctx, []string{"--config", file}, os.Stdout, os.Stderr); code != 0 {
		t.Fatalf("vigil run exited %d", code)
	}
}

// childAgent is a running child agent.
type childAgent struct {
	cmd  *exec.Cmd
	base string
	log  *syncBuffer
}

// startChildAgent writes cfgYAML (plus listen) and runs a child agent with
// extra environment; it is stopped with SIGKILL at cleanup.
func startChildAgent(t *testing.T, cfgYAML string, env ...string) *childAgent {
	t.Helper()
	addr := testenv.FreeAddr(t)
	file := filepath.Join(t.TempDir(), "vigil.yaml")
	if err := os.WriteFile(file, []byte("listen: "+addr+"\n"+cfgYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSelfAgentChild$", "-test.v")
	cmd.Env = append(append(os.Environ(), childAgentEnv+"="+file), env...)
	c := &childAgent{cmd: cmd, base: "http://" + addr, log: &syncBuffer{}}
	cmd.Stdout, cmd.Stderr = c.log, c.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("child agent log:\n%s", c.log.String())
		}
	})
	testenv.Eventually(t, 20*time.Second, "child agent to serve /healthz", func() bool {
		resp, err := http.Get(c.base + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return c
}

func (c *childAgent) readyz(t *testing.T) readyStatus {
	t.Helper()
	_, body := get(t, c.base+"/readyz?format=json")
	var st readyStatus
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("/readyz: %v: %s", err, body)
	}
	return st
}

func conditions(cs []Condition) map[string]string {
	m := map[string]string{}
	for _, c := range cs {
		m[c.Component] = c.Reason
	}
	return m
}

// TestDegradedModesOnRealHost runs a child agent that lacks what it asks
// for: a writable journal (its directory is a file), a reachable API server
// (the kubeconfig points at a closed port), probably CAP_SYS_RESOURCE (to
// lower its oom_score_adj) and, on cgroup v1, memory.min. It must keep
// observing (ticks advance, snapshots are served) and say what is missing
// on /readyz and in vigil_degraded. It runs in its own dedicated cgroup,
// created by the agent under a cgtest group.
func TestDegradedModesOnRealHost(t *testing.T) { testDegradedModes(t) }

// TestV2DegradedModes is the same in the cgroup v2 VM, where the agent's
// cgroup gets memory.min and memory.low.
func TestV2DegradedModes(t *testing.T) {
	vmtest.RequireGuest(t)
	testDegradedModes(t)
}

func testDegradedModes(t *testing.T) {
	g := cgtest.New(t)
	if g.Version == 2 {
		// The agent's cgroup (a child of g) gets the memory controller.
		g.Write(t, "", "cgroup.subtree_control", "+memory")
	}
	selfPath := g.Path() + "/vigil-agent"
	dir := t.TempDir()
	blocker := filepath.Join(dir, "not-a-dir")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	const minBytes, lowBytes = 16 << 20, 32 << 20
	cfg := fmt.Sprintf(`tick: 100ms
discovery_interval: 500ms
growth_window: 2s
events:
  enabled: false
self:
  oom_score_adj: -900
  cgroup: %s
  memory_min_bytes: %d
  memory_low_bytes: %d
remediation:
  journal:
    path: %s
kubernetes:
  enabled: true
`, selfPath, minBytes, lowBytes, filepath.Join(blocker, "journal.db"))
	c := startChildAgent(t, cfg, "NODE_NAME=vigil-test-node", "VIGIL_KUBECONFIG="+kubeconfig)
	pid := c.cmd.Process.Pid
	agentDir := filepath.Join(g.Dir("memory"), "vigil-agent")
	t.Cleanup(func() {
		// Runs before cgtest's removal of g: the agent is dead by then.
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
		_ = os.Remove(agentDir)
	})

	testenv.Eventually(t, 15*time.Second, "kubernetes_api degraded and journal not ready", func() bool {
		st := c.readyz(t)
		return conditions(st.Degraded)["kubernetes_api"] != "" && conditions(st.NotReady)["journal"] != ""
	})
	st := c.readyz(t)
	degraded := conditions(st.Degraded)

	// The dedicated cgroup: created by the agent, which runs in it.
	entries, err := readProcCgroup(pid)
	if err != nil {
		t.Fatal(err)
	}
	controller := "memory"
	if g.Version == 2 {
		controller = ""
	}
	if got, _ := cgroupOf(entries, controller); got != selfPath {
		t.Errorf("agent runs in %q, want its dedicated cgroup %q (degraded: %v)", got, selfPath, degraded)
	}
	if g.Version == 2 {
		for file, want := range map[string]int{"memory.min": minBytes, "memory.low": lowBytes} {
			b, err := os.ReadFile(filepath.Join(agentDir, file))
			if got := strings.TrimSpace(string(b)); err != nil || got != strconv.Itoa(want) {
				t.Errorf("%s = %q (%v), want %d", file, got, err, want)
			}
		}
		if d := degraded[degradedSelfMemProtect]; d != "" {
			t.Errorf("degraded %s = %q on v2", degradedSelfMemProtect, d)
		}
	} else if !strings.Contains(degraded[degradedSelfMemProtect], "cgroup v1") {
		t.Errorf("degraded %s = %q, want the v1 explanation", degradedSelfMemProtect, degraded[degradedSelfMemProtect])
	}

	// oom_score_adj: either lowered, or the missing capability reported.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid))
	if err != nil {
		t.Fatal(err)
	}
	if adj := strings.TrimSpace(string(b)); adj != "-900" && degraded["oom_score_adj"] == "" {
		t.Errorf("oom_score_adj = %s and not reported degraded", adj)
	}

	// It keeps observing: ticks advance and snapshots are served, and the
	// metric says what is missing.
	_, m1 := get(t, c.base+"/metrics")
	t1, _ := metricValue(m1, "vigil_last_tick_timestamp_seconds", "")
	testenv.Eventually(t, 5*time.Second, "ticks to advance while degraded", func() bool {
		_, m2 := get(t, c.base+"/metrics")
		t2, _ := metricValue(m2, "vigil_last_tick_timestamp_seconds", "")
		return t2 > t1
	})
	_, m := get(t, c.base+"/metrics")
	for _, reason := range []string{"kubernetes_api"} {
		if v, ok := metricValue(m, "vigil_degraded", `reason="`+reason+`"`); !ok || v != 1 {
			t.Errorf("vigil_degraded{reason=%q} = %v (found %v), want 1", reason, v, ok)
		}
	}
	if v, _ := metricValue(m, "vigil_ready", ""); v != 0 {
		t.Errorf("vigil_ready = %v without a journal, want 0", v)
	}
	if code, _ := get(t, c.base+"/api/v1/snapshot"); code != http.StatusOK {
		t.Errorf("/api/v1/snapshot = %d while degraded", code)
	}
	_, text := get(t, c.base+"/readyz")
	for _, want := range []string{"not ready: journal:", "degraded: kubernetes_api:"} {
		if !strings.Contains(string(text), want) {
			t.Errorf("/readyz text lacks %q:\n%s", want, text)
		}
	}
}

// TestSelfCgroupRefusesForeignCgroup: an existing cgroup holding another
// process is not the agent's: it stays where it is, degraded.
func TestSelfCgroupRefusesForeignCgroup(t *testing.T) {
	g := cgtest.New(t)
	cgtest.Start(t, g.Command("sleep", "600"))
	testenv.Eventually(t, 5*time.Second, "sleep in the foreign cgroup", func() bool { return len(g.Procs(t)) == 1 })
	procsBefore := g.Procs(t)
	c := startChildAgent(t, "tick: 100ms\ndiscovery_interval: 500ms\ngrowth_window: 2s\nevents:\n  enabled: false\nself:\n  oom_score_adj: 0\n  cgroup: "+
		g.Path()+"\nremediation:\n  journal:\n    path: "+filepath.Join(t.TempDir(), "j.db")+"\n")
	testenv.Eventually(t, 10*time.Second, "self_cgroup degraded", func() bool {
		return strings.Contains(conditions(c.readyz(t).Degraded)[degradedSelfCgroup], "not writing to a cgroup vigil did not create")
	})
	if got := g.Procs(t); !reflect.DeepEqual(got, procsBefore) {
		t.Errorf("foreign cgroup's procs changed: %v, want %v", got, procsBefore)
	}
}

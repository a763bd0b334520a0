package agent

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/agent/config"
	"github.com/vigil-agent/vigil/collectors/kmsg"
	"github.com/vigil-agent/vigil/remediate/journal"
	"github.com/vigil-agent/vigil/remediate/webhook"
	"github.com/vigil-agent/vigil/test/cgtest"
	"github.com/vigil-agent/vigil/test/otelcol"
	"github.com/vigil-agent/vigil/test/testenv"
	vmtest "github.com/vigil-agent/vigil/test/vm"
)

// TestKernelOOMKillFromKmsg: a real OOM kill in a test cgroup (64 MiB
// limit) is read from /dev/kmsg and becomes one journaled miss of that
// cgroup carrying the kernel's report, the kernel_oom_kills signal, a
// forwarded OOM record and an oom.missed webhook event.
func TestKernelOOMKillFromKmsg(t *testing.T) { testKernelOOMKillFromKmsg(t, true) }

// TestV2KernelOOMKillFromKmsg is the same in the cgroup v2 microVM (cgroup v2
// wording of the report), without the collector (not in the guest).
func TestV2KernelOOMKillFromKmsg(t *testing.T) {
	vmtest.RequireGuest(t)
	testKernelOOMKillFromKmsg(t, false)
}

func testKernelOOMKillFromKmsg(t *testing.T, collector bool) {
	f, err := os.Open(kmsg.DefaultPath)
	if err != nil {
		t.Skipf("the kernel log is not readable here (%v): kernel OOM reports cannot be read", err)
	}
	f.Close()
	var col *otelcol.Collector
	if collector {
		col = otelcol.Start(t)
	}
	g := cgtest.New(t)
	setLimit(t, g, strconv.Itoa(64<<20))

	secret := []byte("0123456789abcdef-test-secret")
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	recv, srv := newReceiver(t, secret)
	cfg := testConfig(t)
	// No rule may cover the cgroup (a shadow or refused finding of a
	// shipped rule would take the kill as its outcome instead of a miss).
	cfg.Rules.Builtin = false
	cfg.Webhooks.Outbound.Endpoints = []config.OutboundEndpoint{{Name: "test", URL: srv.URL, SecretFile: secretFile, Types: []string{webhook.EventOOMMissed}}}
	cfg.Webhooks.Outbound.MinBackoff = 100 * time.Millisecond
	if col != nil {
		cfg.Forward.Address = col.Forward
	}
	a := startAgent(t, Options{Config: cfg})
	base := "http://" + a.Addr()
	label := `cgroup="` + g.Path() + `"`
	tracked := false
	testenv.Eventually(t, 10*time.Second, "the kmsg reader running", func() bool {
		_, body := get(t, base+"/metrics")
		_, ok := metricValue(body, "vigil_kmsg_records_total", "")
		_, tracked = metricValue(body, "vigil_cgroup_memory_usage_bytes", label)
		return ok
	})

	cmd := g.Allocator(cgtest.AllocSpec{TotalMiB: 100, StepMiB: 4})
	cgtest.Start(t, cmd)
	_ = cmd.Wait()
	pid := cmd.Process.Pid

	var rec *journal.Record
	testenv.Eventually(t, 20*time.Second, "a miss of the test cgroup with the kernel's report", func() bool {
		recs, err := a.pipeline.journal.List(journal.Filter{Kind: journal.KindOOMMiss, Target: g.Path()})
		if err != nil || len(recs) == 0 {
			return false
		}
		rec = &recs[0]
		return len(rec.Evidence.KernelOOMKills) > 0
	})
	k := rec.Evidence.KernelOOMKills[0]
	if k.PID != pid || k.CgroupPath != g.Path() || k.Constraint != "CONSTRAINT_MEMCG" || k.AnonRSSBytes < 32<<20 || k.Comm == "" || len(k.Report) < 2 {
		t.Errorf("kernel evidence = pid %d comm %q cgroup %q constraint %q anon-rss %d, %d report lines; want pid %d in %s, CONSTRAINT_MEMCG, anon-rss >= 32 MiB",
			k.PID, k.Comm, k.CgroupPath, k.Constraint, k.AnonRSSBytes, len(k.Report), pid, g.Path())
	}
	if !strings.Contains(rec.Decision, "pid "+strconv.Itoa(pid)) {
		t.Errorf("decision %q does not name the killed pid %d", rec.Decision, pid)
	}

	// The cgroup's counter (memory.oom_control oom_kill) saw the same kill:
	// still one record.
	time.Sleep(1500 * time.Millisecond)
	recs, err := a.pipeline.journal.List(journal.Filter{Kind: journal.KindOOMMiss, Target: g.Path()})
	if err != nil || len(recs) != 1 {
		t.Errorf("miss records of %s = %d (%v), want 1", g.Path(), len(recs), err)
	}

	testenv.Eventually(t, 15*time.Second, "an oom.missed event naming the killed pid", func() bool {
		evs, _ := recv.snapshot()
		for _, e := range evs {
			if e.Type == webhook.EventOOMMissed && e.Target.Path == g.Path() && strings.Contains(e.Message, "pid "+strconv.Itoa(pid)) {
				return true
			}
		}
		return false
	})
	if _, bad := recv.snapshot(); len(bad) > 0 {
		t.Errorf("deliveries refused by the receiver: %v", bad)
	}
	if col != nil {
		col.WaitLogs(t, 20*time.Second, func(ls []otelcol.LogRecord) bool {
			for _, l := range ls {
				for _, m := range []map[string]any{l.Attrs, asMap(l.Body)} {
					if m["cgroup_path"] == g.Path() && m["pid"] == float64(pid) || m["cgroup_path"] == g.Path() && m["pid"] == int64(pid) {
						return true
					}
				}
			}
			return false
		})
	}
	if !tracked {
		t.Logf("%s is not tracked (the host holds more cgroups than max_cgroups): signal not checked", g.Path())
		return
	}
	testenv.Eventually(t, 10*time.Second, "kernel_oom_kills = 1 for the test cgroup", func() bool {
		_, body := get(t, base+"/metrics")
		v, _ := metricValue(body, "vigil_cgroup_kernel_oom_kills_total", label)
		return v == 1
	})
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// TestKmsgUnreadableDegrades: without a readable kernel log the agent
// keeps observing, ready, and says in /readyz and vigil_degraded why.
func TestKmsgUnreadableDegrades(t *testing.T) {
	root := t.TempDir() // a host root with /sys and /proc but no /dev/kmsg
	for _, d := range []string{"sys", "proc"} {
		if err := os.Symlink("/"+d, filepath.Join(root, d)); err != nil {
			t.Fatal(err)
		}
	}
	cfg := testConfig(t)
	cfg.HostRoot = root
	a := startAgent(t, Options{Config: cfg})
	base := "http://" + a.Addr()
	var st readyStatus
	testenv.Eventually(t, 10*time.Second, "ready, degraded by kmsg", func() bool {
		_, body := get(t, base+"/readyz?format=json")
		st = readyStatus{}
		_ = json.Unmarshal(body, &st)
		return st.Ready && strings.Contains(conditions(st.Degraded)["kmsg"], filepath.Join(root, "dev", "kmsg"))
	})
	_, body := get(t, base+"/metrics")
	if v, ok := metricValue(body, "vigil_degraded", `reason="kmsg"`); !ok || v != 1 {
		t.Errorf(`vigil_degraded{reason="kmsg"} = %v (found %v), want 1`, v, ok)
	}
	if _, ok := metricValue(body, "vigil_cgroup_memory_usage_bytes", ""); !ok {
		t.Errorf("cgroups not observed while the kernel log is unreadable")
	}
}

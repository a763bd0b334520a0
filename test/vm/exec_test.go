package vmtest

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func skipUnlessHost(t *testing.T) {
	t.Helper()
	if InGuest() {
		t.Skip("boots a VM: runs on the host")
	}
	if os.Getenv(SkipEnv) == "1" {
		t.Skip(SkipEnv + "=1")
	}
}

func TestExecScriptStatusAndFiles(t *testing.T) {
	skipUnlessHost(t)
	input := filepath.Join(t.TempDir(), "input.txt")
	if err := os.WriteFile(input, []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var live bytes.Buffer
	res, err := Exec(t.Context(), Spec{
		Script: `cat /tmp/out/in/input.txt > /tmp/out/copy.txt
cat /sys/fs/cgroup/cgroup.subtree_control > /tmp/out/subtree.txt
touch /should-fail 2>/dev/null && echo rw > /tmp/out/rootfs.txt || echo ro > /tmp/out/rootfs.txt
exit 3
`,
		Files:   map[string]string{input: "in/input.txt"},
		Timeout: 2 * time.Minute,
		OutDir:  t.TempDir(),
		Console: &live,
		Logf:    t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel %s, boot %s, total %s", res.Kernel, res.Boot.Round(time.Millisecond), res.Elapsed.Round(time.Millisecond))
	if res.ExitCode != 3 {
		t.Errorf("ExitCode = %d, want 3", res.ExitCode)
	}
	for _, tt := range []struct{ file, want string }{
		{"copy.txt", "from the host\n"},
		{"subtree.txt", "cpu io memory pids\n"},
		{"rootfs.txt", "ro\n"},
		{"rc", "3\n"},
	} {
		b, err := os.ReadFile(filepath.Join(res.OutDir, tt.file))
		if err != nil {
			t.Errorf("result file: %v", err)
		} else if string(b) != tt.want {
			t.Errorf("%s = %q, want %q", tt.file, b, tt.want)
		}
	}
	if !strings.Contains(res.Console, "VM-EXIT=3") || live.String() != res.Console {
		t.Errorf("console lacks VM-EXIT=3 or differs from the live copy:\n%s", tail(res.Console, 10))
	}
	if res.Boot <= 0 || res.Boot >= res.Elapsed {
		t.Errorf("Boot = %s, Elapsed = %s", res.Boot, res.Elapsed)
	}
}

func TestExecTimeoutKillsVM(t *testing.T) {
	skipUnlessHost(t)
	out := t.TempDir()
	const timeout = 5 * time.Second
	res, err := Exec(t.Context(), Spec{Script: "echo sleeping; sleep 600\n", Timeout: timeout, OutDir: out, Logf: t.Logf})
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Exec = %v, want ErrTimeout", err)
	}
	if !strings.Contains(err.Error(), "console tail") {
		t.Errorf("error has no console tail: %v", err)
	}
	// Elapsed is the VM's own run (the lock wait is not part of the timeout).
	if res.Elapsed > timeout+10*time.Second {
		t.Errorf("the VM ran %s with a %s timeout", res.Elapsed, timeout)
	}
	if pids := qemuUsing(t, out); len(pids) > 0 {
		t.Errorf("QEMU processes %v still use %s", pids, out)
	}
}

// qemuUsing lists processes whose command line mentions dir.
func qemuUsing(t *testing.T, dir string) []string {
	t.Helper()
	cmdlines, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	var pids []string
	for _, f := range cmdlines {
		b, err := os.ReadFile(f)
		if err == nil && bytes.Contains(b, []byte("path="+dir+",")) {
			pids = append(pids, filepath.Base(filepath.Dir(f)))
		}
	}
	return pids
}

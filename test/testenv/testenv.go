// Package testenv is what vigil's tests need from the machine they run on:
// a free loopback port, a Debian-packaged tool, a child process that dies
// with the test, and a condition to wait for. Harnesses with more to set up
// (cgroups, the microVM, Kubernetes, the OpenTelemetry Collector) have
// packages of their own next to this one.
package testenv

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// FreeAddr returns a loopback host:port that nothing listened on a moment
// ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// RequireTool returns the path of a Debian-packaged program the test needs
// (name from package pkg). Without it the test skips on a developer machine
// and fails in CI (CI set), where .ci/run installs it.
func RequireTool(t testing.TB, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	msg := fmt.Sprintf("%s not found in PATH: apt-get install -y %s", name, pkg)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// Eventually polls cond every 20 ms for up to within and fails the test,
// naming what it waited for, when cond never held.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StartProcess starts cmd with its output in a file of the test's temp dir,
// kills and reaps it at cleanup, and shows the end of its output when the
// test failed. It returns the log file's path.
func StartProcess(t testing.TB, name string, cmd *exec.Cmd) (logPath string) {
	t.Helper()
	logPath = filepath.Join(t.TempDir(), name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("%s output (last 4 KiB):\n%s", name, Tail(b, 4096))
		}
	})
	return logPath
}

// Tail is the last n bytes of b.
func Tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// WaitHTTP polls url until it answers 200 OK, failing the test after within.
func WaitHTTP(t testing.TB, url string, within time.Duration) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	Eventually(t, within, url+" to answer 200", func() bool {
		resp, err := client.Get(url)
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// LockHostCgroups holds, until t ends, the machine-wide lock between the
// tests that create cgroups outside their own subtree (a Kubernetes node's
// kubelet makes kubepods at the hierarchy's root and writes its pods'
// limits) and the test that audits every cgroup it did not create
// (test/hostguard): run side by side, the audit would take the node's
// cgroups for the machine's. It waits for the holder, if any.
func LockHostCgroups(t testing.TB) {
	t.Helper()
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil || home == "" {
			home = os.TempDir()
		}
		base = filepath.Join(home, ".cache")
	}
	dir := filepath.Join(base, "vigil-test")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "host-cgroups.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		t.Fatalf("testenv: lock %s: %v", f.Name(), err)
	}
	t.Cleanup(func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	})
}

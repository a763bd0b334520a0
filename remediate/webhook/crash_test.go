package webhook

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-agent/vigil/test/testenv"
)

// enqueuerEnv makes the re-executed test binary enqueue events into the
// outbox it names, printing each id once Enqueue returned, until killed.
const enqueuerEnv = "VIGIL_WEBHOOK_TEST_ENQUEUER"

func TestMain(m *testing.M) {
	if path := os.Getenv(enqueuerEnv); path != "" {
		os.Exit(runEnqueuer(path))
	}
	os.Exit(m.Run())
}

func runEnqueuer(path string) int {
	s, err := NewSender(crashConfig(path, "http://127.0.0.1:9/unused"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	w := bufio.NewWriter(os.Stdout)
	for i := 0; ; i++ {
		ev, err := s.Enqueue(testEvent(i, "/cg"))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Fprintln(w, ev.ID)
		w.Flush()
	}
}

func crashConfig(path, url string) SenderConfig {
	return SenderConfig{
		OutboxPath: path,
		Endpoints:  []Endpoint{{Name: "r", URL: url, Secret: []byte("crash-secret-0123456")}},
		MinBackoff: 20 * time.Millisecond,
		MaxBackoff: 100 * time.Millisecond,
	}
}

// TestSenderSurvivesKill9: a process enqueueing events is killed with
// SIGKILL mid-stream; every event whose Enqueue had returned is delivered by
// the next Sender on the same outbox, in order.
func TestSenderSurvivesKill9(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outbox.db")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), enqueuerEnv+"="+path)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var acked []string
	sc := bufio.NewScanner(stdout)
	for len(acked) < 40 && sc.Scan() {
		acked = append(acked, sc.Text())
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for sc.Scan() { // ids printed before the kill landed
		acked = append(acked, sc.Text())
	}
	cmd.Wait()
	if len(acked) < 40 {
		t.Fatalf("enqueuer acknowledged only %d events before dying", len(acked))
	}

	secret := []byte("crash-secret-0123456")
	r := newReceiver(t, secret)
	s, _ := startSender(t, crashConfig(path, r.srv.URL))
	testenv.Eventually(t, 30*time.Second, "every acknowledged event", func() bool { return len(dedupe(r.received())) >= len(acked) })
	got := dedupe(r.received())
	if !slices.Equal(got[:len(acked)], acked) {
		t.Errorf("delivered after kill -9 (first %d):\ngot  %v\nwant %v", len(acked), got[:len(acked)], acked)
	}
	testenv.Eventually(t, 30*time.Second, "the outbox to drain", func() bool {
		p, err := s.Pending()
		return err == nil && p["r"] == 0
	})
	t.Logf("%d events acknowledged before SIGKILL, %d delivered after restart", len(acked), len(dedupe(r.received())))
}

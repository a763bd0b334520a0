package vmtest

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// demoEnv enables the TestGuestDemo* tests, which pass, skip, fail and panic
// on purpose so that TestRunReportsGuestOutcomes can check how Run reports
// them. Run passes VIGIL_* variables on to the guest.
const demoEnv = "VIGIL_VMTEST_DEMO"

func TestRunReportsGuestOutcomes(t *testing.T) {
	skipUnlessHost(t)
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestRunDemo$", "-test.v", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), demoEnv+"=1")
	outb, err := cmd.CombinedOutput()
	out := string(outb)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("test binary with failing guest tests: %v, want exit status 1; output:\n%s", err, out)
	}
	for _, want := range []string{
		"--- PASS: TestRunDemo/TestGuestDemoPass",
		"--- SKIP: TestRunDemo/TestGuestDemoSkip",
		"skipped inside the VM: ",
		"demo skip reason",
		"--- FAIL: TestRunDemo/TestGuestDemoFail",
		"got 1, want 2 (deliberate)",
		"TestGuestDemoFail failed inside the cgroup v2 VM",
		"--- FAIL: TestRunDemo/TestGuestDemoPanic",
		"TestGuestDemoPanic failed inside the cgroup v2 VM",
		"panic: deliberate guest panic",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}

func TestRunDemo(t *testing.T) {
	if os.Getenv(demoEnv) != "1" {
		t.Skip("run by TestRunReportsGuestOutcomes")
	}
	Run(t, "^TestGuestDemo")
}

func guestDemo(t *testing.T) {
	t.Helper()
	RequireGuest(t)
	if os.Getenv(demoEnv) != "1" {
		t.Skip("run by TestRunReportsGuestOutcomes")
	}
}

func TestGuestDemoPass(t *testing.T) {
	guestDemo(t)
	t.Log("demo pass")
}

func TestGuestDemoSkip(t *testing.T) {
	guestDemo(t)
	t.Skip("demo skip reason")
}

func TestGuestDemoFail(t *testing.T) {
	guestDemo(t)
	t.Errorf("got %d, want %d (deliberate)", 1, 2)
}

func TestGuestDemoPanic(t *testing.T) {
	guestDemo(t)
	panic("deliberate guest panic")
}

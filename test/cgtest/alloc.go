package cgtest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// helperEnv marks a re-executed test binary that must act as an allocator.
const helperEnv = "VIGIL_CGTEST_ALLOC"

// AllocSpec describes what an allocator process does: touch StepMiB every
// Interval until TotalMiB are held, then hold them for Hold (0 = forever,
// until killed). It prints "held <MiB>" after each step.
type AllocSpec struct {
	TotalMiB int
	StepMiB  int
	Interval time.Duration
	Hold     time.Duration
}

func (s AllocSpec) String() string {
	return fmt.Sprintf("%d:%d:%d:%d", s.TotalMiB, s.StepMiB, s.Interval.Milliseconds(), s.Hold.Milliseconds())
}

// Allocator returns a command, to Start, that runs an allocator inside g. It
// re-executes the current test binary, whose TestMain must call Main.
func (g *Group) Allocator(spec AllocSpec) *exec.Cmd {
	cmd := g.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"="+spec.String())
	return cmd
}

// Main runs the tests, or acts as an allocator when the binary was
// re-executed by Allocator. Call it from TestMain:
//
//	func TestMain(m *testing.M) { cgtest.Main(m) }
func Main(m *testing.M) {
	if spec, ok := os.LookupEnv(helperEnv); ok {
		os.Exit(runAllocator(spec))
	}
	os.Exit(m.Run())
}

func runAllocator(spec string) int {
	var v [4]int
	parts := strings.Split(spec, ":")
	if len(parts) != 4 {
		fmt.Fprintln(os.Stderr, "cgtest allocator: bad spec", spec)
		return 2
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil {
			fmt.Fprintln(os.Stderr, "cgtest allocator:", err)
			return 2
		}
		v[i] = n
	}
	total, step, interval, hold := v[0], v[1], time.Duration(v[2])*time.Millisecond, time.Duration(v[3])*time.Millisecond
	if step <= 0 {
		step = total
	}
	var keep [][]byte
	for held := 0; held < total; {
		n := min(step, total-held)
		b := make([]byte, n<<20)
		for j := 0; j < len(b); j += 4096 {
			b[j] = 1
		}
		keep = append(keep, b)
		held += n
		fmt.Printf("held %d\n", held)
		if held < total && interval > 0 {
			time.Sleep(interval)
		}
	}
	if hold <= 0 {
		// Hold until killed. A bare select{} would trip the runtime's
		// deadlock detector once nothing else is running.
		hold = 1<<63 - 1
	}
	time.Sleep(hold)
	// Without this the buffers are dead after the loop and the GC hands
	// their memory back to the kernel while the test still counts on it.
	runtime.KeepAlive(keep)
	return 0
}

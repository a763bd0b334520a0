package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// oomdVersion is the Debian oomd the VM latency bench runs (bookworm's
// 0.5.0-1.2+b1).
const oomdVersion = "0.5.0"

// oomdParent is the cgroup, under the guest's cgroup2 root, whose children
// are the oomd trials; oomd's config watches and kills only its children.
const oomdParent = "vigil-bench-oomd"

// oomdLibPackages names the Debian package of each library oomd links that a
// host may lack; the package is unpacked next to oomd when ldd cannot find it.
var oomdLibPackages = map[string]string{
	"libjsoncpp.so.25": "libjsoncpp25",
	"libsystemd.so.0":  "libsystemd0",
}

// oomdBinary is Debian's oomd unpacked into the bench cache (never
// installed: its package would start a host-wide service), with the
// libraries it needs and the host lacks unpacked beside it. libPath is the
// LD_LIBRARY_PATH to run it with. The guest sees the host's root read-only,
// so both work there too.
func oomdBinary(ctx context.Context) (bin, libPath string, err error) {
	dir, err := cachedDeb(ctx, "oomd", oomdVersion)
	if err != nil {
		return "", "", err
	}
	bin = filepath.Join(dir, "usr", "bin", "oomd")
	for range 3 {
		libs, _ := filepath.Glob(filepath.Join(dir, "usr", "lib", "*-linux-gnu"))
		more, _ := filepath.Glob(filepath.Join(dir, "lib", "*-linux-gnu"))
		libPath = strings.Join(append(libs, more...), ":")
		ldd := exec.CommandContext(ctx, "ldd", bin)
		ldd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+libPath)
		out, err := ldd.CombinedOutput()
		if err != nil {
			return "", "", fmt.Errorf("ldd %s: %w: %s", bin, err, out)
		}
		missing := parseLddMissing(string(out))
		if len(missing) == 0 {
			return bin, libPath, nil
		}
		for _, soname := range missing {
			pkg, ok := oomdLibPackages[soname]
			if !ok {
				return "", "", fmt.Errorf("%s needs %s, which this host lacks and the bench does not know the package of", bin, soname)
			}
			if err := unpackDeb(ctx, pkg, "", dir); err != nil {
				return "", "", err
			}
		}
	}
	return "", "", fmt.Errorf("%s: libraries still missing after unpacking their packages into %s", bin, dir)
}

// parseLddMissing returns the sonames ldd reports as "not found".
func parseLddMissing(out string) []string {
	var missing []string
	for _, line := range strings.Split(out, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), " => ")
		if ok && strings.TrimSpace(rest) == "not found" {
			missing = append(missing, name)
		}
	}
	return missing
}

// oomdConfig is oomd's JSON config for the trials: one ruleset whose
// detector fires when the memory.current of any child of oomdParent is above
// threshold (memory_above, duration 0: on the first tick that sees it) and
// whose action SIGKILLs the biggest child (kill_by_memory_size_or_growth,
// no post-action pause so back-to-back trials are all acted on).
func oomdConfig(thresholdKiB uint64) ([]byte, error) {
	type plugin struct {
		Name string            `json:"name"`
		Args map[string]string `json:"args"`
	}
	type ruleset struct {
		Name      string   `json:"name"`
		Detectors [][]any  `json:"detectors"`
		Actions   []plugin `json:"actions"`
	}
	cg := oomdParent + "/*"
	cfg := map[string][]ruleset{"rulesets": {{
		Name: "vigil bench trial above threshold",
		Detectors: [][]any{{"memory.current above threshold",
			plugin{Name: "memory_above", Args: map[string]string{"cgroup": cg, "threshold": fmt.Sprintf("%dK", thresholdKiB), "duration": "0"}}}},
		Actions: []plugin{{Name: "kill_by_memory_size_or_growth", Args: map[string]string{"cgroup": cg, "post_action_delay": "0"}}},
	}}}
	return json.MarshalIndent(cfg, "", "  ")
}

// runOOMDTrials runs inside the v2 microVM while oomd watches oomdParent.
// Each trial is a fresh child of oomdParent with memory.max = limit and one
// allocating helper (this binary re-executed, runHelper) started straight
// into it (CLONE_INTO_CGROUP) after a random delay within oomd's interval.
// The helper prints the time of its first read of memory.current above
// oomd's threshold; oomd SIGKILLs it, so the kill is stamped here, when Wait
// returns. One line per trial: "<crossing ns> <reaped ns>", "<crossing ns>
// never" (no kill within 30 s), "early <ns>" (killed before its crossing),
// or "<crossing ns> other <why>" (died some other way).
//
// With -self-kill (run after oomd has stopped) the parent SIGKILLs each
// helper itself once it holds its memory, and prints "<kill ns> <reaped
// ns>": the part of oomd's figure that is the victim's exit and reaping.
func runOOMDTrials(args []string) int {
	fs := flag.NewFlagSet("vmoomd", flag.ContinueOnError)
	trials := fs.Int("trials", 1, "")
	limit := fs.Uint64("limit", 256<<20, "memory.max, bytes")
	threshold := fs.Uint64("threshold", 0, "oomd's memory_above threshold, bytes")
	interval := fs.Duration("interval", time.Second, "oomd's interval")
	selfKill := fs.Bool("self-kill", false, "kill each helper from here instead of waiting for oomd")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmoomd:", err)
		return 1
	}
	parent := filepath.Join("/sys/fs/cgroup", oomdParent)
	if err := os.Mkdir(parent, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "vmoomd:", err)
		return 1
	}
	defer removeTree(parent)
	if err := os.WriteFile(filepath.Join(parent, "cgroup.subtree_control"), []byte("+memory"), 0); err != nil {
		fmt.Fprintf(os.Stderr, "vmoomd: enable memory in %s: %v\n", parent, err)
		return 1
	}
	for i := range *trials {
		line, err := oomdTrial(self, filepath.Join(parent, "trial-"+strconv.Itoa(i)), *limit, *threshold, *interval, *selfKill)
		if err != nil {
			fmt.Fprintln(os.Stderr, "vmoomd:", err)
			return 1
		}
		fmt.Println(line)
	}
	return 0
}

func oomdTrial(self, dir string, limit, threshold uint64, interval time.Duration, selfKill bool) (string, error) {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", err
	}
	defer removeTree(dir)
	if err := os.WriteFile(filepath.Join(dir, "memory.max"), []byte(strconv.FormatUint(limit, 10)), 0); err != nil {
		return "", fmt.Errorf("set memory.max of %s: %w", dir, err)
	}
	cgroupFD, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", dir, err)
	}
	cmd := exec.Command(self)
	// oomd acts on usage strictly above its threshold: the helper's crossing
	// is its first read at or above threshold+1, and it stops 4 MiB past it
	// (far from memory.max: no reclaim, no kernel OOM kill).
	overshoot := min(4<<20, (limit-threshold)/2)
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s:%d:%d", helperEnv, filepath.Join(dir, "memory.current"), threshold+1, overshoot))
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: cgroupFD, Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		syscall.Close(cgroupFD)
		return "", err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		syscall.Close(cgroupFD)
		return "", err
	}
	err = cmd.Start()
	syscall.Close(cgroupFD)
	if err != nil {
		return "", fmt.Errorf("start the helper in %s: %w", dir, err)
	}
	defer stdin.Close()
	time.Sleep(rand.N(interval)) // a uniform phase against oomd's tick
	_, _ = stdin.Write([]byte("go\n"))
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	line = strings.TrimSpace(line)

	type reaped struct {
		at  time.Time
		err error
	}
	var killed time.Time
	if selfKill {
		time.Sleep(200 * time.Millisecond) // the helper's 4 MiB past the crossing
		killed = time.Now()
		_ = cmd.Process.Kill()
	}
	done := make(chan reaped, 1)
	go func() { err := cmd.Wait(); done <- reaped{time.Now(), err} }()
	var r reaped
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		return line + " never", nil
	}
	if _, err := strconv.ParseInt(line, 10, 64); err != nil {
		if line == "" {
			return fmt.Sprintf("early %d", r.at.UnixNano()), nil
		}
		return fmt.Sprintf("0 other helper-said-%q", line), nil
	}
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		return fmt.Sprintf("%s other %q", line, cmd.ProcessState.String()), nil
	}
	if n := oomKills(dir); n > 0 {
		return fmt.Sprintf("%s other kernel-oom-kill", line), nil
	}
	if selfKill {
		return fmt.Sprintf("%d %d", killed.UnixNano(), r.at.UnixNano()), nil
	}
	return fmt.Sprintf("%s %d", line, r.at.UnixNano()), nil
}

// oomKills is the oom_kill count in a cgroup's memory.events.
func oomKills(dir string) uint64 {
	b, _ := os.ReadFile(filepath.Join(dir, "memory.events"))
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
			n, _ := strconv.ParseUint(v, 10, 64)
			return n
		}
	}
	return 0
}

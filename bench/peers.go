package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Pinned peer versions.
const (
	cadvisorVersion     = "v0.53.0"
	nodeExporterVersion = "v1.10.1"
)

// cacheDir is $XDG_CACHE_HOME/vigil-test/bench (default ~/.cache/...).
func cacheDir() (string, error) {
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("cache dir: %w", err)
		}
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "vigil-test", "bench"), nil
}

// repoRoot finds the vigil module root from the working directory up.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.HasPrefix(string(b), "module github.com/vigil-agent/vigil\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the vigil repository (go.mod of github.com/vigil-agent/vigil not found)")
		}
		dir = parent
	}
}

func goBuild(ctx context.Context, log *slog.Logger, dir, out string, args ...string) (time.Duration, error) {
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-o", out}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("go build in %s: %w\n%s", dir, err, b)
	}
	d := time.Since(start)
	log.Info("built", "binary", out, "took", d.Round(time.Millisecond))
	return d, nil
}

// buildVigil builds vigil from the repository into dir (always fresh: the
// Go build cache makes it cheap).
func buildVigil(ctx context.Context, log *slog.Logger, dir string) (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "vigil")
	_, err = goBuild(ctx, log, root, out, ".")
	return out, err
}

// buildVigilAt builds vigil as of git revision rev of the repository into
// dir (its sources are exported there with git archive, the working tree is
// not touched). It returns the binary and "git <short hash>".
func buildVigilAt(ctx context.Context, log *slog.Logger, rev, dir string) (bin, version string, err error) {
	root, err := repoRoot()
	if err != nil {
		return "", "", err
	}
	out, err := exec.CommandContext(ctx, "git", "-C", root, "rev-parse", "--short", rev+"^{commit}").Output()
	if err != nil {
		return "", "", fmt.Errorf("git rev-parse %s: %w", rev, err)
	}
	short := strings.TrimSpace(string(out))
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", "", err
	}
	archive := exec.CommandContext(ctx, "sh", "-c", `git -C "$0" archive "$1" | tar -x -C "$2"`, root, short, src)
	if b, err := archive.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("exporting %s: %w\n%s", short, err, b)
	}
	bin = filepath.Join(dir, "vigil")
	if _, err := goBuild(ctx, log, src, bin, "."); err != nil {
		return "", "", err
	}
	return bin, "git " + short, nil
}

// cadvisorBinary returns the cached cAdvisor build, building it from
// bench/cadvisor (its own module) when missing and build is true.
func cadvisorBinary(ctx context.Context, log *slog.Logger, build bool) (string, error) {
	cache, err := cacheDir()
	if err != nil {
		return "", err
	}
	out := filepath.Join(cache, "cadvisor-"+cadvisorVersion, "cadvisor")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	if !build {
		return "", fmt.Errorf("cAdvisor %s is not built yet (%s): %w", cadvisorVersion, out, errNotCached)
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	log.Info("building cAdvisor (cold: about 1.5 min)", "version", cadvisorVersion)
	if _, err := goBuild(ctx, log, filepath.Join(root, "bench", "cadvisor"), out, "."); err != nil {
		return "", err
	}
	return out, nil
}

var errNotCached = errors.New("peer build not cached")

// nodeExporterBinary returns node_exporter: the cached go install build,
// else Debian's prometheus-node-exporter, else go install it.
func nodeExporterBinary(ctx context.Context, log *slog.Logger, build bool) (string, string, error) {
	cache, err := cacheDir()
	if err != nil {
		return "", "", err
	}
	dir := filepath.Join(cache, "node_exporter-"+nodeExporterVersion)
	out := filepath.Join(dir, "node_exporter")
	if _, err := os.Stat(out); err == nil {
		return out, nodeExporterVersion, nil
	}
	if build {
		log.Info("installing node_exporter", "version", nodeExporterVersion)
		cmd := exec.CommandContext(ctx, "go", "install", "github.com/prometheus/node_exporter@"+nodeExporterVersion)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOBIN="+dir)
		if b, err := cmd.CombinedOutput(); err == nil {
			return out, nodeExporterVersion, nil
		} else {
			log.Warn("go install node_exporter failed", "err", err, "output", string(b))
		}
	}
	if p, err := exec.LookPath("prometheus-node-exporter"); err == nil {
		return p, "debian", nil
	}
	return "", "", fmt.Errorf("node_exporter %s: %w", nodeExporterVersion, errNotCached)
}

// freePort reserves a loopback port for a peer's listener.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// peer is one program under measurement.
type peer struct {
	Name    string
	Version string
	Argv    []string
	Addr    string // host:port of /metrics
	Path    string // metrics path
	Env     []string
	Dir     string // working dir
}

// process is a started peer; stop kills it by pid.
type process struct {
	cmd     *exec.Cmd
	done    chan struct{}
	logFile *os.File
}

func startPeer(p peer, logPath string) (*process, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(p.Argv[0], p.Argv[1:]...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Dir = p.Dir
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", p.Name, err)
	}
	pr := &process{cmd: cmd, done: make(chan struct{}), logFile: lf}
	go func() { _ = cmd.Wait(); close(pr.done) }()
	return pr, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// exitError says how the process ended and what it last wrote.
func (p *process) exitError(name, when string) error {
	b, _ := os.ReadFile(p.logFile.Name())
	return fmt.Errorf("%s exited %s (%v; log %s):\n%s", name, when, p.cmd.ProcessState, p.logFile.Name(), tailLines(string(b), 20))
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, then SIGKILL after 5 s.
func (p *process) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.logFile.Close()
}

func itoa(i int) string { return strconv.Itoa(i) }

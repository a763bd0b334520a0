// Package otelcol builds the real OpenTelemetry Collector (with the OTLP and
// Fluent Forward receivers and the file exporter) and runs it for vigil's
// tests on loopback ports, so that what vigil forwards and exports can be
// read back as the collector received it.
//
// The binary is built once per version with the collector builder and
// cached under $XDG_CACHE_HOME/vigil-test/otelcol/<version>/ (default
// ~/.cache/...), behind a file lock so parallel test binaries build it once.
// The first build takes a minute or two.
package otelcol

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Version is the collector builder (and core receiver) version.
const (
	Version         = "v0.165.0"
	providerVersion = "v1.71.0"
)

// SkipEnv, set to 1, skips the tests that need the collector.
const SkipEnv = "VIGIL_SKIP_OTELCOL"

const manifest = `dist:
  name: otelcol-vigil
  description: OpenTelemetry Collector for vigil tests
  output_path: %s
receivers:
  - gomod: go.opentelemetry.io/collector/receiver/otlpreceiver %[2]s
  - gomod: github.com/open-telemetry/opentelemetry-collector-contrib/receiver/fluentforwardreceiver %[2]s
exporters:
  - gomod: go.opentelemetry.io/collector/exporter/debugexporter %[2]s
  - gomod: github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter %[2]s
providers:
  - gomod: go.opentelemetry.io/collector/confmap/provider/fileprovider %[3]s
  - gomod: go.opentelemetry.io/collector/confmap/provider/envprovider %[3]s
  - gomod: go.opentelemetry.io/collector/confmap/provider/yamlprovider %[3]s
`

// The builder writes no go.mod with --skip-get-modules: this one pins the
// components and lets `go mod tidy` resolve the rest.
const goMod = `module otelcol-vigil

go 1.26

require (
	go.opentelemetry.io/collector/receiver/otlpreceiver %[1]s
	github.com/open-telemetry/opentelemetry-collector-contrib/receiver/fluentforwardreceiver %[1]s
	go.opentelemetry.io/collector/exporter/debugexporter %[1]s
	github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter %[1]s
	go.opentelemetry.io/collector/confmap/provider/fileprovider %[2]s
	go.opentelemetry.io/collector/confmap/provider/envprovider %[2]s
	go.opentelemetry.io/collector/confmap/provider/yamlprovider %[2]s
)
`

// CacheDir is where the collector of this Version is built and kept.
func CacheDir() string {
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = os.TempDir()
		}
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "vigil-test", "otelcol", Version)
}

// Binary returns the path of the collector binary, building it first if it
// is not cached yet.
func Binary(ctx context.Context, logf func(string, ...any)) (string, error) {
	dir := CacheDir()
	bin := filepath.Join(dir, "otelcol-vigil")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("otelcol: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("otelcol: %w", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return "", fmt.Errorf("otelcol: lock %s: %w", lock.Name(), err)
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN)
	if _, err := os.Stat(bin); err == nil { // built by another process meanwhile
		return bin, nil
	}
	start := time.Now()
	logf("otelcol: building the collector %s in %s (first time only, a minute or two)", Version, dir)
	src := filepath.Join(dir, "src")
	if err := os.RemoveAll(src); err != nil {
		return "", fmt.Errorf("otelcol: %w", err)
	}
	gobin := filepath.Join(dir, "bin")
	env := append(os.Environ(), "CGO_ENABLED=0", "GOBIN="+gobin, "GOWORK=off")
	run := func(wd string, allowFail bool, name string, args ...string) error {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir, cmd.Env = wd, env
		out, err := cmd.CombinedOutput()
		if err != nil && !allowFail {
			return fmt.Errorf("otelcol: %s %s: %w\n%s", name, strings.Join(args, " "), err, tail(string(out), 20))
		}
		return nil
	}
	if err := run(dir, false, "go", "install", "go.opentelemetry.io/collector/cmd/builder@"+Version); err != nil {
		return "", err
	}
	mf := filepath.Join(dir, "manifest.yaml")
	if err := os.WriteFile(mf, fmt.Appendf(nil, manifest, src, Version, providerVersion), 0o644); err != nil {
		return "", fmt.Errorf("otelcol: %w", err)
	}
	if err := run(dir, false, filepath.Join(gobin, "builder"), "--config", mf, "--skip-get-modules", "--skip-compilation"); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), fmt.Appendf(nil, goMod, Version, providerVersion), 0o644); err != nil {
		return "", fmt.Errorf("otelcol: %w", err)
	}
	// -e: some test-only dependencies of the components are not served by
	// the proxy; tidy still writes a usable go.mod and exits non-zero.
	_ = run(src, true, "go", "mod", "tidy", "-e")
	tmp := bin + ".tmp"
	if err := run(src, false, "go", "build", "-trimpath", "-o", tmp, "."); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", fmt.Errorf("otelcol: %w", err)
	}
	logf("otelcol: built %s in %s", bin, time.Since(start).Round(time.Second))
	return bin, nil
}

// Collector is a running collector. Its pipelines: traces from OTLP (grpc
// and http) to traces.jsonl; logs from OTLP and Fluent Forward to
// logs.jsonl (file exporter, JSON lines, flushed every 100ms).
type Collector struct {
	// OTLPHTTP is the base URL of the OTLP/HTTP receiver
	// (http://127.0.0.1:port; traces at /v1/traces).
	OTLPHTTP string
	// OTLPGRPC is host:port of the OTLP/gRPC receiver.
	OTLPGRPC string
	// Forward is host:port of the Fluent Forward receiver.
	Forward string

	bin, dir, config string
	cmd              *exec.Cmd
	waitErr          chan error
	logPath          string
}

// Start builds (or reuses) the collector and runs it until the test ends.
func Start(t testing.TB) *Collector {
	t.Helper()
	if os.Getenv(SkipEnv) == "1" {
		t.Skip(SkipEnv + "=1: tests against the OpenTelemetry Collector are skipped")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bin, err := Binary(ctx, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c := &Collector{bin: bin, dir: dir, logPath: filepath.Join(dir, "collector.log")}
	ports := freePorts(t, 3)
	c.OTLPGRPC = fmt.Sprintf("127.0.0.1:%d", ports[0])
	c.OTLPHTTP = fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	c.Forward = fmt.Sprintf("127.0.0.1:%d", ports[2])
	c.config = filepath.Join(dir, "config.yaml")
	cfg := fmt.Sprintf(`receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %s
      http:
        endpoint: %s
  fluent_forward:
    endpoint: %s
exporters:
  file/traces:
    path: %s
    flush_interval: 100ms
    append: true
  file/logs:
    path: %s
    flush_interval: 100ms
    append: true
  debug:
    verbosity: basic
service:
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [file/traces]
    logs:
      receivers: [otlp, fluent_forward]
      exporters: [file/logs]
`, c.OTLPGRPC, strings.TrimPrefix(c.OTLPHTTP, "http://"), c.Forward,
		filepath.Join(dir, "traces.jsonl"), filepath.Join(dir, "logs.jsonl"))
	if err := os.WriteFile(c.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Stop(t)
		if t.Failed() {
			if b, err := os.ReadFile(c.logPath); err == nil {
				t.Logf("collector log (tail):\n%s", tail(string(b), 30))
			}
		}
	})
	c.start(t)
	return c
}

func (c *Collector) start(t testing.TB) {
	t.Helper()
	logf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(c.bin, "--config", "file:"+c.config)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("otelcol: start: %v", err)
	}
	c.cmd = cmd
	c.waitErr = make(chan error, 1)
	go func() { c.waitErr <- cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for _, addr := range []string{c.OTLPGRPC, strings.TrimPrefix(c.OTLPHTTP, "http://"), c.Forward} {
		for {
			conn, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				conn.Close()
				break
			}
			select {
			case err := <-c.waitErr:
				b, _ := os.ReadFile(c.logPath)
				t.Fatalf("otelcol exited during start: %v\n%s", err, tail(string(b), 30))
			default:
			}
			if time.Now().After(deadline) {
				b, _ := os.ReadFile(c.logPath)
				t.Fatalf("otelcol: %s not listening after 30s\n%s", addr, tail(string(b), 30))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// Stop terminates the collector (SIGTERM, then SIGKILL after 10s). It is
// safe to call more than once.
func (c *Collector) Stop(t testing.TB) {
	t.Helper()
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.waitErr:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.waitErr
	}
	c.cmd = nil
}

// Kill stops the collector abruptly (SIGKILL), as a crash would.
func (c *Collector) Kill(t testing.TB) {
	t.Helper()
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Kill()
	<-c.waitErr
	c.cmd = nil
}

// Restart starts a stopped collector again on the same ports; exported
// files are appended to.
func (c *Collector) Restart(t testing.TB) {
	t.Helper()
	if c.cmd != nil {
		t.Fatal("otelcol: Restart of a running collector")
	}
	c.start(t)
}

// TracesFile and LogsFile are the file exporter outputs.
func (c *Collector) TracesFile() string { return filepath.Join(c.dir, "traces.jsonl") }
func (c *Collector) LogsFile() string   { return filepath.Join(c.dir, "logs.jsonl") }

func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

var errTimeout = errors.New("otelcol: timed out")

// Package k8snode starts real Kubernetes control planes and nodes for
// vigil's tests: the light variant (etcd + kube-apiserver on loopback) for
// API-level tests, and a full single node (containerd + etcd + apiserver +
// kubelet, optionally controller-manager and scheduler) for end-to-end
// proofs. The Kubernetes binaries are built once from the Go module proxy
// into $XDG_CACHE_HOME/vigil-test/k8s/<version>/ (behind a file lock) and
// reused by every later run.
//
// Both run with every go test ./...: the heavy full-node tests (TestNode*)
// where the host can run a node (root and the Debian packages containerd,
// runc and containernetworking-plugins), unless -short or VIGIL_K8S_NODE=0.
// Alone:
//
//	go test ./test/k8snode -run TestNode -v -timeout 20m
//
// VIGIL_K8S_KEEP=1 keeps the directories with configs and logs.
package k8snode

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Version is the Kubernetes release the harness builds.
const Version = "v1.34.4"

// EtcdVersion is the etcd release the harness builds.
const EtcdVersion = "v3.6.6"

// Binaries are the paths of the built programs.
type Binaries struct {
	Dir               string
	Etcd              string
	APIServer         string
	Kubelet           string
	Kubectl           string
	ControllerManager string
	Scheduler         string
}

// CacheDir is where built artefacts live: $XDG_CACHE_HOME/vigil-test/k8s/<version>
// (default ~/.cache/vigil-test/k8s/<version>).
func CacheDir() string {
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil || home == "" {
			home = os.TempDir()
		}
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "vigil-test", "k8s", Version)
}

var kubeMains = map[string]string{
	"kubelet": `package main

import (
	"context"
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kubelet/app"
)

func main() {
	command := app.NewKubeletCommand(context.Background())
	os.Exit(cli.Run(command))
}
`,
	"kube-apiserver": `package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() { os.Exit(cli.Run(app.NewAPIServerCommand())) }
`,
	"kubectl": `package main

import (
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	if err := cli.RunNoErrOutput(cmd.NewDefaultKubectlCommand()); err != nil {
		util.CheckErr(err)
	}
}
`,
	"kube-controller-manager": `package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() { os.Exit(cli.Run(app.NewControllerManagerCommand())) }
`,
	"kube-scheduler": `package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() { os.Exit(cli.Run(app.NewSchedulerCommand())) }
`,
}

const etcdMain = `package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
`

const etcdGoMod = "module k8snode/etcd\n\ngo 1.24.0\n\nrequire go.etcd.io/etcd/server/v3 " + EtcdVersion + "\n"

// buildFlags are shared by every binary: static, no grpc tracing.
var buildFlags = []string{"-trimpath", "-tags", "grpcnotrace"}

func ldflags() string {
	ld := "-s -w"
	minor := strings.Split(strings.TrimPrefix(Version, "v"), ".")[1]
	for _, p := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		ld += fmt.Sprintf(" -X %s.gitVersion=%s -X %s.gitMajor=1 -X %s.gitMinor=%s -X %s.gitTreeState=clean -X %s.buildDate=2026-01-01T00:00:00Z", p, Version, p, p, minor, p, p)
	}
	return ld
}

// stamp identifies the build recipe; a cached build with another stamp is
// rebuilt.
func stamp() string {
	h := sha256.New()
	names := make([]string, 0, len(kubeMains))
	for n := range kubeMains {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(h, "%s\n%s\n", n, kubeMains[n])
	}
	fmt.Fprintf(h, "%s\n%s\n%s\n%v\n%s\n", Version, etcdMain, etcdGoMod, buildFlags, ldflags())
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Cached returns the binaries when a complete build of this recipe is in
// the cache, without building.
func Cached() (Binaries, bool) {
	bins := binaries(CacheDir())
	got, err := os.ReadFile(filepath.Join(bins.Dir, "built.stamp"))
	return bins, err == nil && strings.TrimSpace(string(got)) == stamp() && bins.allExist()
}

func binaries(dir string) Binaries {
	return Binaries{
		Dir:               dir,
		Etcd:              filepath.Join(dir, "etcd", "etcd"),
		APIServer:         filepath.Join(dir, "kbin", "bin", "kube-apiserver"),
		Kubelet:           filepath.Join(dir, "kbin", "bin", "kubelet"),
		Kubectl:           filepath.Join(dir, "kbin", "bin", "kubectl"),
		ControllerManager: filepath.Join(dir, "kbin", "bin", "kube-controller-manager"),
		Scheduler:         filepath.Join(dir, "kbin", "bin", "kube-scheduler"),
	}
}

// Build returns the cached binaries, building them first if needed (the cold
// build takes ~5 minutes on 2 cores and 1.8 GB of memory). Concurrent test
// binaries wait on a file lock.
func Build(t testing.TB) Binaries {
	t.Helper()
	dir := CacheDir()
	bins := binaries(dir)
	if _, err := exec.LookPath("go"); err != nil {
		t.Skipf("k8snode: no go toolchain to build Kubernetes %s: %v", Version, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("k8snode: %v", err)
	}
	unlock, err := lockFile(filepath.Join(dir, "build.lock"))
	if err != nil {
		t.Fatalf("k8snode: %v", err)
	}
	defer unlock()
	want := stamp()
	stampFile := filepath.Join(dir, "built.stamp")
	if got, err := os.ReadFile(stampFile); err == nil && strings.TrimSpace(string(got)) == want && bins.allExist() {
		return bins
	}
	t.Logf("k8snode: building Kubernetes %s and etcd %s into %s (cold: ~5 min)", Version, EtcdVersion, dir)
	start := time.Now()
	if err := buildAll(dir); err != nil {
		t.Fatalf("k8snode: build: %v", err)
	}
	if !bins.allExist() {
		t.Fatalf("k8snode: build finished but binaries are missing in %s", dir)
	}
	if err := os.WriteFile(stampFile, []byte(want+"\n"), 0o644); err != nil {
		t.Fatalf("k8snode: %v", err)
	}
	t.Logf("k8snode: built in %s", time.Since(start).Round(time.Second))
	return bins
}

func (b Binaries) allExist() bool {
	for _, p := range []string{b.Etcd, b.APIServer, b.Kubelet, b.Kubectl, b.ControllerManager, b.Scheduler} {
		if st, err := os.Stat(p); err != nil || st.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// goEnv is the environment of the Go commands of the build: static, outside
// any workspace, and independent of the caller's module flags.
func goEnv() []string {
	env := []string{"CGO_ENABLED=0", "GOWORK=off", "GOFLAGS="}
	for _, e := range os.Environ() {
		if strings.HasPrefix(e, "CGO_ENABLED=") || strings.HasPrefix(e, "GOWORK=") || strings.HasPrefix(e, "GOFLAGS=") {
			continue
		}
		env = append(env, e)
	}
	return env
}

func run(dir string, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = goEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		tail := out
		if len(tail) > 4000 {
			tail = tail[len(tail)-4000:]
		}
		return fmt.Errorf("%s %s in %s: %w\n%s", name, strings.Join(args, " "), dir, err, tail)
	}
	return nil
}

func buildAll(dir string) error {
	kbin := filepath.Join(dir, "kbin")
	if err := writeKubeModule(kbin); err != nil {
		return err
	}
	if err := run(kbin, "go", "mod", "tidy"); err != nil {
		return err
	}
	args := append([]string{"build"}, buildFlags...)
	args = append(args, "-ldflags", ldflags(), "-o", "bin/")
	for _, n := range []string{"kubelet", "kube-apiserver", "kubectl", "kube-controller-manager", "kube-scheduler"} {
		args = append(args, "./cmd/"+n)
	}
	if err := os.MkdirAll(filepath.Join(kbin, "bin"), 0o755); err != nil {
		return err
	}
	if err := run(kbin, "go", args...); err != nil {
		return err
	}
	etcd := filepath.Join(dir, "etcd")
	if err := os.MkdirAll(etcd, 0o755); err != nil {
		return err
	}
	if err := writeIfChanged(filepath.Join(etcd, "main.go"), etcdMain); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(etcd, "go.sum")); err != nil {
		if err := writeIfChanged(filepath.Join(etcd, "go.mod"), etcdGoMod); err != nil {
			return err
		}
	}
	if err := run(etcd, "go", "mod", "tidy"); err != nil {
		return err
	}
	args = append([]string{"build"}, buildFlags...)
	return run(etcd, "go", append(args, "-ldflags", "-s -w", "-o", "etcd", ".")...)
}

var stagingReplace = regexp.MustCompile(`(?m)^\s*(k8s\.io/[^\s]+)\s+=>\s+\./staging/`)

// writeKubeModule writes a module requiring k8s.io/kubernetes with each
// staging repo replaced by its published v0.<minor>.<patch>, plus the mains.
func writeKubeModule(kbin string) error {
	out, err := exec.Command("go", "mod", "download", "-json", "k8s.io/kubernetes@"+Version).Output()
	if err != nil {
		return fmt.Errorf("go mod download k8s.io/kubernetes@%s: %w", Version, err)
	}
	var info struct{ GoMod string }
	if err := json.Unmarshal(out, &info); err != nil || info.GoMod == "" {
		return fmt.Errorf("go mod download k8s.io/kubernetes@%s: no go.mod in %q", Version, out)
	}
	upstream, err := os.ReadFile(info.GoMod)
	if err != nil {
		return err
	}
	staging := "v0." + strings.TrimPrefix(Version, "v1.")
	var b strings.Builder
	fmt.Fprintf(&b, "module k8snode/kbin\n\ngo 1.24.0\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n", Version)
	n := 0
	for _, m := range stagingReplace.FindAllStringSubmatch(string(upstream), -1) {
		fmt.Fprintf(&b, "\t%s => %s %s\n", m[1], m[1], staging)
		n++
	}
	b.WriteString(")\n")
	if n < 20 {
		return fmt.Errorf("k8s.io/kubernetes@%s go.mod: found %d staging replaces, want ~31", Version, n)
	}
	if err := os.MkdirAll(kbin, 0o755); err != nil {
		return err
	}
	// Keep an existing go.mod/go.sum with the same replaces (tidy only adds).
	if old, err := os.ReadFile(filepath.Join(kbin, "go.mod")); err != nil || !strings.Contains(string(old), "require k8s.io/kubernetes "+Version) {
		if err := os.WriteFile(filepath.Join(kbin, "go.mod"), []byte(b.String()), 0o644); err != nil {
			return err
		}
	}
	for name, src := range kubeMains {
		d := filepath.Join(kbin, "cmd", name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if err := writeIfChanged(filepath.Join(d, "main.go"), src); err != nil {
			return err
		}
	}
	return nil
}

func writeIfChanged(path, content string) error {
	if old, err := os.ReadFile(path); err == nil && string(old) == content {
		return nil
	}
	return os.WriteFile(path, []byte(content), 0o644)
}

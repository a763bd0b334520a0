package k8snode

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/vigil-agent/vigil/deploy/image/oci"
	"github.com/vigil-agent/vigil/test/testenv"
)

// NodeName is the test node's name: an IP literal, so the kubelet uses it
// verbatim as InternalIP without DNS lookups and every address stays on
// loopback.
const NodeName = "127.0.0.1"

// Images every node imports.
const (
	PauseImage = "k8s.local/pause:3.10"
	AppImage   = "k8s.local/app:v1"
)

// Node is a running single-node cluster: containerd, etcd, kube-apiserver,
// kubelet (and with controllers kube-controller-manager, kube-scheduler).
type Node struct {
	*API
	// ContainerdSocket is containerd's CRI socket (unix path).
	ContainerdSocket string
	// KubeletRoot is the kubelet's --root-dir.
	KubeletRoot string

	hostPathsCreated []string
	sysctls          map[string]string
	procsNode        []*proc
}

// sysctls the kubelet rewrites at start; restored at cleanup.
var nodeSysctls = []string{"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"}

// Host paths with hard-coded locations that a node creates; those that did
// not exist before are removed at cleanup.
var nodeHostPaths = []string{"/var/lib/kubelet", "/var/log/containers", "/var/log/pods", "/run/containerd", "/var/lib/cni",
	"/run/netns", "/run/mount", "/usr/libexec/kubernetes", "/etc/kubernetes", "/var/lib/containerd", "/opt/containerd"}

// RequireNodeHost skips t unless this host can run a node: root, and the
// Debian packages containerd, runc and containernetworking-plugins.
func RequireNodeHost(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("k8snode: a node needs root")
	}
	for _, p := range []string{"containerd", "runc", "ctr"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("k8snode: %s not installed (apt-get install containerd runc containernetworking-plugins)", p)
		}
	}
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		t.Skip("k8snode: CNI plugins not installed (apt-get install containernetworking-plugins)")
	}
}

// StartNode starts a full single node and undoes everything at cleanup:
// pods deleted, every process killed by pid, sandboxes removed, mounts
// unmounted, kubepods cgroups removed, sysctls restored, created host
// paths removed. Only one node runs at a time on a host (file lock). With
// withControllers the controller-manager and scheduler run too.
func StartNode(t testing.TB, withControllers bool) *Node {
	t.Helper()
	RequireNodeHost(t)
	bins := Build(t)
	unlock, err := lockFile(filepath.Join(CacheDir(), "node.lock"))
	if err != nil {
		t.Fatalf("k8snode: %v", err)
	}
	t.Cleanup(unlock)
	// The kubelet makes kubepods at the root of each hierarchy: not while
	// test/hostguard audits every cgroup the tests did not create.
	testenv.LockHostCgroups(t)
	dir, err := os.MkdirTemp("", "vigil-k8snode-")
	if err != nil {
		t.Fatalf("k8snode: %v", err)
	}
	n := &Node{sysctls: map[string]string{}}
	// Registered first, so it runs last: after every process is gone.
	t.Cleanup(func() { n.restoreHost(t, dir) })
	for _, s := range nodeSysctls {
		if b, err := os.ReadFile("/proc/sys/" + s); err == nil {
			n.sysctls[s] = strings.TrimSpace(string(b))
		}
	}
	for _, p := range nodeHostPaths {
		if _, err := os.Stat(p); os.IsNotExist(err) {
			n.hostPathsCreated = append(n.hostPathsCreated, p)
		}
	}
	run := filepath.Join(dir, "run")
	for _, d := range []string{"containerd", "kubelet", "manifests", "pod-logs", "kubelet-plugins", "cni/net.d", "images"} {
		if err := os.MkdirAll(filepath.Join(run, d), 0o755); err != nil {
			t.Fatalf("k8snode: %v", err)
		}
	}
	n.ContainerdSocket = filepath.Join(run, "containerd", "containerd.sock")
	n.KubeletRoot = filepath.Join(run, "kubelet")
	if err := writeNodeConfigs(dir, run); err != nil {
		t.Fatalf("k8snode: %v", err)
	}
	images := buildImages(t, filepath.Join(run, "images"))

	// containerd.service runs with LimitNOFILE=infinity and containers
	// inherit it. Without that, vigil in the DaemonSet inherits this test's
	// limit, which caps the cgroups it tracks (RLIMIT_NOFILE over the files
	// held per cgroup) and leaves pod cgroups created later untracked on a
	// host whose other cgroups (other tests' churn) fill the cap.
	raiseNofile(t)
	ctrd := startProc(t, run, "containerd", "containerd", "--config", filepath.Join(dir, "containerd.toml"))
	n.procsNode = append(n.procsNode, ctrd)
	// Stop order at cleanup (reverse of registration): controllers,
	// pods, kubelet, sandboxes, containerd, then the API.
	t.Cleanup(func() { n.stopRuntime(t, ctrd) })
	ports := freePorts(t, 3)
	api, err := startAPI(t, bins, dir, apiPorts{etcdClient: ports[0], etcdPeer: ports[1], secure: ports[2]},
		[]string{"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction"},
		[]string{`kubelet-token-0123456789,system:node:` + NodeName + `,kubelet-uid,"system:nodes"`})
	if err != nil {
		t.Fatalf("k8snode: %v", err)
	}
	n.API = api
	if err := waitFor(30*time.Second, func() error { return n.ctr("version") }); err != nil {
		t.Fatalf("k8snode: containerd: %v (log %s)", err, filepath.Join(run, "containerd.log"))
	}
	for _, img := range images {
		n.ImportImage(t, img)
	}
	if !withControllers {
		n.namespaceBasics(t, "default")
	}
	kubeletKC := filepath.Join(dir, "kubelet.kubeconfig")
	if err := os.WriteFile(kubeletKC, []byte(api.KubeconfigFor("kubelet", "kubelet-token-0123456789")), 0o600); err != nil {
		t.Fatal(err)
	}
	kubelet := startProc(t, run, "kubelet", bins.Kubelet, "--config="+filepath.Join(dir, "kubelet-config.yaml"),
		"--kubeconfig="+kubeletKC, "--hostname-override="+NodeName, "--root-dir="+n.KubeletRoot,
		"--cert-dir="+filepath.Join(n.KubeletRoot, "pki"), "--v=2")
	n.procsNode = append(n.procsNode, kubelet)
	t.Cleanup(func() { n.stopKubelet(t, kubelet) })
	if err := waitFor(120*time.Second, func() error { return n.nodeReady() }); err != nil {
		t.Fatalf("k8snode: node %s not Ready: %v (log %s)", NodeName, err, filepath.Join(run, "kubelet.log"))
	}
	if withControllers {
		kcm := startProc(t, run, "kcm", bins.ControllerManager, "--kubeconfig="+api.Kubeconfig, "--bind-address=127.0.0.1",
			"--secure-port=10257", "--leader-elect=false", "--service-account-private-key-file="+filepath.Join(dir, "sa.key"),
			"--root-ca-file="+api.CAFile, "--use-service-account-credentials=false",
			"--flex-volume-plugin-dir="+filepath.Join(run, "kcm-flexvolume"))
		sched := startProc(t, run, "scheduler", bins.Scheduler, "--kubeconfig="+api.Kubeconfig, "--bind-address=127.0.0.1",
			"--secure-port=10259", "--leader-elect=false")
		n.procsNode = append(n.procsNode, kcm, sched)
		t.Cleanup(func() { sched.stop(10 * time.Second); kcm.stop(10 * time.Second); n.deleteAllPods(t) })
		insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 2 * time.Second}
		if err := waitHTTP(kcm, "https://127.0.0.1:10257/healthz", insecure, 60*time.Second); err != nil {
			t.Fatalf("k8snode: kube-controller-manager: %v", err)
		}
		if err := waitHTTP(sched, "https://127.0.0.1:10259/healthz", insecure, 60*time.Second); err != nil {
			t.Fatalf("k8snode: kube-scheduler: %v", err)
		}
	}
	return n
}

// namespaceBasics creates what kube-controller-manager would in a new
// namespace: the default ServiceAccount and the kube-root-ca.crt ConfigMap.
func (n *Node) namespaceBasics(t testing.TB, ns string) {
	t.Helper()
	n.Namespace(t, ns)
	ca, err := os.ReadFile(n.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kube-root-ca.crt", Namespace: ns}, Data: map[string]string{"ca.crt": string(ca)}}
	if _, err := n.Client.CoreV1().ConfigMaps(ns).Create(context.Background(), cm, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("k8snode: %v", err)
	}
}

// PrepareNamespace makes namespace ns usable by pods on a node without
// controllers (ServiceAccount and root CA ConfigMap).
func (n *Node) PrepareNamespace(t testing.TB, ns string) { n.namespaceBasics(t, ns) }

func (n *Node) ctr(args ...string) error {
	out, err := exec.Command("ctr", append([]string{"-a", n.ContainerdSocket, "-n", "k8s.io"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// ImportImage imports an OCI image-layout tar into the node's containerd.
func (n *Node) ImportImage(t testing.TB, tarPath string) {
	t.Helper()
	if err := n.ctr("images", "import", tarPath); err != nil {
		t.Fatalf("k8snode: %v", err)
	}
}

func (n *Node) nodeReady() error {
	node, err := n.Client.CoreV1().Nodes().Get(context.Background(), NodeName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
			return nil
		}
	}
	return fmt.Errorf("node %s not Ready yet", NodeName)
}

func waitFor(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("after %s: %w", timeout, err)
}

func (n *Node) deleteAllPods(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pods, err := n.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Logf("k8snode: list pods: %v", err)
		return
	}
	for _, p := range pods.Items {
		_ = n.Client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptrInt64(2)})
	}
	_ = waitFor(45*time.Second, func() error {
		pods, err := n.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		if len(pods.Items) > 0 {
			return fmt.Errorf("%d pods left", len(pods.Items))
		}
		return nil
	})
}

func ptrInt64(v int64) *int64 { return &v }

func (n *Node) stopKubelet(t testing.TB, kubelet *proc) {
	n.deleteAllPods(t)
	kubelet.stop(15 * time.Second)
	// Sandboxes the kubelet's GC did not get to.
	conn, err := grpc.NewClient("unix://"+n.ContainerdSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return
	}
	defer conn.Close()
	rs := runtimeapi.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	list, err := rs.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return
	}
	for _, sb := range list.Items {
		_, _ = rs.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.Id})
		_, _ = rs.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.Id})
	}
}

// stopRuntime stops containerd and kills shims and container processes
// that belong to this node's containerd only.
func (n *Node) stopRuntime(t testing.TB, ctrd *proc) {
	ctrd.stop(15 * time.Second)
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid <= 1 {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		c := string(cmd)
		if strings.Contains(c, "containerd-shim") && strings.Contains(c, n.ContainerdSocket) {
			// The shim's process group holds it alone; kill it by pid.
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// restoreHost runs last: unmount, remove cgroups, bridge, sysctls, host
// paths and the directory.
func (n *Node) restoreHost(t testing.TB, dir string) {
	for _, p := range n.procsNode {
		p.stop(5 * time.Second)
	}
	for _, m := range mountsUnder(dir) {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			t.Logf("k8snode: umount %s: %v", m, err)
		}
	}
	removeKubepods(t)
	_ = exec.Command("ip", "link", "delete", "k8snode0").Run()
	for s, v := range n.sysctls {
		if cur, err := os.ReadFile("/proc/sys/" + s); err == nil && strings.TrimSpace(string(cur)) != v {
			if err := os.WriteFile("/proc/sys/"+s, []byte(v), 0o644); err != nil {
				t.Logf("k8snode: restore sysctl %s=%s: %v", s, v, err)
			}
		}
	}
	for _, p := range n.hostPathsCreated {
		for _, m := range mountsUnder(p) {
			_ = syscall.Unmount(m, syscall.MNT_DETACH)
		}
		if err := os.RemoveAll(p); err != nil {
			t.Logf("k8snode: remove %s: %v", p, err)
		}
	}
	if t.Failed() || os.Getenv("VIGIL_K8S_KEEP") != "" {
		t.Logf("k8snode: kept %s (logs under run/)", dir)
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Logf("k8snode: remove %s: %v", dir, err)
	}
}

// mountsUnder lists mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := strings.ReplaceAll(fields[4], `\040`, " ")
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// removeKubepods removes the kubepods cgroup trees the kubelet and runc
// leave in every hierarchy, depth first.
func removeKubepods(t testing.TB) {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods")
	if _, err := os.Stat("/sys/fs/cgroup/kubepods"); err == nil {
		roots = append(roots, "/sys/fs/cgroup/kubepods")
	}
	for _, root := range roots {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(dirs[i]); err != nil && !os.IsNotExist(err) {
				t.Logf("k8snode: rmdir %s: %v", dirs[i], err)
			}
		}
	}
}

// buildImages builds the pause and app programs of this package and writes
// them as OCI image tars.
func buildImages(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	for _, img := range []struct{ pkg, name, bin string }{
		{"./images/pause", PauseImage, "pause"},
		{"./images/app", AppImage, "app"},
	} {
		bin := filepath.Join(dir, img.bin)
		BuildStatic(t, img.pkg, bin)
		tarPath := filepath.Join(dir, img.bin+".tar")
		if _, err := oci.WriteFile(tarPath, oci.Image{Name: img.name, Entrypoint: []string{"/" + img.bin},
			Files: []oci.File{{Src: bin, Dest: "/" + img.bin, Mode: 0o755}}}); err != nil {
			t.Fatalf("k8snode: %v", err)
		}
		out = append(out, tarPath)
	}
	return out
}

// BuildStatic builds the Go package pkg (a path relative to this package's
// directory, or an import path) as a static binary at out.
func BuildStatic(t testing.TB, pkg, out string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-trimpath", "-tags", "grpcnotrace", "-ldflags", "-s -w", "-o", out, pkg)
	cmd.Env = append(goEnv(), "GOFLAGS=-mod=mod")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("k8snode: go build %s: %v\n%s", pkg, err, b)
	}
}

func writeNodeConfigs(dir, run string) error {
	files := map[string]string{
		"containerd.toml": `version = 2
root  = "RUN/containerd/root"
state = "RUN/containerd/state"
oom_score = 0

[grpc]
  address = "RUN/containerd/containerd.sock"
[ttrpc]
  address = "RUN/containerd/containerd.sock.ttrpc"
[debug]
  address = "RUN/containerd/debug.sock"
  level = "info"
[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "RUN/containerd/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "` + PauseImage + `"
    enable_selinux = false
    disable_apparmor = true
    # Root may lack CAP_SYS_RESOURCE: negative oom_score_adj would make runc fail.
    restrict_oom_score_adj = true
    max_container_log_line_size = 16384
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          BinaryName = "/usr/sbin/runc"
          Root = "RUN/runc"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "RUN/cni/net.d"
`,
		"run/cni/net.d/10-k8snode.conflist": `{
  "cniVersion": "1.0.0",
  "name": "k8snode",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "k8snode0",
      "isGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/24"}]], "dataDir": "RUN/cni-ipam"}
    }
  ]
}
`,
		"kubelet-config.yaml": `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://RUN/containerd/containerd.sock
cgroupDriver: cgroupfs
cgroupsPerQOS: true
cgroupRoot: /
failSwapOn: false
oomScoreAdj: 0
address: 127.0.0.1
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization:
  mode: AlwaysAllow
staticPodPath: RUN/manifests
podLogsDir: RUN/pod-logs
volumePluginDir: RUN/kubelet-plugins
resolvConf: ""
makeIPTablesUtilChains: false
registerNode: true
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "5%"
  imagefs.available: "5%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
`,
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(strings.ReplaceAll(content, "RUN", run)), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func execCommand(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// RequireHeavy skips t when the full-node tests were turned off: with
// -short, or VIGIL_K8S_NODE=0 (for a quick local run). They run in the
// default suite (go test ./...) wherever RequireNodeHost finds a host that
// can run a node; a warm run of the three takes about two minutes.
func RequireHeavy(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("full node: skipped with -short")
	}
	if os.Getenv("VIGIL_K8S_NODE") == "0" {
		t.Skip("full node: VIGIL_K8S_NODE=0")
	}
}

// nodeNofile is the RLIMIT_NOFILE containerd and so the node's containers
// get, as under containerd.service (LimitNOFILE=infinity: the kernel's
// nr_open, 1048576 by default).
const nodeNofile = 1 << 20

// raiseNofile raises this process's RLIMIT_NOFILE towards nodeNofile so
// that containerd and its containers inherit it: the hard limit needs
// CAP_SYS_RESOURCE; without it the soft limit is raised to the hard one
// and the test logs what the node's containers get. It uses
// syscall.Setrlimit, which also makes exec'd children inherit the new soft
// limit rather than the one the process started with.
func raiseNofile(t testing.TB) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Logf("k8snode: RLIMIT_NOFILE: %v", err)
		return
	}
	if rl.Cur >= nodeNofile && rl.Max >= nodeNofile {
		return
	}
	want := syscall.Rlimit{Cur: max(rl.Cur, nodeNofile), Max: max(rl.Max, nodeNofile)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
		return
	}
	want = syscall.Rlimit{Cur: rl.Max, Max: rl.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		t.Logf("k8snode: RLIMIT_NOFILE: %v", err)
	}
	t.Logf("k8snode: containerd and the node's containers get RLIMIT_NOFILE %d, not %d (raising the hard limit needs CAP_SYS_RESOURCE): "+
		"it caps the cgroups vigil tracks in the DaemonSet", want.Cur, uint64(nodeNofile))
}

package k8snode

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// AdminToken authenticates as user "admin" in group system:masters.
const AdminToken = "admin-token-0123456789"

// API is a running etcd + kube-apiserver pair on loopback.
type API struct {
	// Dir holds the configs, certificates, logs and etcd data.
	Dir string
	// URL is the apiserver's https://127.0.0.1:<port>.
	URL string
	// Kubeconfig is an admin kubeconfig file.
	Kubeconfig string
	// CAFile is the apiserver's self-signed serving certificate.
	CAFile string
	// Config is an admin rest.Config.
	Config *rest.Config
	// Client is an admin clientset.
	Client kubernetes.Interface
	Bins   Binaries

	procs []*proc
}

// proc is a process the harness started, in its own process group.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func startProc(t testing.TB, dir, name string, bin string, args ...string) *proc {
	t.Helper()
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		t.Fatalf("k8snode: %v", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("k8snode: start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p
}

// stop sends SIGTERM to the process, then SIGKILL to its process group
// after grace.
func (p *proc) stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// freePorts returns n distinct free loopback TCP ports.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("k8snode: free port: %v", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// Ports of an API instance.
type apiPorts struct{ etcdClient, etcdPeer, secure int }

// StartAPI starts etcd and kube-apiserver on free loopback ports with RBAC
// authorization and a static admin token, waits until /readyz answers, and
// stops both when the test ends. It is the light variant: no kubelet, no
// controllers; tests set pod and PDB status by hand.
func StartAPI(t testing.TB) *API {
	t.Helper()
	bins := Build(t)
	dir, err := os.MkdirTemp("", "vigil-k8sapi-")
	if err != nil {
		t.Fatalf("k8snode: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("VIGIL_K8S_KEEP") != "" {
			t.Logf("k8snode: kept %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	p := freePorts(t, 3)
	a, err := startAPI(t, bins, dir, apiPorts{etcdClient: p[0], etcdPeer: p[1], secure: p[2]}, []string{"--authorization-mode=RBAC"}, nil)
	if err != nil {
		t.Fatalf("k8snode: %v", err)
	}
	return a
}

// startAPI starts etcd and the apiserver. extraFlags are appended to the
// apiserver's (they must set --authorization-mode); extraTokens are lines of the token file.
func startAPI(t testing.TB, bins Binaries, dir string, ports apiPorts, extraFlags, extraTokens []string) (*API, error) {
	a := &API{Dir: dir, Bins: bins, URL: fmt.Sprintf("https://127.0.0.1:%d", ports.secure)}
	t.Cleanup(a.stop)
	for _, d := range []string{"etcd-data", "apiserver-certs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	saKey := filepath.Join(dir, "sa.key")
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(saKey, keyPEM, 0o600); err != nil {
		return nil, err
	}
	tokens := filepath.Join(dir, "tokens.csv")
	lines := append([]string{AdminToken + `,admin,admin-uid,"system:masters"`}, extraTokens...)
	if err := os.WriteFile(tokens, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return nil, err
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", ports.etcdClient)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports.etcdPeer)
	etcd := startProc(t, dir, "etcd", bins.Etcd, "--name", "vigil", "--data-dir", filepath.Join(dir, "etcd-data"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "vigil="+peerURL, "--log-level", "warn",
		"--quota-backend-bytes", strconv.Itoa(512<<20))
	a.procs = append(a.procs, etcd)
	if err := waitHTTP(etcd, etcdURL+"/health", nil, 30*time.Second); err != nil {
		return nil, fmt.Errorf("etcd: %w (log %s)", err, filepath.Join(dir, "etcd.log"))
	}
	certDir := filepath.Join(dir, "apiserver-certs")
	api := startProc(t, dir, "apiserver", bins.APIServer, append([]string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(ports.secure),
		"--cert-dir=" + certDir,
		"--token-auth-file=" + tokens,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + saKey,
		"--service-account-signing-key-file=" + saKey,
		"--service-cluster-ip-range=10.96.0.0/24",
		"--endpoint-reconciler-type=none",
	}, extraFlags...)...)
	a.procs = append(a.procs, api)
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 2 * time.Second}
	if err := waitHTTP(api, a.URL+"/readyz", insecure, 120*time.Second); err != nil {
		return nil, fmt.Errorf("kube-apiserver: %w (log %s)", err, filepath.Join(dir, "apiserver.log"))
	}
	a.CAFile = filepath.Join(certDir, "apiserver.crt")
	a.Kubeconfig = filepath.Join(dir, "admin.kubeconfig")
	if err := os.WriteFile(a.Kubeconfig, []byte(a.KubeconfigFor("admin", AdminToken)), 0o600); err != nil {
		return nil, err
	}
	a.Config = &rest.Config{Host: a.URL, BearerToken: AdminToken, TLSClientConfig: rest.TLSClientConfig{CAFile: a.CAFile}, QPS: 100, Burst: 200}
	cs, err := kubernetes.NewForConfig(a.Config)
	if err != nil {
		return nil, err
	}
	a.Client = cs
	// The default namespace and the RBAC bootstrap policy appear shortly
	// after /readyz.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		_, err1 := cs.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{})
		_, err2 := cs.RbacV1().ClusterRoles().Get(ctx, "cluster-admin", metav1.GetOptions{})
		if err1 == nil && err2 == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("apiserver bootstrap: %v %v", err1, err2)
		case <-time.After(100 * time.Millisecond):
		}
	}
	return a, nil
}

// KubeconfigFor renders a kubeconfig for a token user of this apiserver.
func (a *API) KubeconfigFor(user, token string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
    token: %s
contexts:
- name: local
  context: {cluster: local, user: %s}
current-context: local
`, a.URL, a.CAFile, user, token, user)
}

// Impersonate returns a copy of the admin config that acts as user (and
// groups) through impersonation.
func (a *API) Impersonate(user string, groups ...string) *rest.Config {
	c := rest.CopyConfig(a.Config)
	c.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	return c
}

// Kubectl runs the cached kubectl against this apiserver as admin.
func (a *API) Kubectl(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(a.Bins.Kubectl, append([]string{"--kubeconfig", a.Kubeconfig}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (a *API) stop() {
	for i := len(a.procs) - 1; i >= 0; i-- {
		a.procs[i].stop(10 * time.Second)
	}
	a.procs = nil
}

func waitHTTP(p *proc, url string, c *http.Client, timeout time.Duration) error {
	if c == nil {
		c = &http.Client{Timeout: 2 * time.Second}
	}
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("exited: %v", p.err)
		}
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s: %s", url, resp.Status)
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("not ready after %s: %v", timeout, last)
}

// Namespace creates namespace name with the default ServiceAccount (which
// the ServiceAccount admission plugin requires of every pod, and which no
// controller creates in the light variant).
func (a *API) Namespace(t testing.TB, name string) {
	t.Helper()
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := a.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("k8snode: create namespace %s: %v", name, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: name}}
	if _, err := a.Client.CoreV1().ServiceAccounts(name).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("k8snode: create serviceaccount %s/default: %v", name, err)
	}
}

package vmtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// guestInit is the /init of the initramfs.
//
//go:embed init.sh
var guestInit []byte

// modules are the kernel modules the guest needs for virtio-mmio and 9p, in
// insmod (dependency) order; the Debian package ships no modules.dep. The
// same order is hard-coded in init.sh.
var modules = []string{
	"drivers/virtio/virtio_ring.ko",
	"drivers/virtio/virtio.ko",
	"drivers/virtio/virtio_pci_modern_dev.ko",
	"drivers/virtio/virtio_pci_legacy_dev.ko",
	"drivers/virtio/virtio_pci.ko",
	"drivers/virtio/virtio_mmio.ko",
	"fs/netfs/netfs.ko",
	"fs/fscache/fscache.ko",
	"net/9p/9pnet.ko",
	"net/9p/9pnet_virtio.ko",
	"fs/9p/9p.ko",
}

// kernelPackage matches the Debian generic 6.1 kernel packages (the cloud
// flavour lacks 9p).
var kernelPackage = regexp.MustCompile(`^linux-image-(6\.1\.0-[0-9]+-amd64)$`)

// Sentinel errors callers and failure messages branch on.
var (
	ErrQEMUMissing    = errors.New("QEMU missing")
	ErrKernelDownload = errors.New("kernel download failed")
	ErrTimeout        = errors.New("VM timed out")
)

// image is a prepared kernel + initramfs.
type image struct {
	Kernel    string // kernel version, e.g. 6.1.0-56-amd64
	Vmlinux   string // uncompressed ELF kernel (PVH entry)
	Initramfs string
	QEMU      string
	LockFile  string // flocked for the whole VM run: one VM at a time
}

// CacheDir is where kernels and initramfs images are kept:
// $VIGIL_VM_CACHE, else $XDG_CACHE_HOME/vigil-test/vm (~/.cache/vigil-test/vm).
func CacheDir() string {
	if d := os.Getenv("VIGIL_VM_CACHE"); d != "" {
		return d
	}
	base, err := os.UserCacheDir()
	if err != nil {
		base = filepath.Join(os.TempDir(), "vigil-cache")
	}
	return filepath.Join(base, "vigil-test", "vm")
}

// prepare makes sure the host packages, the kernel and the initramfs exist,
// building what is missing. Concurrent callers (go test runs packages in
// parallel) serialise on a lock file; a finished kernel directory appears
// atomically by rename.
func prepare(ctx context.Context, logf func(string, ...any)) (*image, error) {
	root := CacheDir()
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("vmtest: cache dir: %w", err)
	}
	unlock, err := lockFile(ctx, filepath.Join(root, "prepare.lock"), logf, "image preparation")
	if err != nil {
		return nil, err
	}
	defer unlock()
	removeStale(root)

	qemu, err := ensurePackages(ctx, logf)
	if err != nil {
		return nil, err
	}
	kver, err := kernelDir(ctx, root, logf)
	if err != nil {
		return nil, err
	}
	kdir := filepath.Join(root, kver)
	initramfs, err := ensureInitramfs(kdir, logf)
	if err != nil {
		return nil, err
	}
	return &image{
		Kernel:    kver,
		Vmlinux:   filepath.Join(kdir, "vmlinux"),
		Initramfs: initramfs,
		QEMU:      qemu,
		LockFile:  filepath.Join(root, "vm.lock"),
	}, nil
}

// removeStale deletes what a killed build left behind (the unpacked kernel
// package is ~400 MB). Only call it with the preparation lock held.
func removeStale(root string) {
	stale, _ := filepath.Glob(filepath.Join(root, ".tmp-*"))
	more, _ := filepath.Glob(filepath.Join(root, "*", ".initramfs-*"))
	for _, p := range append(stale, more...) {
		_ = os.RemoveAll(p)
	}
}

// ensurePackages installs qemu-system-x86, busybox-static and xz-utils with
// apt-get when they are missing and returns the QEMU binary.
func ensurePackages(ctx context.Context, logf func(string, ...any)) (string, error) {
	var missing []string
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		missing = append(missing, "qemu-system-x86")
	}
	if !staticBusybox("/bin/busybox") {
		missing = append(missing, "busybox-static")
	}
	if _, err := exec.LookPath("xz"); err != nil {
		missing = append(missing, "xz-utils")
	}
	if len(missing) > 0 {
		logf("vmtest: installing %s with apt-get", strings.Join(missing, " "))
		start := time.Now()
		out, err := aptGet(ctx, append([]string{"install", "-y", "--no-install-recommends"}, missing...)...)
		if err != nil {
			// The package lists may be missing or stale on a fresh machine.
			if upd, uerr := aptGet(ctx, "update", "-qq"); uerr != nil {
				out += upd
			} else {
				out, err = aptGet(ctx, append([]string{"install", "-y", "--no-install-recommends"}, missing...)...)
			}
		}
		if err != nil {
			if _, lerr := exec.LookPath("qemu-system-x86_64"); lerr != nil {
				return "", fmt.Errorf("vmtest: %w: qemu-system-x86_64 not found and `apt-get install %s` failed: %v\n%s",
					ErrQEMUMissing, strings.Join(missing, " "), err, tail(out, 20))
			}
			return "", fmt.Errorf("vmtest: `apt-get install %s` failed: %w\n%s", strings.Join(missing, " "), err, tail(out, 20))
		}
		logf("vmtest: installed %s in %.1fs", strings.Join(missing, " "), time.Since(start).Seconds())
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return "", fmt.Errorf("vmtest: %w: qemu-system-x86_64 not in PATH after installing qemu-system-x86", ErrQEMUMissing)
	}
	if !staticBusybox("/bin/busybox") {
		return "", errors.New("vmtest: /bin/busybox is not the static busybox (install busybox-static)")
	}
	return qemu, nil
}

func aptGet(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "apt-get", args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// staticBusybox reports whether path is an ELF binary without an
// interpreter (the guest's initramfs has no libc) that lists its applets.
func staticBusybox(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	out, err := exec.Command(path, "--list").Output()
	return err == nil && bytes.Contains(out, []byte("\nmount\n"))
}

// kernelDir returns the kernel version to use, downloading and unpacking it
// into root/<version> when it is not cached. $VIGIL_VM_KERNEL pins a version
// (e.g. 6.1.0-56-amd64); otherwise the newest cached one is used, and with an
// empty cache the newest linux-image-6.1.0-N-amd64 apt knows of.
func kernelDir(ctx context.Context, root string, logf func(string, ...any)) (string, error) {
	kver := os.Getenv("VIGIL_VM_KERNEL")
	if kver == "" {
		kver = newestCachedKernel(root)
	}
	if kver != "" {
		if _, err := os.Stat(filepath.Join(root, kver, "vmlinux")); err == nil {
			return kver, nil
		}
	}
	if kver == "" {
		var err error
		kver, err = newestKernelPackage(ctx)
		if err != nil {
			return "", err
		}
	}
	start := time.Now()
	logf("vmtest: downloading and unpacking linux-image-%s into %s", kver, root)
	if err := buildKernelDir(ctx, root, kver); err != nil {
		return "", err
	}
	logf("vmtest: kernel %s ready in %.1fs", kver, time.Since(start).Seconds())
	return kver, nil
}

func newestCachedKernel(root string) string {
	entries, _ := os.ReadDir(root)
	var versions []string
	for _, e := range entries {
		if !e.IsDir() || !kernelPackage.MatchString("linux-image-"+e.Name()) {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, e.Name(), "vmlinux")); err == nil {
			versions = append(versions, e.Name())
		}
	}
	if len(versions) == 0 {
		return ""
	}
	sort.Slice(versions, func(i, j int) bool { return kernelABI(versions[i]) < kernelABI(versions[j]) })
	return versions[len(versions)-1]
}

// kernelABI is N in 6.1.0-N-amd64.
func kernelABI(kver string) int {
	m := kernelPackage.FindStringSubmatch("linux-image-" + kver)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(strings.Split(strings.TrimPrefix(m[1], "6.1.0-"), "-")[0])
	return n
}

func newestKernelPackage(ctx context.Context) (string, error) {
	search := func() (string, error) {
		out, err := exec.CommandContext(ctx, "apt-cache", "search", "--names-only", `^linux-image-6\.1\.0-[0-9]+-amd64$`).Output()
		if err != nil {
			return "", err
		}
		best := ""
		for _, line := range strings.Split(string(out), "\n") {
			m := kernelPackage.FindStringSubmatch(strings.Fields(line + " x")[0])
			if m != nil && kernelABI(m[1]) > kernelABI(best) {
				best = m[1]
			}
		}
		return best, nil
	}
	best, err := search()
	if err == nil && best != "" {
		return best, nil
	}
	if out, uerr := aptGet(ctx, "update", "-qq"); uerr != nil {
		return "", fmt.Errorf("vmtest: %w: apt-get update: %v\n%s", ErrKernelDownload, uerr, tail(out, 20))
	}
	if best, err = search(); err != nil || best == "" {
		return "", fmt.Errorf("vmtest: %w: apt-cache finds no linux-image-6.1.0-N-amd64 package (err %v)", ErrKernelDownload, err)
	}
	return best, nil
}

// buildKernelDir downloads linux-image-<kver>, extracts the uncompressed
// vmlinux (PVH boot is ~3 s faster under TCG than the bzImage) and the
// needed modules, and renames the result into root/<kver>.
func buildKernelDir(ctx context.Context, root, kver string) error {
	tmp, err := os.MkdirTemp(root, ".tmp-"+kver+"-")
	if err != nil {
		return fmt.Errorf("vmtest: %w", err)
	}
	defer os.RemoveAll(tmp)
	pkg := "linux-image-" + kver
	if out, err := aptDownload(ctx, tmp, pkg); err != nil {
		// A stale package list names a version the mirror no longer has.
		if uout, uerr := aptGet(ctx, "update", "-qq"); uerr != nil {
			return fmt.Errorf("vmtest: %w: apt-get download %s: %v\n%s%s", ErrKernelDownload, pkg, err, tail(string(out), 10), tail(uout, 10))
		}
		if out, err = aptDownload(ctx, tmp, pkg); err != nil {
			return fmt.Errorf("vmtest: %w: apt-get download %s: %v\n%s", ErrKernelDownload, pkg, err, tail(string(out), 20))
		}
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, pkg+"_*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("vmtest: %w: apt-get download %s left %d .deb files", ErrKernelDownload, pkg, len(debs))
	}
	unpacked := filepath.Join(tmp, "pkg")
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", debs[0], unpacked).CombinedOutput(); err != nil {
		return fmt.Errorf("vmtest: dpkg-deb -x %s: %v\n%s", debs[0], err, tail(string(out), 20))
	}
	out := filepath.Join(tmp, "out")
	if err := os.MkdirAll(filepath.Join(out, "modules"), 0o755); err != nil {
		return err
	}
	if err := extractVmlinux(ctx, filepath.Join(unpacked, "boot", "vmlinuz-"+kver), filepath.Join(out, "vmlinux")); err != nil {
		return err
	}
	mdir := filepath.Join(unpacked, "lib", "modules", kver, "kernel")
	for _, m := range modules {
		if err := copyFile(filepath.Join(mdir, m), filepath.Join(out, "modules", filepath.Base(m))); err != nil {
			return fmt.Errorf("vmtest: module of %s: %w", pkg, err)
		}
	}
	if err := os.Rename(out, filepath.Join(root, kver)); err != nil {
		return fmt.Errorf("vmtest: %w", err)
	}
	return nil
}

func aptDownload(ctx context.Context, dir, pkg string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "apt-get", "download", pkg)
	cmd.Dir = dir
	return cmd.CombinedOutput()
}

// extractVmlinux decompresses the xz payload of a bzImage into an ELF file.
func extractVmlinux(ctx context.Context, vmlinuz, dst string) error {
	b, err := os.ReadFile(vmlinuz)
	if err != nil {
		return fmt.Errorf("vmtest: %w", err)
	}
	i := bytes.Index(b, []byte("\xfd7zXZ\x00"))
	if i < 0 {
		return fmt.Errorf("vmtest: %s has no xz payload", vmlinuz)
	}
	f, err := os.Create(dst)
	if err != nil {
		return fmt.Errorf("vmtest: %w", err)
	}
	defer f.Close()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "xz", "-dc", "--single-stream")
	cmd.Stdin = bytes.NewReader(b[i:])
	cmd.Stdout = f
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("vmtest: xz -d of %s: %v: %s", vmlinuz, err, stderr.String())
	}
	head := make([]byte, 4)
	if _, err := f.ReadAt(head, 0); err != nil || string(head) != "\x7fELF" {
		return fmt.Errorf("vmtest: %s did not decompress to an ELF vmlinux", vmlinuz)
	}
	return f.Close()
}

// ensureInitramfs builds kdir/initramfs-<hash>.gz from the static busybox,
// the cached modules and init.sh. The hash covers all inputs, so editing
// init.sh or upgrading busybox builds a new image instead of using a stale one.
func ensureInitramfs(kdir string, logf func(string, ...any)) (string, error) {
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return "", fmt.Errorf("vmtest: %w", err)
	}
	h := sha256.New()
	h.Write(guestInit)
	h.Write(busybox)
	mods := map[string][]byte{}
	for _, m := range modules {
		name := filepath.Base(m)
		b, err := os.ReadFile(filepath.Join(kdir, "modules", name))
		if err != nil {
			return "", fmt.Errorf("vmtest: %w", err)
		}
		mods[name] = b
		fmt.Fprintf(h, "%s %d\n", name, len(b))
	}
	path := filepath.Join(kdir, "initramfs-"+hex.EncodeToString(h.Sum(nil))[:12]+".gz")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	applets, err := exec.Command("/bin/busybox", "--list").Output()
	if err != nil {
		return "", fmt.Errorf("vmtest: busybox --list: %w", err)
	}
	var files []cpioEntry
	for _, d := range []string{"bin", "lib", "lib/modules", "proc", "sys", "dev", "host"} {
		files = append(files, cpioEntry{Name: d, Mode: syscall.S_IFDIR | 0o755})
	}
	files = append(files,
		cpioEntry{Name: "init", Mode: syscall.S_IFREG | 0o755, Data: guestInit},
		cpioEntry{Name: "bin/busybox", Mode: syscall.S_IFREG | 0o755, Data: busybox})
	for _, a := range strings.Fields(string(applets)) {
		if a == "busybox" || strings.Contains(a, "/") {
			continue
		}
		// Relative links: absolute ones would point at host paths.
		files = append(files, cpioEntry{Name: "bin/" + a, Mode: syscall.S_IFLNK | 0o777, Data: []byte("busybox")})
	}
	for _, m := range modules {
		name := filepath.Base(m)
		files = append(files, cpioEntry{Name: "lib/modules/" + name, Mode: syscall.S_IFREG | 0o644, Data: mods[name]})
	}
	tmp, err := os.CreateTemp(kdir, ".initramfs-")
	if err != nil {
		return "", fmt.Errorf("vmtest: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := writeInitramfs(tmp, files); err != nil {
		tmp.Close()
		return "", fmt.Errorf("vmtest: write initramfs: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("vmtest: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return "", fmt.Errorf("vmtest: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("vmtest: %w", err)
	}
	logf("vmtest: built %s", path)
	return path, nil
}

// lockFile takes an exclusive flock on path, waiting until ctx is done. The
// returned func releases it.
func lockFile(ctx context.Context, path string, logf func(string, ...any), what string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("vmtest: lock %s: %w", path, err)
	}
	logged := false
	start := time.Now()
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			if logged {
				logf("vmtest: got %s lock after %.1fs", what, time.Since(start).Seconds())
			}
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("vmtest: flock %s: %w", path, err)
		}
		if !logged {
			logf("vmtest: waiting for the %s lock %s (another test package holds it)", what, path)
			logged = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("vmtest: waiting for %s lock %s: %w", what, path, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, st.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

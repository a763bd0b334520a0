// Package node owns vigil's node-wide memory picture: /proc/meminfo,
// /proc/vmstat and /proc/pressure/{memory,cpu,io}, read every tick on held
// file descriptors without allocating, plus the host facts (hostname, kernel,
// boot time, CPUs) that gopsutil reports once at start.
//
// The proc root is injected (hostRoot+"/proc"), so the agent can run in a
// container with the host mounted at /host and tests can point at testdata/.
package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/shirou/gopsutil/v3/common"
	"github.com/shirou/gopsutil/v3/cpu"
	"github.com/shirou/gopsutil/v3/host"
	"github.com/shirou/gopsutil/v3/mem"

	"github.com/vigil-agent/vigil/collectors"
)

// Collector reads node memory on every Collect. It holds its files open and
// rereads them with pread into one buffer, so a tick costs a few syscalls and
// no allocations. It is not safe for concurrent use: one owner (the sweep)
// calls Collect.
type Collector struct {
	procRoot string
	hostname string

	meminfo *os.File
	vmstat  *os.File
	// pressure files in the order memory, cpu, io; nil when the kernel has
	// no PSI (CONFIG_PSI off or psi=0), which is reported as Present=false.
	pressure [3]*os.File

	buf []byte

	havePrev     bool
	prevTime     time.Time
	prevRefaults uint64
	prevOOMKills uint64
}

var pressureNames = [3]string{"memory", "cpu", "io"}

// New opens the node files under procRoot (e.g. "/proc" or "/host/proc").
// meminfo and vmstat are required; pressure files are optional.
func New(procRoot string) (*Collector, error) {
	c := &Collector{procRoot: procRoot, buf: make([]byte, 16<<10)}
	var err error
	if c.meminfo, err = os.Open(filepath.Join(procRoot, "meminfo")); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	if c.vmstat, err = os.Open(filepath.Join(procRoot, "vmstat")); err != nil {
		c.Close()
		return nil, fmt.Errorf("node: %w", err)
	}
	for i, name := range pressureNames {
		f, err := os.Open(filepath.Join(procRoot, "pressure", name))
		switch {
		case err == nil:
			c.pressure[i] = f
		case errors.Is(err, fs.ErrNotExist), errors.Is(err, fs.ErrPermission):
			// No PSI on this kernel (or psi=0 at boot makes it EOPNOTSUPP on
			// read instead, handled in Collect).
		default:
			c.Close()
			return nil, fmt.Errorf("node: %w", err)
		}
	}
	c.hostname = readHostname(procRoot)
	return c, nil
}

// readHostname prefers the proc root's hostname (the host's UTS namespace
// when vigil runs with the host mounted) and falls back to os.Hostname.
func readHostname(procRoot string) string {
	if b, err := os.ReadFile(filepath.Join(procRoot, "sys", "kernel", "hostname")); err == nil {
		if h := strings.TrimSpace(string(b)); h != "" {
			return h
		}
	}
	h, _ := os.Hostname()
	return h
}

// Close releases the held file descriptors.
func (c *Collector) Close() error {
	var errs []error
	for _, f := range []*os.File{c.meminfo, c.vmstat, c.pressure[0], c.pressure[1], c.pressure[2]} {
		if f != nil {
			errs = append(errs, f.Close())
		}
	}
	c.meminfo, c.vmstat, c.pressure = nil, nil, [3]*os.File{}
	return errors.Join(errs...)
}

// Collect fills dst with the node's memory, reclaim counters and pressure at
// now, and the derived signals against the previous Collect: the refault
// rate and the OOM kills since then (both 0 on the first call).
func (c *Collector) Collect(now time.Time, dst *collectors.NodeSample) error {
	if c.meminfo == nil {
		return fmt.Errorf("node: collector is closed")
	}
	dst.Hostname = c.hostname

	b, err := c.read(c.meminfo)
	if err != nil {
		return err
	}
	mi, err := parseMeminfo(b)
	if err != nil {
		return fmt.Errorf("node: %s: %w", c.meminfo.Name(), err)
	}
	mi.apply(dst)

	if b, err = c.read(c.vmstat); err != nil {
		return err
	}
	if dst.VMStat, err = parseVMStat(b); err != nil {
		return fmt.Errorf("node: %s: %w", c.vmstat.Name(), err)
	}

	for i, p := range [3]*collectors.Pressure{&dst.MemoryPressure, &dst.CPUPressure, &dst.IOPressure} {
		*p = collectors.Pressure{}
		f := c.pressure[i]
		if f == nil {
			continue
		}
		b, err := c.read(f)
		if errors.Is(err, errNotSupported) {
			continue
		}
		if err != nil {
			return err
		}
		if *p, err = collectors.ParsePressure(b); err != nil {
			return fmt.Errorf("node: %s: %w", f.Name(), err)
		}
	}

	dst.UsedRatio = 0
	if dst.MemTotalBytes > 0 {
		dst.UsedRatio = 1 - float64(dst.MemAvailableBytes)/float64(dst.MemTotalBytes)
	}
	refaults := dst.VMStat.WorkingsetRefaultAnon + dst.VMStat.WorkingsetRefaultFile
	dst.RefaultsPerSecond, dst.OOMKillsDelta = 0, 0
	if c.havePrev {
		if dt := now.Sub(c.prevTime).Seconds(); dt > 0 && refaults >= c.prevRefaults {
			dst.RefaultsPerSecond = float64(refaults-c.prevRefaults) / dt
		}
		if dst.VMStat.OOMKill >= c.prevOOMKills {
			dst.OOMKillsDelta = dst.VMStat.OOMKill - c.prevOOMKills
		}
	}
	c.havePrev, c.prevTime, c.prevRefaults, c.prevOOMKills = true, now, refaults, dst.VMStat.OOMKill
	return nil
}

// errNotSupported marks a pressure file that exists but cannot be read
// because PSI is disabled at boot (psi=0 makes reads fail with EOPNOTSUPP).
var errNotSupported = errors.New("not supported")

// read preads the whole of f into c.buf, growing it (once) if the file is
// larger, and returns the filled part.
func (c *Collector) read(f *os.File) ([]byte, error) {
	for {
		n, err := f.ReadAt(c.buf, 0)
		if err != nil && err != io.EOF {
			if isNotSupported(err) {
				return nil, errNotSupported
			}
			return nil, fmt.Errorf("node: read %s: %w", f.Name(), err)
		}
		if n < len(c.buf) {
			return c.buf[:n], nil
		}
		c.buf = make([]byte, 2*len(c.buf))
	}
}

// Facts are what vigil reports about the host once at start (they do not
// change while it runs, except Procs and Uptime which are as of the call).
type Facts struct {
	Hostname        string        `json:"hostname"`
	OS              string        `json:"os"`
	Platform        string        `json:"platform"`
	PlatformVersion string        `json:"platform_version"`
	KernelVersion   string        `json:"kernel_version"`
	KernelArch      string        `json:"kernel_arch"`
	Virtualization  string        `json:"virtualization,omitempty"`
	HostID          string        `json:"host_id"`
	BootTime        time.Time     `json:"boot_time"`
	Uptime          time.Duration `json:"uptime"`
	CPUs            int           `json:"cpus"`
	MemTotalBytes   uint64        `json:"mem_total_bytes"`
	Procs           uint64        `json:"procs"`
}

// Facts asks gopsutil for the host facts, pointed at the collector's proc
// root (and, when it is <root>/proc, at <root>/sys and <root>/etc) through
// gopsutil's context environment, so nothing process-wide is changed.
func (c *Collector) Facts(ctx context.Context) (Facts, error) {
	env := common.EnvMap{common.HostProcEnvKey: c.procRoot}
	if filepath.Base(filepath.Clean(c.procRoot)) == "proc" {
		root := filepath.Dir(filepath.Clean(c.procRoot))
		env[common.HostSysEnvKey] = filepath.Join(root, "sys")
		env[common.HostEtcEnvKey] = filepath.Join(root, "etc")
		env[common.HostRootEnvKey] = root
	}
	ctx = context.WithValue(ctx, common.EnvKey, env)

	info, err := host.InfoWithContext(ctx)
	if err != nil {
		return Facts{}, fmt.Errorf("node: host facts from %s: %w", c.procRoot, err)
	}
	cpus, err := cpu.CountsWithContext(ctx, true)
	if err != nil {
		return Facts{}, fmt.Errorf("node: cpu count from %s: %w", c.procRoot, err)
	}
	vm, err := mem.VirtualMemoryWithContext(ctx)
	if err != nil {
		return Facts{}, fmt.Errorf("node: memory from %s: %w", c.procRoot, err)
	}
	f := Facts{
		Hostname:        c.hostname,
		OS:              info.OS,
		Platform:        info.Platform,
		PlatformVersion: info.PlatformVersion,
		KernelVersion:   info.KernelVersion,
		KernelArch:      info.KernelArch,
		HostID:          info.HostID,
		BootTime:        time.Unix(int64(info.BootTime), 0).UTC(),
		Uptime:          time.Duration(info.Uptime) * time.Second,
		CPUs:            cpus,
		MemTotalBytes:   vm.Total,
		Procs:           info.Procs,
	}
	if info.VirtualizationSystem != "" {
		f.Virtualization = info.VirtualizationSystem + "/" + info.VirtualizationRole
	}
	if f.Hostname == "" {
		f.Hostname = info.Hostname
	}
	return f, nil
}

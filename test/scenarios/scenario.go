package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// scenario is one memory incident: the cgroups it needs and the processes it
// drives inside them for Window.
type scenario struct {
	Name  string
	Title string
	// Window bounds the run (the cell may end earlier once every workload
	// process is gone for good).
	Window time.Duration
	// ParentMiB is the limit of the scenario's parent cgroup, which holds
	// every workload and the critical one.
	ParentMiB int
	// Workloads are the opted-in cgroups (name -> limit MiB), under the
	// parent, named w-*.
	Workloads map[string]int
	// NoDestructive: the right answer is no destructive action (any is a
	// false positive).
	NoDestructive bool
	// Drive starts and supervises the workload processes until ctx ends.
	Drive func(ctx context.Context, c *cell) error
}

// criticalMiB is what the protected critical workload holds, in a cgroup
// with criticalLimitMiB.
const (
	criticalMiB      = 24
	criticalLimitMiB = 64
)

var scenarios = []scenario{
	{
		Name: "leak", Title: "slow leak: 64 MiB held, +1 MiB/s in a 128 MiB cgroup (full in about 64 s)",
		Window: 100 * time.Second, ParentMiB: 512, Workloads: map[string]int{"w-leak": 128},
		Drive: func(ctx context.Context, c *cell) error {
			return c.runOnce(ctx, "w-leak", "leak", "64", "1", "1000")
		},
	},
	{
		Name: "spike", Title: "sudden spike: 32 MiB held, then +112 MiB at once after 20 s, in a 128 MiB cgroup",
		Window: 45 * time.Second, ParentMiB: 512, Workloads: map[string]int{"w-spike": 128},
		Drive: func(ctx context.Context, c *cell) error {
			return c.runOnce(ctx, "w-spike", "spike", "32", "20000", "112")
		},
	},
	{
		Name: "thrash", Title: "page-cache thrash: one reader streams a 192 MiB file over and over through a 48 MiB cgroup",
		Window: 60 * time.Second, ParentMiB: 512, Workloads: map[string]int{"w-thrash": 48}, NoDestructive: true,
		Drive: func(ctx context.Context, c *cell) error {
			file, err := c.dataFile(192)
			if err != nil {
				return err
			}
			return c.runOnce(ctx, "w-thrash", "read", file)
		},
	},
	{
		Name: "storm", Title: "allocation storm: up to 24 concurrent processes (8 MiB each, held 3 s) forked every 100 ms into a 128 MiB cgroup",
		Window: 40 * time.Second, ParentMiB: 512, Workloads: map[string]int{"w-storm": 128},
		Drive: func(ctx context.Context, c *cell) error {
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-tick.C:
				}
				if c.running("w-storm") < 24 {
					if _, err := c.start("w-storm", "alloc", "8", "3000"); err != nil {
						return err
					}
				}
			}
		},
	},
	{
		Name: "crashloop", Title: "crash loop: a supervisor re-runs, 1 s after each exit, a process that allocates 96 MiB in a 64 MiB cgroup",
		Window: 60 * time.Second, ParentMiB: 512, Workloads: map[string]int{"w-crash": 64},
		Drive: func(ctx context.Context, c *cell) error {
			for ctx.Err() == nil {
				p, err := c.start("w-crash", "alloc", "96", "0")
				if err != nil {
					return err
				}
				select {
				case <-ctx.Done():
					return nil
				case <-p.done:
				}
				c.note("restart")
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
			return nil
		},
	},
	{
		Name: "node", Title: "node pressure: three cgroups (160 MiB limits) each grow 32 MiB + 2 MiB/s under one 256 MiB parent with the critical workload",
		Window: 60 * time.Second, ParentMiB: 256, Workloads: map[string]int{"w-1": 160, "w-2": 160, "w-3": 160},
		Drive: func(ctx context.Context, c *cell) error {
			for _, w := range []string{"w-1", "w-2", "w-3"} {
				if _, err := c.start(w, "leak", "32", "1", "500"); err != nil {
					return err
				}
			}
			<-ctx.Done()
			return nil
		},
	},
}

func scenarioByName(name string) (scenario, bool) {
	for _, s := range scenarios {
		if s.Name == name {
			return s, true
		}
	}
	return scenario{}, false
}

// runOnce starts one process in w and waits until it exits or ctx ends.
func (c *cell) runOnce(ctx context.Context, w string, args ...string) error {
	p, err := c.start(w, args...)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-p.done:
		c.allDone()
	}
	return nil
}

// dataFile writes a file of n MiB in the cell's data directory, with its
// page cache dropped, so the first read already faults from disk.
func (c *cell) dataFile(n int) (string, error) {
	path := filepath.Join(c.opts.DataDir, "vigil-scenario-thrash-"+strconv.Itoa(os.Getpid())+".dat")
	f, err := os.Create(path)
	if err != nil {
		return "", fmt.Errorf("thrash file: %w", err)
	}
	c.cleanups = append(c.cleanups, func() { os.Remove(path) })
	buf := make([]byte, mib)
	for i := 0; i < n; i++ {
		for j := range buf {
			buf[j] = byte(i + j)
		}
		if _, err := f.Write(buf); err != nil {
			f.Close()
			return "", fmt.Errorf("thrash file %s: %w", path, err)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", fmt.Errorf("thrash file %s: %w", path, err)
	}
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	return path, f.Close()
}

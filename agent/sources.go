package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/vigil-agent/vigil/agent/config"
	"github.com/vigil-agent/vigil/collectors"
	"github.com/vigil-agent/vigil/collectors/cgroupfs"
	"github.com/vigil-agent/vigil/collectors/events"
	"github.com/vigil-agent/vigil/collectors/node"
)

// sampler takes full and partial snapshots of a host: cgroups through
// collectors/cgroupfs, node memory through collectors/node. The agent, `vigil
// snapshot` and `vigil record` share it, so they see the same thing.
type sampler struct {
	cgroups *cgroupfs.Collector
	node    *node.Collector
	seq     uint64
}

func newSampler(cfg *config.Config, log *slog.Logger) (*sampler, error) {
	cg, err := cgroupfs.New(cgroupfs.Options{
		HostRoot:     cfg.HostRoot,
		GrowthWindow: cfg.GrowthWindow,
		MaxCgroups:   cfg.MaxCgroups,
		StatMaxAge:   cfg.StatMaxAge,
		// A zero ratio (a Config built in code) takes the collector's default.
		StatNearLimitRatio: cfg.StatNearLimitRatio,
		Logger:             log,
	})
	if err != nil {
		return nil, fmt.Errorf("cgroups under %s: %w", cfg.HostRoot, err)
	}
	nd, err := node.New(filepath.Join(cfg.HostRoot, "proc"))
	if err != nil {
		cg.Close()
		return nil, fmt.Errorf("node memory under %s: %w", cfg.HostRoot, err)
	}
	return &sampler{cgroups: cg, node: nd}, nil
}

// sampleErrors are the errors of one snapshot, by collector.
type sampleErrors struct {
	cgroups, node error
}

func (e sampleErrors) err() error { return errors.Join(e.cgroups, e.node) }

// discover looks for new and removed cgroups.
func (s *sampler) discover() (added, removed int, err error) { return s.cgroups.Discover() }

// sweep fills dst with a full snapshot taken at now.
func (s *sampler) sweep(now time.Time, dst *collectors.Snapshot) sampleErrors {
	var errs sampleErrors
	s.seq++
	errs.cgroups = s.cgroups.Sweep(now, dst)
	errs.node = s.node.Collect(now, &dst.Node)
	dst.Seq, dst.Time, dst.Partial, dst.Trigger = s.seq, now, false, nil
	dst.Hierarchy = s.cgroups.Hierarchy()
	return errs
}

// sweepPaths fills dst with a partial snapshot of paths (an off-cycle
// snapshot after an event); node holds the latest node sample.
func (s *sampler) sweepPaths(now time.Time, paths []string, node *collectors.NodeSample, dst *collectors.Snapshot) error {
	err := s.cgroups.SweepPaths(now, paths, dst)
	dst.Seq, dst.Time, dst.Partial = s.seq, now, true
	dst.Hierarchy = s.cgroups.Hierarchy()
	if node != nil {
		dst.Node = *node
	}
	return err
}

// dir is the directory of a cgroup path, for event registration.
func (s *sampler) dir(path string) string { return s.cgroups.Dir(path) }

func (s *sampler) hierarchy() collectors.Hierarchy { return s.cgroups.Hierarchy() }

func (s *sampler) close() error {
	return errors.Join(s.cgroups.Close(), s.node.Close())
}

// eventWatcher is what the agent needs from collectors/events.
type eventWatcher interface {
	Events() <-chan collectors.Event
	WatchThreshold(path, dir string, bytes uint64) error
	WatchOOM(path, dir string) error
	WatchMemoryEvents(path, dir string) error
	WatchPressure(path, file string, stall, window time.Duration) error
	Unwatch(path string)
}

var _ eventWatcher = (*events.Watcher)(nil)

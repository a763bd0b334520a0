package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"syscall"

	"github.com/vigil-agent/vigil/agent/config"
)

// watchRequest is the set of cgroups that should have kernel notifications,
// computed by the loop from one snapshot.
type watchRequest struct {
	version int
	want    map[string]uint64 // cgroup path -> v1 threshold bytes (0 = none)
	limited bool              // more limited cgroups than events.max_watched_cgroups
	events  config.Events
}

// watchReconciler owns the registrations of kernel notifications and
// applies watchRequests on its own goroutine, newest first: a request that
// arrives while one is being applied replaces any older pending one.
type watchReconciler struct {
	a       *Agent
	w       eventWatcher
	pending chan watchRequest // capacity 1: the latest request wins

	// Owned by run's goroutine.
	watched  map[string]uint64
	limitHit bool
}

func newWatchReconciler(a *Agent, w eventWatcher) *watchReconciler {
	return &watchReconciler{a: a, w: w, pending: make(chan watchRequest, 1), watched: map[string]uint64{}}
}

// submit hands a request over without ever blocking the loop.
func (r *watchReconciler) submit(req watchRequest) {
	for {
		select {
		case r.pending <- req:
			return
		default:
		}
		select {
		case <-r.pending: // drop the stale request
		default:
		}
	}
}

func (r *watchReconciler) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case req := <-r.pending:
			r.apply(req)
		}
	}
}

func (r *watchReconciler) apply(req watchRequest) {
	a := r.a
	if req.limited != r.limitHit {
		r.limitHit = req.limited
		if req.limited {
			a.log.Warn("more limited cgroups than events.max_watched_cgroups; the rest are seen at each tick", "max", req.events.MaxWatchedCgroups)
			a.SetDegraded("max_watched_cgroups", fmt.Sprintf("more than %d limited cgroups", req.events.MaxWatchedCgroups))
		} else {
			a.SetDegraded("max_watched_cgroups", "")
		}
	}
	for path, thr := range r.watched {
		if newThr, ok := req.want[path]; !ok || !closeThreshold(thr, newThr) {
			r.w.Unwatch(path)
			delete(r.watched, path)
		}
	}
	var failed int
	var firstErr error
	for path, thr := range req.want {
		if _, ok := r.watched[path]; ok {
			continue
		}
		err := a.watch(req.version, path, thr, req.events)
		if err != nil {
			r.w.Unwatch(path)
			if vanished(err) {
				continue // the cgroup went away since the sweep
			}
			failed++
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		r.watched[path] = thr
	}
	a.metrics.eventWatches.Set(float64(len(r.watched)))
	if failed > 0 {
		a.metrics.collectionErrors.WithLabelValues(collectorEvents).Add(float64(failed))
		a.log.Warn("registering kernel notifications failed", "cgroups", failed, "first_err", firstErr)
	}
}

// closeThreshold reports whether a registered v1 usage threshold may stay
// for a wanted one: equal, or within 1/16 of it. Effective limits move with
// the siblings under a shared limit; re-registering on every small move
// would drop the cgroup's notifications each time (a crossing in between
// is lost) for a threshold that is only a wake-up hint anyway.
func closeThreshold(have, want uint64) bool {
	if have == 0 || want == 0 {
		return have == want
	}
	d := max(have, want) - min(have, want)
	return d <= want/16
}

// vanished reports whether err says the cgroup was removed: ENOENT for its
// files, ENODEV for a v1 cgroup being torn down.
func vanished(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENODEV)
}

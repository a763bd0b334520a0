package agent

import (
	"sync"
	"sync/atomic"

	"github.com/vigil-agent/vigil/collectors"
)

// snapshotBuffers double-buffers the snapshot: the loop fills the back
// buffer while readers (HTTP, metrics) use the published one. A buffer is
// only overwritten under its write lock, which waits for the readers that
// still hold it, so a reader never sees a snapshot being overwritten. Readers
// hold a buffer only while they encode it into memory, never while they
// write to a network peer.
type snapshotBuffers struct {
	bufs      [2]snapshotBuffer
	published atomic.Int32 // index of the published buffer; -1 before the first
}

type snapshotBuffer struct {
	mu   sync.RWMutex
	snap collectors.Snapshot
}

func newSnapshotBuffers() *snapshotBuffers {
	b := &snapshotBuffers{}
	b.published.Store(-1)
	return b
}

// fill runs write on the back buffer under its write lock and then
// publishes it. Only the loop calls fill.
func (b *snapshotBuffers) fill(write func(*collectors.Snapshot)) *collectors.Snapshot {
	idx := 0
	if b.published.Load() == 0 {
		idx = 1
	}
	buf := &b.bufs[idx]
	buf.mu.Lock()
	write(&buf.snap)
	buf.mu.Unlock()
	b.published.Store(int32(idx))
	return &buf.snap
}

// Acquire returns the published snapshot, held for reading until release
// is called, or (nil, no-op) before the first snapshot.
func (b *snapshotBuffers) Acquire() (*collectors.Snapshot, func()) {
	idx := b.published.Load()
	if idx < 0 {
		return nil, func() {}
	}
	buf := &b.bufs[idx]
	buf.mu.RLock()
	return &buf.snap, buf.mu.RUnlock
}

// latest returns the published snapshot without locking: only the loop,
// which is the sole writer, may call it.
func (b *snapshotBuffers) latest() *collectors.Snapshot {
	idx := b.published.Load()
	if idx < 0 {
		return nil
	}
	return &b.bufs[idx].snap
}

// Package journal is vigil's durable record of what it did and why: every
// remediation with its evidence, ladder steps (intent before acting, result
// after) and measured outcome, every refusal, shadow finding and kernel OOM
// kill vigil missed; the limits vigil applied and has not yet restored; and a
// small key/value state store for the agent.
//
// It is a bbolt file: each write is one transaction, fsync'd before the call
// returns, so a record acknowledged to the caller survives kill -9 and power
// loss.
package journal

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// ErrNotFound is returned by Get and LoadState for an unknown key.
var ErrNotFound = errors.New("journal: not found")

// ErrLocked is returned by OpenReadOnly while another process (the running
// agent) holds the journal.
var ErrLocked = errors.New("journal: locked by another process (a running agent?)")

var (
	bucketRecords = []byte("records") // id -> JSON Record
	bucketByTime  = []byte("by_time") // time(8, big endian ns) + id -> id
	bucketState   = []byte("state")   // key -> bytes
	bucketApplied = []byte("applied") // AppliedLimit.Key -> JSON AppliedLimit
)

// Options bound the journal.
type Options struct {
	// Retention drops records older than this at Prune (0 = 30 days).
	Retention time.Duration
	// MaxBytes drops the oldest records until the stored records total at
	// most this many bytes (0 = 256 MiB). The file keeps its high-water
	// mark: bbolt reuses freed pages instead of shrinking.
	MaxBytes int64
}

// Journal is an open journal file. It is safe for concurrent use.
type Journal struct {
	db   *bolt.DB
	path string
	opts Options
}

// Open opens (creating if needed) the journal at path.
func Open(path string, opts Options) (*Journal, error) {
	if opts.Retention <= 0 {
		opts.Retention = 30 * 24 * time.Hour
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 256 << 20
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("journal: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketRecords, bucketByTime, bucketState, bucketApplied} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("journal: init %s: %w", path, err)
	}
	return &Journal{db: db, path: path, opts: opts}, nil
}

// OpenReadOnly opens an existing journal for queries (the CLI), without
// blocking a running agent for long.
func OpenReadOnly(path string) (*Journal, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 500 * time.Millisecond})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("journal: open %s: %w", path, err)
	}
	return &Journal{db: db, path: path}, nil
}

// Path is the journal's file.
func (j *Journal) Path() string { return j.path }

// Close closes the file.
func (j *Journal) Close() error { return j.db.Close() }

func timeKey(t time.Time, id string) []byte {
	k := make([]byte, 8, 8+len(id))
	binary.BigEndian.PutUint64(k, uint64(t.UnixNano()))
	return append(k, id...)
}

// Put writes r (insert or replace) and returns once it is on disk.
func (j *Journal) Put(r *Record) error { return j.PutWithApplied(r, nil) }

// PutWithApplied writes r and, in the same transaction (one fsync), the
// applied limit a (see PutApplied), if not nil: a step's intent and the
// original of the limit it is about to change become durable together.
func (j *Journal) PutWithApplied(r *Record, a *AppliedLimit) error {
	if r.ID == "" {
		return errors.New("journal: record without id")
	}
	if r.Time.IsZero() {
		return fmt.Errorf("journal: record %s without time", r.ID)
	}
	r.Updated = time.Now()
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("journal: encode %s: %w", r.ID, err)
	}
	err = j.db.Update(func(tx *bolt.Tx) error {
		recs := tx.Bucket(bucketRecords)
		if old := recs.Get([]byte(r.ID)); old != nil {
			var prev Record
			if json.Unmarshal(old, &prev) == nil && !prev.Time.Equal(r.Time) {
				_ = tx.Bucket(bucketByTime).Delete(timeKey(prev.Time, prev.ID))
			}
		}
		if err := recs.Put([]byte(r.ID), data); err != nil {
			return err
		}
		if a != nil {
			if err := putApplied(tx, *a); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketByTime).Put(timeKey(r.Time, r.ID), []byte(r.ID))
	})
	if err != nil {
		return fmt.Errorf("journal: put %s: %w", r.ID, err)
	}
	return nil
}

// Get returns the record with that id.
func (j *Journal) Get(id string) (*Record, error) {
	var r Record
	err := j.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketRecords).Get([]byte(id))
		if v == nil {
			return ErrNotFound
		}
		return json.Unmarshal(v, &r)
	})
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("journal: record %s: %w", id, ErrNotFound)
		}
		return nil, fmt.Errorf("journal: record %s: %w", id, err)
	}
	return &r, nil
}

// Filter selects records. Zero fields match everything.
type Filter struct {
	// Target matches the target's key (cgroup path, or "node").
	Target string
	Rule   string
	Kind   string
	// Since keeps records at or after this time.
	Since   time.Time
	Outcome string
	// Limit caps the number of records (0 = 100; -1 = no cap).
	Limit int
}

func (f Filter) match(r *Record) bool {
	return (f.Target == "" || r.Target.Key() == f.Target) &&
		(f.Rule == "" || r.Rule == f.Rule) &&
		(f.Kind == "" || r.Kind == f.Kind) &&
		(f.Outcome == "" || r.Outcome == f.Outcome)
}

// List returns the records matching f, newest first.
func (j *Journal) List(f Filter) ([]Record, error) {
	var out []Record
	err := j.each(f, func(r *Record) error { out = append(out, *r); return nil })
	return out, err
}

// each calls fn for the records matching f, newest first.
func (j *Journal) each(f Filter, fn func(*Record) error) error {
	limit := f.Limit
	if limit == 0 {
		limit = 100
	}
	var since []byte
	if !f.Since.IsZero() {
		since = timeKey(f.Since, "")
	}
	err := j.db.View(func(tx *bolt.Tx) error {
		recs := tx.Bucket(bucketRecords)
		c := tx.Bucket(bucketByTime).Cursor()
		n := 0
		for k, id := c.Last(); k != nil; k, id = c.Prev() {
			if since != nil && bytes.Compare(k, since) < 0 {
				break
			}
			v := recs.Get(id)
			if v == nil {
				continue
			}
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("record %s: %w", id, err)
			}
			if !f.match(&r) {
				continue
			}
			if err := fn(&r); err != nil {
				return err
			}
			n++
			if limit > 0 && n >= limit {
				break
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("journal: list: %w", err)
	}
	return nil
}

// Export writes the records matching f as JSON lines, newest first.
func (j *Journal) Export(w io.Writer, f Filter) error {
	enc := json.NewEncoder(w)
	return j.each(f, func(r *Record) error { return enc.Encode(r) })
}

// Prune drops records older than the retention and, oldest first, records
// beyond the size bound. It returns how many it dropped.
func (j *Journal) Prune(now time.Time) (int, error) {
	dropped := 0
	err := j.db.Update(func(tx *bolt.Tx) error {
		recs, byTime := tx.Bucket(bucketRecords), tx.Bucket(bucketByTime)
		var total int64
		_ = recs.ForEach(func(k, v []byte) error { total += int64(len(k) + len(v)); return nil })
		cutoff := timeKey(now.Add(-j.opts.Retention), "")
		c := byTime.Cursor()
		for k, id := c.First(); k != nil; k, id = c.First() {
			if bytes.Compare(k, cutoff) >= 0 && total <= j.opts.MaxBytes {
				break
			}
			if v := recs.Get(id); v != nil {
				total -= int64(len(id) + len(v))
				if err := recs.Delete(id); err != nil {
					return err
				}
			}
			if err := byTime.Delete(k); err != nil {
				return err
			}
			dropped++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("journal: prune: %w", err)
	}
	return dropped, nil
}

// SaveState stores v under key (durably). The agent keeps rule engine state
// here across restarts.
func (j *Journal) SaveState(key string, v []byte) error {
	err := j.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketState).Put([]byte(key), v) })
	if err != nil {
		return fmt.Errorf("journal: save state %s: %w", key, err)
	}
	return nil
}

// LoadState returns the value saved under key, or ErrNotFound.
func (j *Journal) LoadState(key string) ([]byte, error) {
	var out []byte
	err := j.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketState).Get([]byte(key))
		if v == nil {
			return ErrNotFound
		}
		out = append([]byte(nil), v...)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("journal: state %s: %w", key, err)
	}
	return out, nil
}

// PutApplied records a limit vigil is about to apply (durably, before the
// write). If the key is already recorded its Original is kept: the first
// original is the one to restore.
func (j *Journal) PutApplied(a AppliedLimit) error {
	if err := j.db.Update(func(tx *bolt.Tx) error { return putApplied(tx, a) }); err != nil {
		return fmt.Errorf("journal: applied %s: %w", a.Key, err)
	}
	return nil
}

func putApplied(tx *bolt.Tx, a AppliedLimit) error {
	b := tx.Bucket(bucketApplied)
	if old := b.Get([]byte(a.Key)); old != nil {
		var prev AppliedLimit
		if json.Unmarshal(old, &prev) == nil {
			a.Original = prev.Original
		}
	}
	data, err := json.Marshal(a)
	if err != nil {
		return err
	}
	return b.Put([]byte(a.Key), data)
}

// DeleteApplied forgets a limit once it was restored.
func (j *Journal) DeleteApplied(key string) error {
	err := j.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketApplied).Delete([]byte(key)) })
	if err != nil {
		return fmt.Errorf("journal: delete applied %s: %w", key, err)
	}
	return nil
}

// Applied lists the limits vigil applied and has not restored, by key.
func (j *Journal) Applied() ([]AppliedLimit, error) {
	var out []AppliedLimit
	err := j.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketApplied).ForEach(func(k, v []byte) error {
			var a AppliedLimit
			if err := json.Unmarshal(v, &a); err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
			out = append(out, a)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("journal: applied: %w", err)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Key < out[b].Key })
	return out, nil
}

// GetApplied returns the applied limit recorded under key, or ErrNotFound.
func (j *Journal) GetApplied(key string) (AppliedLimit, error) {
	var a AppliedLimit
	err := j.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketApplied).Get([]byte(key))
		if v == nil {
			return ErrNotFound
		}
		return json.Unmarshal(v, &a)
	})
	if err != nil {
		return a, fmt.Errorf("journal: applied %s: %w", key, err)
	}
	return a, nil
}

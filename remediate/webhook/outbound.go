package webhook

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/vigil-agent/vigil/rules"
	bolt "go.etcd.io/bbolt"
)

// Event types sent to outbound webhooks.
const (
	EventRemediationStarted = "remediation.started"
	EventRemediationStep    = "remediation.step"
	EventRemediationOutcome = "remediation.outcome"
	EventOOMMissed          = "oom.missed"
)

// Event is the JSON body of one outbound webhook POST (see README.md).
type Event struct {
	// ID is unique per event (a UUID); a receiver dedupes on it, since
	// delivery is at least once.
	ID   string    `json:"id"`
	Type string    `json:"type"`
	Time time.Time `json:"time"`
	Node string    `json:"node"`
	// RemediationID is the journal id (vigil rca <id>); empty for an OOM
	// kill no remediation was running for.
	RemediationID string       `json:"remediation_id,omitempty"`
	Rule          string       `json:"rule,omitempty"`
	Severity      string       `json:"severity,omitempty"`
	Target        rules.Target `json:"target"`
	// Step is set on remediation.step events.
	Step *EventStep `json:"step,omitempty"`
	// Outcome is set on remediation.outcome and oom.missed events:
	// oom_avoided, recovered, no_effect, oom_killed, target_gone, refused,
	// dry_run.
	Outcome  string             `json:"outcome,omitempty"`
	DryRun   bool               `json:"dry_run,omitempty"`
	Evidence map[string]float64 `json:"evidence,omitempty"`
	Message  string             `json:"message,omitempty"`
}

// EventStep is one rung of the escalation ladder as it ran.
type EventStep struct {
	Index  int    `json:"index"`
	Action string `json:"action"`
	// Result is started, ok, error, refused, verified or timeout.
	Result string `json:"result"`
	Error  string `json:"error,omitempty"`
}

// Endpoint is one outbound webhook receiver. Events are delivered to it in
// the order they were enqueued; a failing delivery is retried (the queue
// behind it waits) until it succeeds.
type Endpoint struct {
	// Name identifies the endpoint's queue in the outbox; keep it stable
	// across restarts (events queued under a name that is no longer
	// configured stay in the outbox).
	Name string
	URL  string
	// Secret signs every request (X-Vigil-Signature).
	Secret []byte
	// Types limits the events sent (empty = all).
	Types []string
	// Format is FormatEvent (default: the vigil event JSON) or
	// FormatAlertmanager (URL is an Alertmanager's /api/v2/alerts; each
	// event becomes an alert, see alertmanagerAlert).
	Format string
	// BearerToken, when set, is sent as "Authorization: Bearer <token>"
	// (e.g. for an Alertmanager behind an authenticating proxy).
	BearerToken string
}

// Endpoint formats.
const (
	FormatEvent        = "event"
	FormatAlertmanager = "alertmanager"
)

// SenderConfig configures a Sender.
type SenderConfig struct {
	// OutboxPath is the bbolt file holding undelivered events.
	OutboxPath string
	Endpoints  []Endpoint
	// Client sends the requests (nil = a client with a 10 s timeout).
	Client *http.Client
	// MinBackoff and MaxBackoff bound the exponential backoff between
	// attempts at one event (0 = 1 s and 5 min); each wait is jittered.
	MinBackoff, MaxBackoff time.Duration
	Logger                 *slog.Logger
}

// Validate checks the configuration before anything starts.
func (c SenderConfig) Validate() error {
	if c.OutboxPath == "" {
		return errors.New("webhook outbound: outbox path is empty")
	}
	names := map[string]bool{}
	for i, e := range c.Endpoints {
		if e.Name == "" {
			return fmt.Errorf("webhook outbound: endpoints[%d]: name is empty", i)
		}
		if names[e.Name] {
			return fmt.Errorf("webhook outbound: endpoints[%d]: duplicate name %q", i, e.Name)
		}
		names[e.Name] = true
		u, err := url.Parse(e.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("webhook outbound: endpoint %s: URL %q is not an http(s) URL", e.Name, e.URL)
		}
		if e.Format != "" && e.Format != FormatEvent && e.Format != FormatAlertmanager {
			return fmt.Errorf("webhook outbound: endpoint %s: format %q is not %s or %s", e.Name, e.Format, FormatEvent, FormatAlertmanager)
		}
		if len(e.Secret) < 16 {
			return fmt.Errorf("webhook outbound: endpoint %s: secret shorter than 16 bytes", e.Name)
		}
	}
	if c.MinBackoff < 0 || c.MaxBackoff < 0 || (c.MaxBackoff > 0 && c.MaxBackoff < c.MinBackoff) {
		return errors.New("webhook outbound: bad backoff bounds")
	}
	return nil
}

// Sender delivers events to the configured endpoints through a persisted
// outbox: Enqueue returns once the event is on disk for every endpoint, and
// Run delivers them, at least once each, in order per endpoint, across
// receiver outages and agent restarts.
type Sender struct {
	cfg   SenderConfig
	db    *bolt.DB
	log   *slog.Logger
	wake  map[string]chan struct{}
	nowFn func() time.Time

	running atomic.Bool
	mu      sync.Mutex
	results map[[2]string]uint64 // (endpoint, result) -> attempts
}

func (s *Sender) count(endpoint, result string) {
	s.mu.Lock()
	s.results[[2]string{endpoint, result}]++
	s.mu.Unlock()
}

var bucketDead = []byte("dead") // endpoint/seq -> refused event

func queueBucket(endpoint string) []byte { return []byte("queue/" + endpoint) }

// outboxEntry is one queued delivery.
type outboxEntry struct {
	EventID  string          `json:"event_id"`
	Type     string          `json:"type"`
	Body     json.RawMessage `json:"body"`
	Attempts int             `json:"attempts"`
	LastErr  string          `json:"last_error,omitempty"`
}

// NewSender opens (creating if needed) the outbox file.
func NewSender(cfg SenderConfig) (*Sender, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 5 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	db, err := bolt.Open(cfg.OutboxPath, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("webhook outbox %s: %w", cfg.OutboxPath, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketDead); err != nil {
			return err
		}
		for _, e := range cfg.Endpoints {
			if _, err := tx.CreateBucketIfNotExists(queueBucket(e.Name)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("webhook outbox %s: %w", cfg.OutboxPath, err)
	}
	s := &Sender{cfg: cfg, db: db, log: cfg.Logger, wake: map[string]chan struct{}{}, nowFn: time.Now, results: map[[2]string]uint64{}}
	for _, e := range cfg.Endpoints {
		s.wake[e.Name] = make(chan struct{}, 1)
	}
	return s, nil
}

// Close closes the outbox file. Call it after Run has returned.
func (s *Sender) Close() error { return s.db.Close() }

// Enqueue stores ev for every endpoint that wants its type, in one fsync'd
// transaction, and wakes the delivery loops. It fills ID and Time when empty
// and returns the event as queued.
func (s *Sender) Enqueue(ev Event) (Event, error) {
	if ev.Type == "" {
		return ev, errors.New("webhook outbound: event without type")
	}
	if ev.ID == "" {
		ev.ID = uuid.NewString()
	}
	if ev.Time.IsZero() {
		ev.Time = s.nowFn().UTC()
	}
	body, err := json.Marshal(ev)
	if err != nil {
		return ev, fmt.Errorf("webhook outbound: encode event %s: %w", ev.ID, err)
	}
	entry, err := json.Marshal(outboxEntry{EventID: ev.ID, Type: ev.Type, Body: body})
	if err != nil {
		return ev, err
	}
	var woken []string
	err = s.db.Update(func(tx *bolt.Tx) error {
		for _, e := range s.cfg.Endpoints {
			if !wants(e, ev.Type) {
				continue
			}
			b := tx.Bucket(queueBucket(e.Name))
			seq, err := b.NextSequence()
			if err != nil {
				return err
			}
			if err := b.Put(seqKey(seq), entry); err != nil {
				return err
			}
			woken = append(woken, e.Name)
		}
		return nil
	})
	if err != nil {
		return ev, fmt.Errorf("webhook outbox %s: enqueue %s: %w", s.cfg.OutboxPath, ev.ID, err)
	}
	for _, name := range woken {
		select {
		case s.wake[name] <- struct{}{}:
		default:
		}
	}
	return ev, nil
}

func wants(e Endpoint, typ string) bool {
	if len(e.Types) == 0 {
		return true
	}
	for _, t := range e.Types {
		if t == typ {
			return true
		}
	}
	return false
}

func seqKey(seq uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, seq)
	return k
}

// Pending returns the number of undelivered events per endpoint.
func (s *Sender) Pending() (map[string]int, error) {
	out := map[string]int{}
	err := s.db.View(func(tx *bolt.Tx) error {
		for _, e := range s.cfg.Endpoints {
			out[e.Name] = tx.Bucket(queueBucket(e.Name)).Stats().KeyN
		}
		return nil
	})
	return out, err
}

// Run delivers queued events until ctx is cancelled, one goroutine per
// endpoint (owned here: Run returns after they stop).
func (s *Sender) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("webhook outbound: Sender.Run called twice")
	}
	defer s.running.Store(false)
	var wg sync.WaitGroup
	for _, e := range s.cfg.Endpoints {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.deliverLoop(ctx, e)
		}()
	}
	wg.Wait()
	return ctx.Err()
}

func (s *Sender) deliverLoop(ctx context.Context, e Endpoint) {
	log := s.log.With("endpoint", e.Name)
	for {
		key, entry, ok, err := s.head(e.Name)
		if err != nil {
			log.Error("webhook outbox read failed", "err", err)
			if ok {
				// An entry that does not decode would block the queue
				// forever: set it aside.
				if err := s.remove(e.Name, key, &outboxEntry{LastErr: "undecodable outbox entry"}); err != nil {
					log.Error("webhook outbox remove failed", "err", err)
				}
				s.count(e.Name, "dead")
				continue
			}
		}
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-s.wake[e.Name]:
				continue
			case <-time.After(time.Minute):
				continue
			}
		}
		status, err := s.post(ctx, e, entry)
		switch {
		case err == nil && status >= 200 && status < 300:
			if err := s.remove(e.Name, key, nil); err != nil {
				log.Error("webhook outbox remove failed", "event_id", entry.EventID, "err", err)
			}
			s.count(e.Name, "delivered")
			continue
		case err == nil && permanent(status):
			// The receiver rejects this event for good: keep it aside so
			// the queue behind it moves on.
			log.Error("webhook event refused by receiver; moved to the dead letter bucket", "event_id", entry.EventID, "status", status)
			entry.LastErr = "HTTP " + strconv.Itoa(status)
			if err := s.remove(e.Name, key, &entry); err != nil {
				log.Error("webhook outbox remove failed", "event_id", entry.EventID, "err", err)
			}
			s.count(e.Name, "dead")
			continue
		}
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = fmt.Errorf("HTTP %d", status)
		}
		s.count(e.Name, "retry")
		entry.Attempts++
		entry.LastErr = err.Error()
		if uerr := s.update(e.Name, key, entry); uerr != nil {
			log.Error("webhook outbox update failed", "event_id", entry.EventID, "err", uerr)
		}
		wait := s.backoff(entry.Attempts)
		log.Warn("webhook delivery failed; retrying", "event_id", entry.EventID, "attempt", entry.Attempts, "retry_in", wait, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// permanent reports a status that retrying will not change.
func permanent(status int) bool {
	return status >= 400 && status < 500 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests &&
		status != http.StatusUnauthorized && status != http.StatusForbidden
}

// backoff is exponential from MinBackoff, capped at MaxBackoff, with jitter
// over its upper half so that agents restarted together do not retry in step.
func (s *Sender) backoff(attempts int) time.Duration {
	d := s.cfg.MinBackoff
	for i := 1; i < attempts && d < s.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, s.cfg.MaxBackoff)
	half := d / 2
	return half + time.Duration(rand.Int64N(int64(half)+1))
}

func (s *Sender) head(endpoint string) (key []byte, entry outboxEntry, ok bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		k, v := tx.Bucket(queueBucket(endpoint)).Cursor().First()
		if k == nil {
			return nil
		}
		key = bytes.Clone(k)
		ok = true
		return json.Unmarshal(v, &entry)
	})
	return key, entry, ok, err
}

func (s *Sender) update(endpoint string, key []byte, entry outboxEntry) error {
	v, err := json.Marshal(entry)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(queueBucket(endpoint)).Put(key, v) })
}

// remove deletes the head entry; with dead set, it moves it to the dead
// letter bucket in the same transaction.
func (s *Sender) remove(endpoint string, key []byte, dead *outboxEntry) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if dead != nil {
			v, err := json.Marshal(dead)
			if err != nil {
				return err
			}
			if err := tx.Bucket(bucketDead).Put(append([]byte(endpoint+"/"), key...), v); err != nil {
				return err
			}
		}
		return tx.Bucket(queueBucket(endpoint)).Delete(key)
	})
}

func (s *Sender) post(ctx context.Context, e Endpoint, entry outboxEntry) (int, error) {
	body := []byte(entry.Body)
	if e.Format == FormatAlertmanager {
		var ev Event
		if err := json.Unmarshal(entry.Body, &ev); err != nil {
			return 0, fmt.Errorf("decode queued event %s: %w", entry.EventID, err)
		}
		b, err := json.Marshal([]amPostableAlert{alertmanagerAlert(ev)})
		if err != nil {
			return 0, err
		}
		body = b
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.URL, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	if e.BearerToken != "" {
		req.Header.Set("Authorization", "Bearer "+e.BearerToken)
	}
	ts := strconv.FormatInt(s.nowFn().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "vigil-webhook/1")
	req.Header.Set(HeaderEventID, entry.EventID)
	req.Header.Set(HeaderEventType, entry.Type)
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, Sign(e.Secret, ts, body))
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode, nil
}

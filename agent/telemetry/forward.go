// Package telemetry owns what vigil sends to the user's pipelines: records
// forwarded to Fluentd / Fluent Bit (kernel OOM events, remediation records,
// matched container log lines) and vigil's own traces over OTLP.
//
// Neither may slow vigil down: forwarding is asynchronous with a bounded
// buffer (a full buffer drops and counts), and tracing is off unless an
// endpoint is configured.
package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fluent/fluent-logger-golang/fluent"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/tinylib/msgp/msgp"
)

// Kind is the kind of a forwarded record; the Fluent tag is
// "<TagPrefix>.<kind>" (vigil.oom, vigil.remediation, vigil.log).
type Kind string

const (
	KindOOM         Kind = "oom"
	KindRemediation Kind = "remediation"
	KindLog         Kind = "log"
)

var kinds = []Kind{KindOOM, KindRemediation, KindLog}

// Drop reasons (label reason of vigil_forward_dropped_total).
const (
	DropBufferFull = "buffer_full" // the bounded buffer was full at Post
	DropSendFailed = "send_failed" // retries exhausted (pipeline down too long)
	DropShutdown   = "shutdown"    // still queued when the forwarder closed
	DropEncode     = "encode"      // the record could not be encoded
	DropClosed     = "closed"      // posted after Close
)

// ForwarderConfig configures forwarding. The zero Address disables it.
type ForwarderConfig struct {
	// Address is host:port of a Forward input (Fluentd, Fluent Bit, the
	// OpenTelemetry Collector's fluent_forward receiver) or unix:///path.
	Address string `yaml:"address" json:"address"`
	// TagPrefix defaults to "vigil".
	TagPrefix string `yaml:"tag_prefix" json:"tag_prefix"`
	// BufferRecords bounds the records waiting to be sent (default 8192).
	BufferRecords int `yaml:"buffer_records" json:"buffer_records"`
	// RetryWait is the first reconnect backoff (default 500ms), growing 1.5x
	// per attempt up to MaxRetryWait (default 30s), MaxRetries times
	// (default 13) per record before it is dropped.
	RetryWait    time.Duration `yaml:"retry_wait" json:"retry_wait"`
	MaxRetryWait time.Duration `yaml:"max_retry_wait" json:"max_retry_wait"`
	MaxRetries   int           `yaml:"max_retries" json:"max_retries"`
	// Timeout bounds dial, write and acknowledgement read (default 5s).
	Timeout time.Duration `yaml:"timeout" json:"timeout"`
	// NoAck turns off Forward protocol acknowledgements. With acks (the
	// default) a record counts as sent only once the receiver confirmed it,
	// so records are resent across a receiver restart instead of vanishing
	// in a dead socket.
	NoAck bool `yaml:"no_ack" json:"no_ack"`
}

// Validate checks the configuration before anything starts.
func (c ForwarderConfig) Validate() error {
	if c.Address == "" {
		return nil
	}
	if _, _, err := splitAddress(c.Address); err != nil {
		return err
	}
	if c.BufferRecords < 0 || c.MaxRetries < 0 || c.RetryWait < 0 || c.MaxRetryWait < 0 || c.Timeout < 0 {
		return errors.New("telemetry: forward: negative buffer, retry or timeout setting")
	}
	return nil
}

func splitAddress(addr string) (network, target string, err error) {
	if p, ok := strings.CutPrefix(addr, "unix://"); ok {
		return "unix", p, nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", "", fmt.Errorf("telemetry: forward address %q: %w", addr, err)
	}
	if _, err := strconv.Atoi(port); err != nil {
		return "", "", fmt.Errorf("telemetry: forward address %q: bad port", addr)
	}
	return "tcp", net.JoinHostPort(host, port), nil
}

// ForwardMetrics are the forwarder's Prometheus metrics; one set per
// registry, shared by the forwarders created with it.
type ForwardMetrics struct {
	records *prometheus.CounterVec
	dropped *prometheus.CounterVec
	queued  prometheus.Gauge
}

// NewForwardMetrics registers vigil_forward_records_total{kind},
// vigil_forward_dropped_total{kind,reason} and vigil_forward_queue_records
// on reg (nil: not registered).
func NewForwardMetrics(reg prometheus.Registerer) (*ForwardMetrics, error) {
	m := &ForwardMetrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_forward_records_total",
			Help: "Records delivered to the Forward endpoint (acknowledged unless no_ack), by kind.",
		}, []string{"kind"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_forward_dropped_total",
			Help: "Records not delivered to the Forward endpoint, by kind and reason (buffer_full, send_failed, shutdown, encode, closed).",
		}, []string{"kind", "reason"}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigil_forward_queue_records",
			Help: "Records accepted and not yet delivered or dropped.",
		}),
	}
	for _, k := range kinds {
		m.records.WithLabelValues(string(k))
		for _, r := range []string{DropBufferFull, DropSendFailed, DropShutdown} {
			m.dropped.WithLabelValues(string(k), r)
		}
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.records, m.dropped, m.queued} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("telemetry: register forward metrics: %w", err)
			}
		}
	}
	return m, nil
}

// Forwarder sends records to a Forward endpoint asynchronously. Post never
// blocks: when the buffer is full the record is dropped and counted.
type Forwarder struct {
	cfg     ForwarderConfig
	log     *slog.Logger
	metrics *ForwardMetrics
	fluent  *fluent.Fluent
	tags    map[string]Kind

	closeOnce sync.Once
	closed    atomic.Bool
	inflight  map[Kind]*atomic.Int64

	mu    sync.Mutex
	stats map[Kind]*KindStats
}

// KindStats are a forwarder's counts for one kind (also exported as metrics).
type KindStats struct {
	Posted    uint64
	Delivered uint64
	Dropped   map[string]uint64
}

// NewForwarder returns a forwarder, or nil when cfg.Address is empty (a nil
// *Forwarder accepts Post and Close and does nothing). metrics may be nil.
func NewForwarder(cfg ForwarderConfig, metrics *ForwardMetrics, log *slog.Logger) (*Forwarder, error) {
	if cfg.Address == "" {
		return nil, nil
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if metrics == nil {
		var err error
		if metrics, err = NewForwardMetrics(nil); err != nil {
			return nil, err
		}
	}
	if cfg.TagPrefix == "" {
		cfg.TagPrefix = "vigil"
	}
	if cfg.BufferRecords == 0 {
		cfg.BufferRecords = 8192
	}
	if cfg.RetryWait == 0 {
		cfg.RetryWait = 500 * time.Millisecond
	}
	if cfg.MaxRetryWait == 0 {
		cfg.MaxRetryWait = 30 * time.Second
	}
	if cfg.MaxRetries == 0 {
		cfg.MaxRetries = 13
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	f := &Forwarder{cfg: cfg, log: log.With("forward", cfg.Address), metrics: metrics, tags: map[string]Kind{},
		inflight: map[Kind]*atomic.Int64{}, stats: map[Kind]*KindStats{}}
	for _, k := range kinds {
		f.tags[cfg.TagPrefix+"."+string(k)] = k
		f.inflight[k] = new(atomic.Int64)
		f.stats[k] = &KindStats{Dropped: map[string]uint64{}}
	}
	network, target, _ := splitAddress(cfg.Address)
	fc := fluent.Config{
		Timeout:      cfg.Timeout,
		WriteTimeout: cfg.Timeout,
		ReadTimeout:  cfg.Timeout,
		BufferLimit:  cfg.BufferRecords,
		RetryWait:    int(cfg.RetryWait / time.Millisecond),
		MaxRetryWait: int(cfg.MaxRetryWait / time.Millisecond),
		MaxRetry:     cfg.MaxRetries,
		// Async also connects in the background: a dead endpoint at start
		// must not delay the agent.
		Async: true,
		// Close must not wait for a dead endpoint; what is still queued
		// is counted as dropped (shutdown).
		ForceStopAsyncSend:  true,
		RequestAck:          !cfg.NoAck,
		SubSecondPrecision:  true,
		AsyncResultCallback: f.result,
	}
	if network == "unix" {
		fc.FluentNetwork, fc.FluentSocketPath = "unix", target
	} else {
		host, port, _ := net.SplitHostPort(target)
		p, _ := strconv.Atoi(port)
		fc.FluentNetwork, fc.FluentHost, fc.FluentPort = "tcp", host, p
	}
	fl, err := fluent.New(fc)
	if err != nil {
		return nil, fmt.Errorf("telemetry: forward %s: %w", cfg.Address, err)
	}
	f.fluent = fl
	return f, nil
}

// Post queues one record of kind, stamped t (zero: now). It never blocks
// and reports whether the record was accepted; a refused record is counted
// in vigil_forward_dropped_total.
func (f *Forwarder) Post(kind Kind, t time.Time, record map[string]any) bool {
	if f == nil {
		return false
	}
	if t.IsZero() {
		t = time.Now()
	}
	f.count(kind, func(s *KindStats) { s.Posted++ })
	if f.closed.Load() {
		f.drop(kind, DropClosed)
		return false
	}
	in := f.inflight[kind]
	if in == nil {
		f.drop(kind, DropEncode)
		return false
	}
	in.Add(1)
	f.metrics.queued.Inc()
	err := f.fluent.PostWithTime(f.cfg.TagPrefix+"."+string(kind), t, record)
	if err == nil {
		return true
	}
	in.Add(-1)
	f.metrics.queued.Dec()
	switch {
	case strings.Contains(err.Error(), "Buffer full"):
		f.drop(kind, DropBufferFull)
	case strings.Contains(err.Error(), "already closed"):
		f.drop(kind, DropClosed)
	default:
		f.drop(kind, DropEncode)
		f.log.Debug("forward: encode", "kind", kind, "err", err)
	}
	return false
}

// result is called by the sending goroutine for every record it finished
// with, delivered (err nil) or given up.
func (f *Forwarder) result(data []byte, err error) {
	kind := f.kindOf(data)
	if in := f.inflight[kind]; in != nil {
		in.Add(-1)
	}
	f.metrics.queued.Dec()
	if err != nil {
		reason := DropSendFailed
		if f.closed.Load() {
			reason = DropShutdown
		}
		f.drop(kind, reason)
		f.log.Warn("forward: record dropped", "kind", kind, "reason", reason, "err", err)
		return
	}
	f.metrics.records.WithLabelValues(string(kind)).Inc()
	f.count(kind, func(s *KindStats) { s.Delivered++ })
}

// kindOf reads the tag of an encoded Forward message [tag, time, record, opts].
func (f *Forwarder) kindOf(data []byte) Kind {
	if _, rest, err := msgp.ReadArrayHeaderBytes(data); err == nil {
		if tag, _, err := msgp.ReadStringBytes(rest); err == nil {
			if k, ok := f.tags[tag]; ok {
				return k
			}
		}
	}
	return KindLog
}

func (f *Forwarder) drop(kind Kind, reason string) {
	f.metrics.dropped.WithLabelValues(string(kind), reason).Inc()
	f.count(kind, func(s *KindStats) { s.Dropped[reason]++ })
}

func (f *Forwarder) count(kind Kind, fn func(*KindStats)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.stats[kind]
	if s == nil {
		s = &KindStats{Dropped: map[string]uint64{}}
		f.stats[kind] = s
	}
	fn(s)
}

// Stats returns a copy of the per-kind counts.
func (f *Forwarder) Stats() map[Kind]KindStats {
	out := map[Kind]KindStats{}
	if f == nil {
		return out
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, s := range f.stats {
		c := *s
		c.Dropped = map[string]uint64{}
		for r, n := range s.Dropped {
			c.Dropped[r] = n
		}
		out[k] = c
	}
	return out
}

// Pending is the number of records accepted and not yet delivered or dropped.
func (f *Forwarder) Pending() int64 {
	if f == nil {
		return 0
	}
	var n int64
	for _, in := range f.inflight {
		n += in.Load()
	}
	return n
}

// Flush waits until every accepted record was delivered or dropped, or ctx
// ends. Use it before Close to drain a healthy pipeline.
func (f *Forwarder) Flush(ctx context.Context) error {
	if f == nil {
		return nil
	}
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for f.Pending() > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("telemetry: forward flush: %d records pending: %w", f.Pending(), ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// Close stops the forwarder without waiting for a dead endpoint: records
// still queued are dropped and counted with reason "shutdown".
func (f *Forwarder) Close() error {
	if f == nil {
		return nil
	}
	var err error
	f.closeOnce.Do(func() {
		f.closed.Store(true)
		err = f.fluent.Close()
		// Whatever the sender did not report on is lost.
		for k, in := range f.inflight {
			if n := in.Swap(0); n > 0 {
				f.metrics.queued.Sub(float64(n))
				for range n {
					f.drop(k, DropShutdown)
				}
			}
		}
	})
	return err
}

// Record turns a struct (an OOM event, a journal record) into a Forward
// record through its JSON encoding, so field names match the journal's.
func Record(v any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("telemetry: record: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("telemetry: record: %w", err)
	}
	return numbers(m).(map[string]any), nil
}

// numbers turns json.Number into int64 (or float64), so integers stay
// integers on the wire.
func numbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = numbers(e)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = numbers(e)
		}
		return x
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n
		}
		f, _ := x.Float64()
		return f
	}
	return v
}

package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Headers of a signed request (outbound events, and inbound deliveries that
// use HMAC instead of a bearer token).
const (
	HeaderSignature = "X-Vigil-Signature" // "sha256=" + hex HMAC-SHA256 over "<timestamp>.<body>"
	HeaderTimestamp = "X-Vigil-Timestamp" // Unix seconds, decimal
	HeaderEventID   = "X-Vigil-Event-Id"
	HeaderEventType = "X-Vigil-Event-Type"
)

// DefaultMaxBodyBytes bounds an inbound body.
const DefaultMaxBodyBytes = 1 << 20

// InboundConfig says how inbound alert deliveries are authenticated. With
// neither BearerToken nor HMACSecret set, the handler refuses every request:
// inbound alerts are off unless configured.
type InboundConfig struct {
	// BearerToken, when set, must come as "Authorization: Bearer <token>"
	// (Alertmanager: http_config.authorization.credentials).
	BearerToken string
	// HMACSecret, when set, lets a sender sign instead: X-Vigil-Timestamp
	// and X-Vigil-Signature as for outbound events (see Sign).
	HMACSecret []byte
	// MaxSkew bounds the age of a signed request's timestamp, against
	// replays (0 = 5 minutes).
	MaxSkew time.Duration
	// MaxBodyBytes bounds the body (0 = DefaultMaxBodyBytes).
	MaxBodyBytes int64
}

// Validate reports a configuration that cannot work.
func (c InboundConfig) Validate() error {
	if c.BearerToken != "" && len(c.BearerToken) < 16 {
		return errors.New("webhook inbound: bearer token shorter than 16 characters")
	}
	if len(c.HMACSecret) > 0 && len(c.HMACSecret) < 16 {
		return errors.New("webhook inbound: HMAC secret shorter than 16 bytes")
	}
	if c.MaxBodyBytes < 0 || c.MaxSkew < 0 {
		return errors.New("webhook inbound: negative limit")
	}
	return nil
}

func (c InboundConfig) enabled() bool { return c.BearerToken != "" || len(c.HMACSecret) > 0 }

// Sign returns the X-Vigil-Signature value for body sent at timestamp (the
// X-Vigil-Timestamp value): "sha256=" + hex(HMAC-SHA256(secret, timestamp + "." + body)).
func Sign(secret []byte, timestamp string, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(timestamp))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Verify checks a signature made by Sign, in constant time, and that the
// timestamp is within maxSkew of now. Receivers of vigil's events can use it.
func Verify(secret []byte, timestamp string, body []byte, signature string, now time.Time, maxSkew time.Duration) error {
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("bad %s %q", HeaderTimestamp, timestamp)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > maxSkew || d < -maxSkew {
		return fmt.Errorf("%s %s is %s away from now, more than %s", HeaderTimestamp, timestamp, d.Round(time.Second), maxSkew)
	}
	want := Sign(secret, timestamp, body)
	if !hmac.Equal([]byte(want), []byte(signature)) {
		return errors.New("signature mismatch")
	}
	return nil
}

// Inbound is the http.Handler for POST /api/v1/alerts: it accepts
// Alertmanager webhook payloads (version "4") and records their alerts in
// an AlertStore.
type Inbound struct {
	cfg   InboundConfig
	store *AlertStore
	log   *slog.Logger
	now   func() time.Time

	mu                   sync.Mutex
	accepted, duplicates uint64
	refused              map[string]uint64 // HTTP status code -> requests
}

// NewInbound returns the handler. The agent mounts it at POST
// /api/v1/alerts and reads store.Active(now) each tick into Snapshot.Alerts.
func NewInbound(cfg InboundConfig, store *AlertStore, log *slog.Logger) (*Inbound, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if store == nil {
		return nil, errors.New("webhook inbound: nil AlertStore")
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MaxSkew == 0 {
		cfg.MaxSkew = 5 * time.Minute
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Inbound{cfg: cfg, store: store, log: log, now: time.Now, refused: map[string]uint64{}}, nil
}

// inboundReply is the JSON body of every answer.
type inboundReply struct {
	Accepted   int    `json:"accepted,omitempty"`
	Duplicates int    `json:"duplicates,omitempty"`
	Error      string `json:"error,omitempty"`
}

func (h *Inbound) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.reply(w, http.StatusMethodNotAllowed, inboundReply{Error: "only POST is allowed"})
		return
	}
	if !h.cfg.enabled() {
		h.reply(w, http.StatusForbidden, inboundReply{Error: "inbound alerts are disabled: configure a bearer token or an HMAC secret"})
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		h.reply(w, http.StatusUnsupportedMediaType, inboundReply{Error: "Content-Type must be application/json"})
		return
	}
	if r.ContentLength > h.cfg.MaxBodyBytes {
		h.reply(w, http.StatusRequestEntityTooLarge, inboundReply{Error: fmt.Sprintf("body larger than %d bytes", h.cfg.MaxBodyBytes)})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			h.reply(w, http.StatusRequestEntityTooLarge, inboundReply{Error: fmt.Sprintf("body larger than %d bytes", h.cfg.MaxBodyBytes)})
			return
		}
		h.reply(w, http.StatusBadRequest, inboundReply{Error: "reading body: " + err.Error()})
		return
	}
	// Authenticate before parsing: an unauthenticated sender learns nothing
	// about the payload contract.
	if err := h.authenticate(r, body); err != nil {
		h.log.Warn("inbound alerts: refused", "remote", r.RemoteAddr, "err", err)
		w.Header().Set("WWW-Authenticate", `Bearer realm="vigil"`)
		h.reply(w, http.StatusUnauthorized, inboundReply{Error: err.Error()})
		return
	}
	p, err := parseAlertmanager(body)
	if err != nil {
		status := http.StatusBadRequest
		var ve *ValidationError
		if errors.As(err, &ve) {
			status = http.StatusUnprocessableEntity
		}
		h.reply(w, status, inboundReply{Error: err.Error()})
		return
	}
	accepted, dups := h.store.apply(p.Alerts, h.now())
	h.mu.Lock()
	h.accepted += uint64(accepted)
	h.duplicates += uint64(dups)
	h.mu.Unlock()
	h.log.Info("inbound alerts", "receiver", p.Receiver, "status", p.Status, "accepted", accepted, "duplicates", dups)
	h.reply(w, http.StatusOK, inboundReply{Accepted: accepted, Duplicates: dups})
}

func (h *Inbound) authenticate(r *http.Request, body []byte) error {
	if sig := r.Header.Get(HeaderSignature); sig != "" && len(h.cfg.HMACSecret) > 0 {
		return Verify(h.cfg.HMACSecret, r.Header.Get(HeaderTimestamp), body, sig, h.now(), h.cfg.MaxSkew)
	}
	if auth := r.Header.Get("Authorization"); auth != "" && h.cfg.BearerToken != "" {
		token, ok := strings.CutPrefix(auth, "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(token), []byte(h.cfg.BearerToken)) != 1 {
			return errors.New("invalid bearer token")
		}
		return nil
	}
	return errors.New("missing credentials: Authorization: Bearer <token> or " + HeaderSignature)
}

func (h *Inbound) reply(w http.ResponseWriter, status int, body inboundReply) {
	if status != http.StatusOK {
		h.mu.Lock()
		h.refused[strconv.Itoa(status)]++
		h.mu.Unlock()
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}

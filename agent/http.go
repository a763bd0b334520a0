package agent

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/prometheus/common/expfmt"
)

// HTTP server limits: slow clients cannot hold connections, bodies are
// bounded by api.max_body_bytes. Variables so tests can shorten them.
var (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 60 * time.Second
	idleTimeout       = 120 * time.Second
	maxHeaderBytes    = 64 << 10
)

func (a *Agent) newServer() *http.Server {
	return &http.Server{
		Handler:           a.limitBody(a.mux),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slogErrorLog(a.log),
	}
}

// Handle mounts a read-only handler (e.g. "GET /api/v1/remediations").
// Call it before Run.
func (a *Agent) Handle(pattern string, h http.Handler) { a.mux.Handle(pattern, h) }

// HandleAuthenticated mounts a mutating handler (e.g. "POST
// /api/v1/pause"): requests need `Authorization: Bearer <token>` with the
// token of api.token_file; without a configured token they get 403.
func (a *Agent) HandleAuthenticated(pattern string, h http.Handler) {
	a.mux.Handle(pattern, a.requireToken(h))
}

func (a *Agent) routes() {
	a.mux.Handle("GET /metrics", a.metricsHandler())
	a.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	a.mux.HandleFunc("GET /readyz", a.serveReadyz)
	a.mux.HandleFunc("GET /api/v1/snapshot", a.serveSnapshot)
	a.mux.HandleFunc("GET /api/v1/version", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.info)
	})
	a.mux.HandleFunc("GET /api/v1/node", func(w http.ResponseWriter, r *http.Request) {
		facts := a.facts.Load()
		if facts == nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "host facts not read yet"})
			return
		}
		writeJSON(w, http.StatusOK, facts)
	})
	a.mux.HandleFunc("GET /{$}", a.serveIndex)
}

func (a *Agent) serveIndex(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("vigil " + a.info.Version + "\n\n/metrics\n/healthz\n/readyz\n/api/v1/snapshot\n/api/v1/node\n/api/v1/version\n"))
}

// readyStatus is the JSON body of /readyz.
type readyStatus struct {
	Ready    bool        `json:"ready"`
	NotReady []Condition `json:"not_ready,omitempty"`
	Degraded []Condition `json:"degraded,omitempty"`
}

// serveReadyz answers 200 when ready and 503 otherwise, saying why in text
// (default) or JSON (?format=json or Accept: application/json).
func (a *Agent) serveReadyz(w http.ResponseWriter, r *http.Request) {
	ready, notReady, degraded := a.health.status()
	code := http.StatusOK
	if !ready {
		code = http.StatusServiceUnavailable
	}
	if r.URL.Query().Get("format") == "json" || strings.Contains(r.Header.Get("Accept"), "application/json") {
		writeJSON(w, code, readyStatus{ready, notReady, degraded})
		return
	}
	var b strings.Builder
	if ready {
		b.WriteString("ready\n")
	} else {
		b.WriteString("not ready\n")
	}
	for _, c := range notReady {
		b.WriteString("not ready: " + c.Component + ": " + c.Reason + "\n")
	}
	for _, c := range degraded {
		b.WriteString("degraded: " + c.Component + ": " + c.Reason + "\n")
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	w.Write([]byte(b.String()))
}

// serveSnapshot writes the latest full snapshot as JSON; ?cgroup=/a/b
// keeps only that cgroup and its descendants. It encodes into memory under
// the read hold and writes to the client after release, so a slow client
// never delays the loop.
func (a *Agent) serveSnapshot(w http.ResponseWriter, r *http.Request) {
	prefix := r.URL.Query().Get("cgroup")
	snap, release := a.snaps.Acquire()
	if snap == nil {
		release()
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "no snapshot yet"})
		return
	}
	out := snap
	if prefix != "" {
		filtered := *snap
		filtered.Cgroups = nil
		for i := range snap.Cgroups {
			p := snap.Cgroups[i].Path
			if p == prefix || prefix == "/" || strings.HasPrefix(p, strings.TrimSuffix(prefix, "/")+"/") {
				filtered.Cgroups = append(filtered.Cgroups, snap.Cgroups[i])
			}
		}
		out = &filtered
	}
	var buf bytes.Buffer
	err := json.NewEncoder(&buf).Encode(out)
	release()
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(buf.Bytes())
}

// metricsHandler serves the registry (self-metrics, Go, process, node
// families and other components' metrics) followed by the cgroup families,
// which are written straight from the snapshot. The output is always the
// text format 0.0.4, gzipped when the scraper accepts it (klauspost's gzip at
// BestSpeed: the same output format as compress/gzip, in about 60 % of its
// CPU time on this text, see BenchmarkScrape). Gzipped, the text
// goes through the compressor in chunks and only the compressed body is
// held (about 1/20 of the text); the snapshot is released before anything
// is written to the scraper.
func (a *Agent) metricsHandler() http.Handler {
	var mu sync.Mutex // one scrape at a time reuses the buffers
	tw := &cgroupTextWriter{}
	var zbuf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		gzipped := strings.Contains(r.Header.Get("Accept-Encoding"), "gzip")
		var body []byte
		var err error
		if gzipped {
			zbuf.Reset()
			gz.Reset(&zbuf)
			if err = a.renderMetrics(tw, gz); err == nil {
				err = gz.Close()
			}
			body = zbuf.Bytes()
		} else {
			err = a.renderMetrics(tw, nil)
			body = tw.buf
		}
		if err != nil {
			http.Error(w, "gathering metrics: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
		if gzipped {
			w.Header().Set("Content-Encoding", "gzip")
		}
		w.Write(body)
		// Do not keep a whole uncompressed body until the next scrape.
		if cap(tw.buf) > 4*textChunk {
			tw.buf = nil
		}
	})
}

// renderMetrics renders the /metrics body: into tw.buf when out is nil,
// else through tw.buf to out in chunks.
func (a *Agent) renderMetrics(tw *cgroupTextWriter, out io.Writer) error {
	tw.buf = tw.buf[:0]
	mfs, err := a.reg.Gather()
	if err != nil {
		return err
	}
	bw := bytesWriter{&tw.buf}
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(bw, mf); err != nil {
			return err
		}
	}
	snap, release := a.snaps.Acquire()
	defer release()
	if snap != nil {
		return tw.writeCgroupFamilies(snap, out)
	}
	if out != nil && len(tw.buf) > 0 {
		_, err = out.Write(tw.buf)
		tw.buf = tw.buf[:0]
	}
	return err
}

type bytesWriter struct{ b *[]byte }

func (w bytesWriter) Write(p []byte) (int, error) {
	*w.b = append(*w.b, p...)
	return len(p), nil
}

// limitBody bounds every request body by api.max_body_bytes.
func (a *Agent) limitBody(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limit := a.cfg.Load().API.MaxBodyBytes
		if r.ContentLength > limit {
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "request body too large"})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		h.ServeHTTP(w, r)
	})
}

// requireToken checks the bearer token in constant time.
func (a *Agent) requireToken(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := ""
		if p := a.token.Load(); p != nil {
			tok = *p
		}
		if tok == "" {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "mutating endpoints are disabled: set api.token_file"})
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(tok)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="vigil"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong bearer token"})
			return
		}
		h.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

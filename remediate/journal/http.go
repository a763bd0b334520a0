package journal

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"
)

// Handler serves the journal read-only:
//
//	GET /api/v1/remediations?target=&rule=&kind=&since=&outcome=&limit=
//	GET /api/v1/remediations/{id}
//	GET /api/v1/remediations?format=jsonl   (export, JSON lines)
//
// since is RFC 3339 or a duration back from now ("1h").
func (j *Journal) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/remediations", j.serveList)
	mux.HandleFunc("GET /api/v1/remediations/{id}", j.serveGet)
	return mux
}

// ParseFilter reads a Filter from query values (shared by the HTTP API and
// the CLI flags).
func ParseFilter(get func(string) string, now time.Time) (Filter, error) {
	f := Filter{Target: get("target"), Rule: get("rule"), Kind: get("kind"), Outcome: get("outcome")}
	if s := get("since"); s != "" {
		if d, err := time.ParseDuration(s); err == nil {
			f.Since = now.Add(-d)
		} else if t, err := time.Parse(time.RFC3339, s); err == nil {
			f.Since = t
		} else {
			return f, errors.New("since: want RFC 3339 time or duration, got " + strconv.Quote(s))
		}
	}
	if s := get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < -1 {
			return f, errors.New("limit: want an integer >= -1, got " + strconv.Quote(s))
		}
		f.Limit = n
	}
	return f, nil
}

func (j *Journal) serveList(w http.ResponseWriter, r *http.Request) {
	f, err := ParseFilter(r.URL.Query().Get, time.Now())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if r.URL.Query().Get("format") == "jsonl" {
		w.Header().Set("Content-Type", "application/x-ndjson")
		if err := j.Export(w, f); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
		return
	}
	recs, err := j.List(f)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if recs == nil {
		recs = []Record{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"remediations": recs})
}

func (j *Journal) serveGet(w http.ResponseWriter, r *http.Request) {
	rec, err := j.Get(r.PathValue("id"))
	if errors.Is(err, ErrNotFound) {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

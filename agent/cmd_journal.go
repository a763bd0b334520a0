package agent

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vigil-agent/vigil/agent/config"
	"github.com/vigil-agent/vigil/remediate/journal"
)

func init() {
	registerCommand(&Command{
		Name:    "journal",
		Summary: "list, show and export remediation records (the durable journal)",
		Run:     journalCommand,
	})
	registerCommand(&Command{
		Name:    "rca",
		Summary: "print a remediation's root-cause timeline: signals before, each step, outcome after",
		Run:     rcaCommand,
	})
}

// DefaultJournalPath is where the agent keeps its journal unless configured.
const DefaultJournalPath = "/var/lib/vigil/journal.db"

const journalUsage = `list|show ID|export [flags]

  vigil journal list [--target PATH] [--rule R] [--kind K] [--outcome O] [--since 1h|RFC3339] [--limit N]
  vigil journal show ID                 the record as JSON
  vigil journal export [filters]        records as JSON lines (newest first)

The journal file is read directly (--db); while a running agent holds it, the
agent's API is asked instead (--api).`

// journalSource reads records from the file or, when the agent holds the
// file's lock, from the agent's HTTP API.
type journalSource struct {
	fs     *flag.FlagSet
	db     *string
	api    *string
	filter map[string]*string
}

func newJournalSource(name, usage string, stderr io.Writer, filters bool) *journalSource {
	s := &journalSource{fs: NewFlagSet(name, usage, stderr), filter: map[string]*string{}}
	s.db = s.fs.String("db", DefaultJournalPath, "journal `file`")
	s.api = s.fs.String("api", "http://"+config.DefaultListen, "agent `URL` to ask when the journal file is locked by a running agent")
	if filters {
		for _, f := range []struct{ name, help string }{
			{"target", "only this target (cgroup path, or node)"}, {"rule", "only this rule"}, {"kind", "only this kind (remediation, shadow, refusal, oom_miss, recovery)"},
			{"outcome", "only this outcome (oom_avoided, recovered, no_effect, oom_killed, ...)"}, {"since", "only records since a duration ago (1h) or an RFC 3339 time"},
			{"limit", "at most this many records (-1: all)"},
		} {
			s.filter[f.name] = s.fs.String(f.name, "", f.help)
		}
	}
	return s
}

// parse accepts flags before and after positional arguments.
func (s *journalSource) parse(args []string) (pos []string, ok bool, code int) {
	for {
		if ok, code := parseFlags(s.fs, args); !ok {
			return nil, false, code
		}
		rest := s.fs.Args()
		if len(rest) == 0 {
			return pos, true, 0
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func (s *journalSource) get(key string) string {
	if v, ok := s.filter[key]; ok {
		return *v
	}
	return ""
}

func (s *journalSource) query() url.Values {
	q := url.Values{}
	for k, v := range s.filter {
		if *v != "" {
			q.Set(k, *v)
		}
	}
	return q
}

// open returns the journal, or nil when the agent holds it (then use fetch).
func (s *journalSource) open() (*journal.Journal, error) {
	if _, err := os.Stat(*s.db); err != nil {
		return nil, fmt.Errorf("journal %s: %w", *s.db, err)
	}
	j, err := journal.OpenReadOnly(*s.db)
	if errors.Is(err, journal.ErrLocked) {
		return nil, nil // a running agent holds it: ask its API
	}
	return j, err
}

func (s *journalSource) fetch(ctx context.Context, path string, q url.Values) (io.ReadCloser, error) {
	u := strings.TrimSuffix(*s.api, "/") + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("journal %s is locked by a running agent and its API is unreachable: %w", *s.db, err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound {
			return nil, fmt.Errorf("%s: %w", strings.TrimSpace(string(b)), journal.ErrNotFound)
		}
		return nil, fmt.Errorf("%s: %s: %s", u, resp.Status, strings.TrimSpace(string(b)))
	}
	return resp.Body, nil
}

func (s *journalSource) list(ctx context.Context) ([]journal.Record, error) {
	j, err := s.open()
	if err != nil {
		return nil, err
	}
	if j != nil {
		defer j.Close()
		f, err := journal.ParseFilter(s.get, time.Now())
		if err != nil {
			return nil, err
		}
		return j.List(f)
	}
	body, err := s.fetch(ctx, "/api/v1/remediations", s.query())
	if err != nil {
		return nil, err
	}
	defer body.Close()
	var out struct {
		Remediations []journal.Record `json:"remediations"`
	}
	return out.Remediations, json.NewDecoder(body).Decode(&out)
}

func (s *journalSource) record(ctx context.Context, id string) (*journal.Record, error) {
	j, err := s.open()
	if err != nil {
		return nil, err
	}
	if j != nil {
		defer j.Close()
		return j.Get(id)
	}
	body, err := s.fetch(ctx, "/api/v1/remediations/"+url.PathEscape(id), nil)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	var r journal.Record
	return &r, json.NewDecoder(body).Decode(&r)
}

func (s *journalSource) export(ctx context.Context, w io.Writer) error {
	j, err := s.open()
	if err != nil {
		return err
	}
	if j != nil {
		defer j.Close()
		f, err := journal.ParseFilter(s.get, time.Now())
		if err != nil {
			return err
		}
		if s.get("limit") == "" {
			f.Limit = -1
		}
		return j.Export(w, f)
	}
	q := s.query()
	q.Set("format", "jsonl")
	if q.Get("limit") == "" {
		q.Set("limit", "-1")
	}
	body, err := s.fetch(ctx, "/api/v1/remediations", q)
	if err != nil {
		return err
	}
	defer body.Close()
	_, err = io.Copy(w, body)
	return err
}

func journalCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		w := stderr
		if len(args) > 0 {
			w = stdout
		}
		fmt.Fprintln(w, "Usage: vigil journal "+journalUsage)
		return map[bool]int{true: 2, false: 0}[len(args) == 0]
	}
	sub := args[0]
	s := newJournalSource("journal "+sub, journalUsage, stderr, sub == "list" || sub == "export")
	pos, ok, code := s.parse(args[1:])
	if !ok {
		return code
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "vigil journal "+sub+":", err)
		return 1
	}
	switch sub {
	case "list":
		recs, err := s.list(ctx)
		if err != nil {
			return fail(err)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tTIME\tKIND\tRULE\tTARGET\tACTIONS\tOUTCOME")
		for _, r := range recs {
			var acts []string
			for _, st := range r.Steps {
				acts = append(acts, st.Action+"="+st.Result)
			}
			if r.Reason != "" {
				acts = append(acts, "refused:"+r.Reason)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Time.Local().Format("2006-01-02 15:04:05"), r.Kind,
				dash(r.Rule), r.Target.Key(), dash(strings.Join(acts, ",")), r.Outcome)
		}
		tw.Flush()
		return 0
	case "show":
		if len(pos) != 1 {
			fmt.Fprintln(stderr, "Usage: vigil journal show ID [--db FILE]")
			return 2
		}
		r, err := s.record(ctx, pos[0])
		if err != nil {
			return fail(err)
		}
		b, _ := json.MarshalIndent(r, "", "  ")
		fmt.Fprintln(stdout, string(b))
		return 0
	case "export":
		if err := s.export(ctx, stdout); err != nil {
			return fail(err)
		}
		return 0
	}
	fmt.Fprintf(stderr, "vigil journal: unknown subcommand %q\nUsage: vigil journal %s\n", sub, journalUsage)
	return 2
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func rcaCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	s := newJournalSource("rca", "ID [--db FILE] [--api URL] [--html FILE]", stderr, false)
	htmlFile := s.fs.String("html", "", "also write a self-contained HTML incident report (memory timeline with the ladder steps, evidence, outcome) to `file`")
	pos, ok, code := s.parse(args)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		s.fs.Usage()
		return 2
	}
	r, err := s.record(ctx, pos[0])
	if err != nil {
		fmt.Fprintln(stderr, "vigil rca:", err)
		return 1
	}
	if err := r.WriteTimeline(stdout); err != nil {
		fmt.Fprintln(stderr, "vigil rca:", err)
		return 1
	}
	if *htmlFile != "" {
		if err := writeHTMLReport(r, *htmlFile); err != nil {
			fmt.Fprintln(stderr, "vigil rca:", err)
			return 1
		}
		fmt.Fprintln(stdout, "HTML report written to", *htmlFile)
	}
	return 0
}

// writeHTMLReport writes r's HTML report to file (atomically).
func writeHTMLReport(r *journal.Record, file string) error {
	tmp := file + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("html report: %w", err)
	}
	if err := r.WriteHTML(f); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("html report %s: %w", file, err)
	}
	if err := os.Rename(tmp, file); err != nil {
		return fmt.Errorf("html report: %w", err)
	}
	return nil
}

package config

import (
	"errors"
	"net"
	"regexp"
	"strings"
	"time"
)

// PodLogs configures container log signals: vigil follows the CRI log
// files of the pods on this node (<host_root>/var/log/pods), counts the
// messages matching each pattern per container, and hands the counters to
// rules as log_matches("<name>") and log.matches_total.
type PodLogs struct {
	// Enabled turns log following on.
	Enabled bool `yaml:"enabled" json:"enabled"`
	// Root is the pod log directory ("": <host_root>/var/log/pods).
	Root string `yaml:"root" json:"root"`
	// StateFile keeps read offsets and counters across restarts (""
	// podlogs.json next to the journal).
	StateFile string `yaml:"state_file" json:"state_file"`
	// Patterns are counted per container; rules name them by Name.
	Patterns []LogPattern `yaml:"patterns" json:"patterns"`
	// PollInterval is how often the files are read.
	PollInterval time.Duration `yaml:"poll_interval" json:"poll_interval"`
	// StartAtEnd skips what existing files already hold at the first start
	// (a busy node); files appearing later are read from their start.
	StartAtEnd bool `yaml:"start_at_end" json:"start_at_end"`
	// ForwardMatches sends each matching message to the log forwarder
	// (when one is configured) tagged <prefix>.log.
	ForwardMatches bool `yaml:"forward_matches" json:"forward_matches"`
	// MaxSeries bounds vigil_podlog_matches_total series; the rest are
	// summed under container="_other".
	MaxSeries int `yaml:"max_series" json:"max_series"`
}

// LogPattern is a named regular expression (RE2 syntax).
type LogPattern struct {
	Name   string `yaml:"name" json:"name"`
	Regexp string `yaml:"regexp" json:"regexp"`
}

// Validate checks the podlogs section.
func (p *PodLogs) Validate() error {
	var errs []error
	seen := map[string]bool{}
	for i, pt := range p.Patterns {
		switch {
		case strings.TrimSpace(pt.Name) == "":
			errs = append(errs, fieldErr("patterns", "pattern %d: name is required", i))
		case seen[pt.Name]:
			errs = append(errs, fieldErr("patterns", "pattern %q: names must be unique", pt.Name))
		}
		seen[pt.Name] = true
		if _, err := regexp.Compile(pt.Regexp); err != nil || pt.Regexp == "" {
			errs = append(errs, fieldErr("patterns", "pattern %q: bad regexp %q: %v", pt.Name, pt.Regexp, err))
		}
	}
	if len(p.Patterns) > 32 {
		errs = append(errs, fieldErr("patterns", "at most 32 patterns, got %d", len(p.Patterns)))
	}
	if p.PollInterval < 100*time.Millisecond || p.PollInterval > time.Minute {
		errs = append(errs, fieldErr("poll_interval", "must be between 100ms and 1m, got %v", p.PollInterval))
	}
	if p.MaxSeries < 1 {
		errs = append(errs, fieldErr("max_series", "must be at least 1, got %d", p.MaxSeries))
	}
	if p.Root != "" && !strings.HasPrefix(p.Root, "/") {
		errs = append(errs, fieldErr("root", "must be an absolute path, got %q", p.Root))
	}
	return errors.Join(errs...)
}

// OTLP configures the OTLP/HTTP span receiver: applications on the node
// send traces to Listen; vigil derives per-service request rate, error
// ratio and p99 latency (rules: service.*) for the cgroup each service
// runs in, and forwards the spans to ForwardURL.
type OTLP struct {
	// Enabled turns the receiver on.
	Enabled bool `yaml:"enabled" json:"enabled"`
	// Listen is the receiver's address (POST /v1/traces).
	Listen string `yaml:"listen" json:"listen"`
	// ForwardURL receives every accepted request unchanged (OTLP/HTTP,
	// e.g. http://collector:4318); "" does not forward.
	ForwardURL string `yaml:"forward_url" json:"forward_url"`
	// Window is the RED sliding window.
	Window time.Duration `yaml:"window" json:"window"`
	// MaxServices bounds the services tracked (and vigil_service_* series).
	MaxServices int `yaml:"max_services" json:"max_services"`
}

// Validate checks the otlp section.
func (o *OTLP) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(o.Listen); err != nil {
		errs = append(errs, fieldErr("listen", "want host:port: %v", err))
	}
	if o.ForwardURL != "" && !strings.HasPrefix(o.ForwardURL, "http://") && !strings.HasPrefix(o.ForwardURL, "https://") {
		errs = append(errs, fieldErr("forward_url", "want http(s)://host:port[/path], got %q", o.ForwardURL))
	}
	if o.Window < 10*time.Second || o.Window > time.Hour {
		errs = append(errs, fieldErr("window", "must be between 10s and 1h, got %v", o.Window))
	}
	if o.MaxServices < 1 {
		errs = append(errs, fieldErr("max_services", "must be at least 1, got %d", o.MaxServices))
	}
	return errors.Join(errs...)
}

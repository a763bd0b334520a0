// Package config owns vigil's agent configuration: the YAML schema, its
// defaults (an embedded default.yaml that observes everything and acts on
// nothing), strict decoding with file:line:column errors, and validation.
//
// Every section validates itself; Load decodes and validates before anything
// starts, so a reload that fails keeps the last good configuration running.
package config

import (
	_ "embed"
	"errors"
	"fmt"
	"net"
	"os"
	"path"
	"strings"
	"time"
)

// DefaultListen is the default HTTP address: localhost only, port 9847.
const DefaultListen = "127.0.0.1:9847"

//go:embed default.yaml
var defaultYAML []byte

// DefaultYAML returns the embedded default configuration file.
func DefaultYAML() []byte { return append([]byte(nil), defaultYAML...) }

// Config is the whole agent configuration.
type Config struct {
	// Listen is the HTTP address for /metrics, /healthz, /readyz and /api.
	Listen string `yaml:"listen" json:"listen"`
	// HostRoot is where the host's / is visible (/host in a DaemonSet).
	HostRoot string `yaml:"host_root" json:"host_root"`
	// Tick is the collection interval.
	Tick time.Duration `yaml:"tick" json:"tick"`
	// DiscoveryInterval is how often new and removed cgroups are looked for.
	DiscoveryInterval time.Duration `yaml:"discovery_interval" json:"discovery_interval"`
	// GrowthWindow is the window of the working-set growth regression.
	GrowthWindow time.Duration `yaml:"growth_window" json:"growth_window"`
	// MaxCgroups bounds how many cgroups are tracked (self-protection).
	MaxCgroups int `yaml:"max_cgroups" json:"max_cgroups"`
	// StatMaxAge is the longest a cgroup's memory.stat goes unread (0: read
	// at every tick); see cgroupfs.Options.StatMaxAge.
	StatMaxAge time.Duration `yaml:"stat_max_age" json:"stat_max_age"`
	// StatNearLimitRatio: cgroups whose usage is at or above this fraction
	// of their limit have memory.stat read at every tick.
	StatNearLimitRatio float64 `yaml:"stat_near_limit_ratio" json:"stat_near_limit_ratio"`

	Log         Log         `yaml:"log" json:"log"`
	Events      Events      `yaml:"events" json:"events"`
	Rules       Rules       `yaml:"rules" json:"rules"`
	Remediation Remediation `yaml:"remediation" json:"remediation"`
	API         API         `yaml:"api" json:"api"`
	Self        Self        `yaml:"self" json:"self"`
	Kubernetes  Kubernetes  `yaml:"kubernetes" json:"kubernetes"`
	Webhooks    Webhooks    `yaml:"webhooks" json:"webhooks"`
	PodLogs     PodLogs     `yaml:"podlogs" json:"podlogs"`
	OTLP        OTLP        `yaml:"otlp" json:"otlp"`
	Forward     Forward     `yaml:"forward" json:"forward"`
	Tracing     Tracing     `yaml:"tracing" json:"tracing"`
	Kmsg        Kmsg        `yaml:"kmsg" json:"kmsg"`
}

// Forward configures forwarding of kernel OOM events and remediation
// records to a Fluentd / Fluent Bit forward endpoint. Off while Address is
// empty.
type Forward struct {
	// Address is host:port or unix:///path of a Forward input.
	Address string `yaml:"address" json:"address"`
	// TagPrefix prefixes the Fluent tags (<prefix>.oom, <prefix>.remediation).
	TagPrefix string `yaml:"tag_prefix" json:"tag_prefix"`
	// BufferRecords bounds the records waiting to be sent; past it records
	// are dropped and counted (vigil_forward_dropped_total).
	BufferRecords int `yaml:"buffer_records" json:"buffer_records"`
	// Timeout bounds dial, write and acknowledgement read.
	Timeout time.Duration `yaml:"timeout" json:"timeout"`
	// NoAck turns off Forward acknowledgements (records may then vanish in
	// a dead connection).
	NoAck bool `yaml:"no_ack" json:"no_ack"`
}

// Tracing configures vigil's own OpenTelemetry traces: one trace per
// remediation, ladder steps as child spans. Off while Endpoint is empty.
type Tracing struct {
	// Endpoint is the OTLP endpoint: a URL for http (http://collector:4318)
	// or host:port for grpc.
	Endpoint string `yaml:"endpoint" json:"endpoint"`
	// Protocol is http or grpc.
	Protocol string `yaml:"protocol" json:"protocol"`
	// Insecure turns TLS off for grpc.
	Insecure bool              `yaml:"insecure" json:"insecure"`
	Headers  map[string]string `yaml:"headers" json:"headers"`
	// SampleRatio is the share of evaluation ticks traced (0..1); every
	// remediation is traced.
	SampleRatio float64 `yaml:"sample_ratio" json:"sample_ratio"`
	ServiceName string  `yaml:"service_name" json:"service_name"`
}

// Kmsg configures reading kernel OOM-killer reports from the kernel log.
type Kmsg struct {
	// Enabled reads <host_root>/dev/kmsg; when it is unreadable vigil runs
	// on without it, degraded (vigil_degraded{reason="kmsg"}).
	Enabled bool `yaml:"enabled" json:"enabled"`
	// CursorFile persists the position in the kernel log ("" = kmsg.cursor
	// next to the journal), so a restart neither repeats nor loses reports.
	CursorFile string `yaml:"cursor_file" json:"cursor_file"`
}

// Validate checks the forward section.
func (f *Forward) Validate() error {
	var errs []error
	if f.BufferRecords < 1 {
		errs = append(errs, fieldErr("buffer_records", "must be at least 1, got %d", f.BufferRecords))
	}
	if f.Timeout <= 0 {
		errs = append(errs, fieldErr("timeout", "must be positive, got %v", f.Timeout))
	}
	return errors.Join(errs...)
}

// Validate checks the tracing section.
func (t *Tracing) Validate() error {
	var errs []error
	switch t.Protocol {
	case "http", "grpc":
	default:
		errs = append(errs, fieldErr("protocol", "want http or grpc, got %q", t.Protocol))
	}
	if t.SampleRatio < 0 || t.SampleRatio > 1 {
		errs = append(errs, fieldErr("sample_ratio", "want 0..1, got %v", t.SampleRatio))
	}
	return errors.Join(errs...)
}

// Webhooks configures alert webhooks.
type Webhooks struct {
	Inbound  InboundAlerts    `yaml:"inbound" json:"inbound"`
	Outbound OutboundWebhooks `yaml:"outbound" json:"outbound"`
}

// OutboundWebhooks configures the events vigil POSTs (remediation.started,
// remediation.step, remediation.outcome, oom.missed), signed, through a
// persisted outbox. Off while Endpoints is empty.
type OutboundWebhooks struct {
	// OutboxPath is the outbox database ("" = outbox.db next to the
	// journal).
	OutboxPath string `yaml:"outbox_path" json:"outbox_path"`
	// MinBackoff and MaxBackoff bound the retry backoff of one event.
	MinBackoff time.Duration      `yaml:"min_backoff" json:"min_backoff"`
	MaxBackoff time.Duration      `yaml:"max_backoff" json:"max_backoff"`
	Endpoints  []OutboundEndpoint `yaml:"endpoints" json:"endpoints"`
}

// OutboundEndpoint is one receiver of outbound events.
type OutboundEndpoint struct {
	// Name keys the endpoint's queue in the outbox: keep it stable.
	Name string `yaml:"name" json:"name"`
	URL  string `yaml:"url" json:"url"`
	// SecretFile holds the HMAC-SHA256 signing secret (16+ bytes).
	SecretFile string `yaml:"secret_file" json:"secret_file"`
	// Types limits the event types sent (empty: all).
	Types []string `yaml:"types" json:"types"`
	// Format is event (vigil's JSON) or alertmanager (URL is an
	// Alertmanager's /api/v2/alerts).
	Format string `yaml:"format" json:"format"`
	// BearerTokenFile, when set, holds a token sent as Authorization: Bearer.
	BearerTokenFile string `yaml:"bearer_token_file" json:"bearer_token_file"`
}

// Validate checks the outbound webhook settings.
func (w *OutboundWebhooks) Validate() error {
	var errs []error
	if w.MinBackoff <= 0 || w.MaxBackoff < w.MinBackoff {
		errs = append(errs, fieldErr("min_backoff", "want 0 < min_backoff <= max_backoff, got %v and %v", w.MinBackoff, w.MaxBackoff))
	}
	names := map[string]bool{}
	for i, e := range w.Endpoints {
		switch {
		case e.Name == "":
			errs = append(errs, fieldErr(fmt.Sprintf("endpoints[%d].name", i), "must be set"))
		case names[e.Name]:
			errs = append(errs, fieldErr(fmt.Sprintf("endpoints[%d].name", i), "duplicate %q", e.Name))
		}
		names[e.Name] = true
		if !strings.HasPrefix(e.URL, "http://") && !strings.HasPrefix(e.URL, "https://") {
			errs = append(errs, fieldErr(fmt.Sprintf("endpoints[%d].url", i), "want an http(s) URL, got %q", e.URL))
		}
		switch e.Format {
		case "", "event":
			if e.SecretFile == "" {
				errs = append(errs, fieldErr(fmt.Sprintf("endpoints[%d].secret_file", i), "must be set: events are signed"))
			}
		case "alertmanager":
		default:
			errs = append(errs, fieldErr(fmt.Sprintf("endpoints[%d].format", i), "want event or alertmanager, got %q", e.Format))
		}
	}
	return errors.Join(errs...)
}

// InboundAlerts configures POST /api/v1/alerts, where Alertmanager delivers
// alerts that rules can fire from. With neither secret file set it refuses
// every delivery.
type InboundAlerts struct {
	// TokenFile holds the bearer token Alertmanager sends (16+ characters).
	TokenFile string `yaml:"token_file" json:"token_file"`
	// HMACSecretFile holds a secret (16+ bytes) for signed deliveries
	// (X-Vigil-Timestamp and X-Vigil-Signature headers).
	HMACSecretFile string `yaml:"hmac_secret_file" json:"hmac_secret_file"`
	// ResolvedRetention keeps a resolved alert visible to rules this long.
	ResolvedRetention time.Duration `yaml:"resolved_retention" json:"resolved_retention"`
	// FiringTTL drops a firing alert neither re-delivered nor resolved for
	// this long.
	FiringTTL time.Duration `yaml:"firing_ttl" json:"firing_ttl"`
}

// Validate checks the inbound alert settings.
func (w *InboundAlerts) Validate() error {
	var errs []error
	if w.ResolvedRetention <= 0 {
		errs = append(errs, fieldErr("resolved_retention", "must be positive, got %v", w.ResolvedRetention))
	}
	if w.FiringTTL < time.Minute {
		errs = append(errs, fieldErr("firing_ttl", "must be at least 1m, got %v", w.FiringTTL))
	}
	return errors.Join(errs...)
}

// Kubernetes configures the Kubernetes integration: pod names, namespaces
// and labels on identities, and the Kubernetes actions (restart-container,
// evict, scale-out, cordon).
type Kubernetes struct {
	// Enabled turns the pod informer and the Kubernetes actions on.
	Enabled bool `yaml:"enabled" json:"enabled"`
	// NodeName is this node's name; the NODE_NAME environment variable
	// overrides it (the DaemonSet sets it from the downward API's
	// spec.nodeName). Enabled needs one of the two.
	NodeName string `yaml:"node_name" json:"node_name"`
	// Kubeconfig is a kubeconfig file; empty means in-cluster.
	Kubeconfig string `yaml:"kubeconfig" json:"kubeconfig"`
	// CRIEndpoint is the container runtime socket for restart-container;
	// empty means unix://<host_root>/run/containerd/containerd.sock.
	CRIEndpoint string `yaml:"cri_endpoint" json:"cri_endpoint"`
	// LabelKeys and AnnotationKeys are copied onto identities besides the
	// vigil.dev/ ones (empty label keys: a default set).
	LabelKeys      []string `yaml:"label_keys" json:"label_keys"`
	AnnotationKeys []string `yaml:"annotation_keys" json:"annotation_keys"`
	// DeletePodFallback deletes the pod when stopping a container through
	// the CRI fails.
	DeletePodFallback bool `yaml:"delete_pod_fallback" json:"delete_pod_fallback"`
	// MaxReplicas caps scale-out cluster-wide (0: 10).
	MaxReplicas int32 `yaml:"max_replicas" json:"max_replicas"`
	// ScaleCooldown is the minimum time between scale-outs of a workload.
	ScaleCooldown time.Duration `yaml:"scale_cooldown" json:"scale_cooldown"`
	// Cordon registers the cordon action (needs its own RBAC); rules can
	// then name it on node-level findings. Off by default.
	Cordon bool `yaml:"cordon" json:"cordon"`
}

// Validate checks the kubernetes section.
func (k *Kubernetes) Validate() error {
	var errs []error
	if k.MaxReplicas < 0 {
		errs = append(errs, fieldErr("max_replicas", "must not be negative, got %d", k.MaxReplicas))
	}
	if k.ScaleCooldown < 0 {
		errs = append(errs, fieldErr("scale_cooldown", "must not be negative, got %v", k.ScaleCooldown))
	}
	if k.CRIEndpoint != "" && !strings.HasPrefix(k.CRIEndpoint, "unix://") {
		errs = append(errs, fieldErr("cri_endpoint", "want unix:///path/to.sock, got %q", k.CRIEndpoint))
	}
	return errors.Join(errs...)
}

// Log configures the agent's own log output (stderr).
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level" json:"level"`
	// Format is text or json.
	Format string `yaml:"format" json:"format"`
}

// Events configures event-driven detection between ticks.
type Events struct {
	// Enabled turns all kernel notifications on or off.
	Enabled bool `yaml:"enabled" json:"enabled"`
	// Thresholds registers cgroup v1 usage thresholds at ThresholdRatio of
	// each limited cgroup's effective limit.
	Thresholds     bool    `yaml:"thresholds" json:"thresholds"`
	ThresholdRatio float64 `yaml:"threshold_ratio" json:"threshold_ratio"`
	// OOM registers v1 oom_control notifications and v2 memory.events
	// change notifications for each limited cgroup.
	OOM bool `yaml:"oom" json:"oom"`
	// MaxWatchedCgroups bounds the cgroups with kernel notifications (each
	// costs file descriptors); the rest are seen at the next tick.
	MaxWatchedCgroups int `yaml:"max_watched_cgroups" json:"max_watched_cgroups"`
	// MinInterval coalesces events: at most one off-cycle snapshot of a
	// cgroup (or node-wide) per MinInterval.
	MinInterval time.Duration `yaml:"min_interval" json:"min_interval"`
	PSI         PSITrigger    `yaml:"psi" json:"psi"`
}

// PSITrigger is a node-wide memory PSI trigger on the "some" line of
// /proc/pressure/memory.
type PSITrigger struct {
	Enabled bool `yaml:"enabled" json:"enabled"`
	// Stall is the stall time within Window that fires the trigger.
	Stall time.Duration `yaml:"stall" json:"stall"`
	// Window must be a multiple of 2s without CAP_SYS_RESOURCE (500ms..10s).
	Window time.Duration `yaml:"window" json:"window"`
}

// Rules configures the rule engine.
type Rules struct {
	// Dirs are directories of rule files, loaded in order.
	Dirs []string `yaml:"dirs" json:"dirs"`
	// Builtin loads the rules shipped with vigil.
	Builtin bool `yaml:"builtin" json:"builtin"`
	// Shadow forces every rule into shadow mode: findings are recorded and
	// no action runs.
	Shadow bool `yaml:"shadow" json:"shadow"`
	// TargetGrace is how long the rule state and history of a vanished
	// cgroup a rule selects are kept, so that a unit or pod whose cgroup is
	// recreated (a crash loop) stays the same target (0: 2m). Read at start.
	TargetGrace time.Duration `yaml:"target_grace" json:"target_grace"`
}

// Remediation configures what vigil may do and how fast.
type Remediation struct {
	// DryRun records every decision and performs no action.
	DryRun bool `yaml:"dry_run" json:"dry_run"`
	// OptIn lists the targets that may be acted on: cgroup path globs
	// (path.Match syntax, "/a/**" is /a and everything below it),
	// unit:<glob>, namespace:<glob> or label:<key>=<value>. Empty: nothing
	// may be acted on.
	OptIn []string `yaml:"opt_in" json:"opt_in"`
	// Protected lists targets (same patterns) never acted on, on top of the
	// built-in set (the agent's own cgroup, core system units, kubelet,
	// container runtime, kube-system).
	Protected []string `yaml:"protected" json:"protected"`
	// PerTarget and PerNode are token buckets on actions.
	PerTarget RateLimit `yaml:"per_target" json:"per_target"`
	PerNode   RateLimit `yaml:"per_node" json:"per_node"`
	// MaxConcurrent bounds remediations in flight on the node.
	MaxConcurrent int `yaml:"max_concurrent" json:"max_concurrent"`
	// MaxTargetsPerHour is the node-wide blast-radius limit: distinct
	// targets acted on in any hour.
	MaxTargetsPerHour int     `yaml:"max_targets_per_hour" json:"max_targets_per_hour"`
	Journal           Journal `yaml:"journal" json:"journal"`
}

// RateLimit is a token bucket: Burst actions at once, one more every Every.
type RateLimit struct {
	Every time.Duration `yaml:"every" json:"every"`
	Burst int           `yaml:"burst" json:"burst"`
}

// Journal configures the durable remediation journal.
type Journal struct {
	// Path is the journal database file.
	Path string `yaml:"path" json:"path"`
	// Retention drops records older than this.
	Retention time.Duration `yaml:"retention" json:"retention"`
	// MaxBytes bounds the database size; the oldest records go first.
	MaxBytes int64 `yaml:"max_bytes" json:"max_bytes"`
}

// API configures the HTTP API.
type API struct {
	// TokenFile holds the bearer token that mutating endpoints require.
	// Empty: mutating endpoints are refused (403).
	TokenFile string `yaml:"token_file" json:"token_file"`
	// MaxBodyBytes bounds request bodies.
	MaxBodyBytes int64 `yaml:"max_body_bytes" json:"max_body_bytes"`
}

// Self configures how the agent protects itself.
type Self struct {
	// OOMScoreAdj is written to /proc/self/oom_score_adj at start (0 = leave
	// as is). Lowering it needs CAP_SYS_RESOURCE; without it vigil runs
	// degraded and says so.
	OOMScoreAdj int `yaml:"oom_score_adj" json:"oom_score_adj"`
	// MemoryLimitBytes is the Go runtime soft memory limit (default 64 MiB,
	// 0 = none). GOMEMLIMIT, when set in the environment, takes precedence.
	MemoryLimitBytes int64 `yaml:"memory_limit_bytes" json:"memory_limit_bytes"`
	// Cgroup is a dedicated cgroup (path from the cgroup root, e.g.
	// /vigil.slice/agent) that vigil creates if missing and moves itself
	// into at start; "" = stay where started. vigil writes only to a cgroup
	// it created or one holding no other process.
	Cgroup string `yaml:"cgroup" json:"cgroup"`
	// MemoryMinBytes and MemoryLowBytes are written to Cgroup's memory.min
	// and memory.low on cgroup v2 (0 = leave as is).
	MemoryMinBytes int64 `yaml:"memory_min_bytes" json:"memory_min_bytes"`
	MemoryLowBytes int64 `yaml:"memory_low_bytes" json:"memory_low_bytes"`
}

// FieldError is a validation error of one field, named by its YAML path
// (e.g. "events.psi.window").
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(field string, format string, args ...any) error {
	return &FieldError{Field: field, Err: fmt.Errorf(format, args...)}
}

// prefix re-roots the field errors of a section under name.
func prefix(name string, err error) error {
	if err == nil {
		return nil
	}
	var out []error
	for _, e := range unjoin(err) {
		var fe *FieldError
		if errors.As(e, &fe) {
			out = append(out, &FieldError{Field: name + "." + fe.Field, Err: fe.Err})
		} else {
			out = append(out, &FieldError{Field: name, Err: e})
		}
	}
	return errors.Join(out...)
}

// unjoin flattens (nested) joined errors into their leaves.
func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, unjoin(e)...)
		}
		return out
	}
	return []error{err}
}

// Validate checks the whole configuration and returns every problem found
// (joined), each a *FieldError.
func (c *Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fieldErr("listen", "want host:port: %v", err))
	}
	if c.HostRoot == "" || !strings.HasPrefix(c.HostRoot, "/") {
		errs = append(errs, fieldErr("host_root", "must be an absolute path, got %q", c.HostRoot))
	}
	if c.Tick < 10*time.Millisecond || c.Tick > time.Minute {
		errs = append(errs, fieldErr("tick", "must be between 10ms and 1m, got %v", c.Tick))
	}
	if c.DiscoveryInterval < c.Tick {
		errs = append(errs, fieldErr("discovery_interval", "must be at least tick (%v), got %v", c.Tick, c.DiscoveryInterval))
	}
	if c.GrowthWindow < 2*c.Tick {
		errs = append(errs, fieldErr("growth_window", "must cover at least two ticks (%v), got %v", 2*c.Tick, c.GrowthWindow))
	}
	if c.MaxCgroups < 1 {
		errs = append(errs, fieldErr("max_cgroups", "must be at least 1, got %d", c.MaxCgroups))
	}
	if c.StatMaxAge < 0 || c.StatMaxAge > time.Minute {
		errs = append(errs, fieldErr("stat_max_age", "must be between 0 (every tick) and 1m, got %v", c.StatMaxAge))
	}
	if !(c.StatNearLimitRatio > 0 && c.StatNearLimitRatio <= 1) {
		errs = append(errs, fieldErr("stat_near_limit_ratio", "must be in (0, 1], got %v", c.StatNearLimitRatio))
	}
	errs = append(errs,
		prefix("log", c.Log.Validate()),
		prefix("events", c.Events.Validate()),
		prefix("rules", c.Rules.Validate()),
		prefix("remediation", c.Remediation.Validate()),
		prefix("api", c.API.Validate()),
		prefix("self", c.Self.Validate()),
		prefix("kubernetes", c.Kubernetes.Validate()),
		prefix("webhooks.inbound", c.Webhooks.Inbound.Validate()),
		prefix("podlogs", c.PodLogs.Validate()),
		prefix("otlp", c.OTLP.Validate()),
		prefix("webhooks.outbound", c.Webhooks.Outbound.Validate()),
		prefix("forward", c.Forward.Validate()),
		prefix("tracing", c.Tracing.Validate()),
	)
	return errors.Join(unjoin(errors.Join(errs...))...)
}

// Validate checks the log section.
func (l *Log) Validate() error {
	var errs []error
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fieldErr("level", "want debug, info, warn or error, got %q", l.Level))
	}
	switch l.Format {
	case "text", "json":
	default:
		errs = append(errs, fieldErr("format", "want text or json, got %q", l.Format))
	}
	return errors.Join(errs...)
}

// Validate checks the events section.
func (e *Events) Validate() error {
	var errs []error
	if e.ThresholdRatio <= 0 || e.ThresholdRatio > 1 {
		errs = append(errs, fieldErr("threshold_ratio", "must be in (0, 1], got %v", e.ThresholdRatio))
	}
	if e.MaxWatchedCgroups < 0 {
		errs = append(errs, fieldErr("max_watched_cgroups", "must not be negative, got %d", e.MaxWatchedCgroups))
	}
	if e.MinInterval < 0 || e.MinInterval > 10*time.Second {
		errs = append(errs, fieldErr("min_interval", "must be between 0 and 10s, got %v", e.MinInterval))
	}
	errs = append(errs, prefix("psi", e.PSI.Validate()))
	return errors.Join(errs...)
}

// Validate checks the PSI trigger. The kernel accepts windows of 500ms to
// 10s; unprivileged (no CAP_SYS_RESOURCE) only multiples of 2s.
func (p *PSITrigger) Validate() error {
	var errs []error
	if p.Window < 500*time.Millisecond || p.Window > 10*time.Second {
		errs = append(errs, fieldErr("window", "must be between 500ms and 10s, got %v", p.Window))
	}
	if p.Stall <= 0 || p.Stall > p.Window {
		errs = append(errs, fieldErr("stall", "must be in (0, window], got %v", p.Stall))
	}
	if p.Window%time.Microsecond != 0 || p.Stall%time.Microsecond != 0 {
		errs = append(errs, fieldErr("window", "stall and window must be whole microseconds"))
	}
	return errors.Join(errs...)
}

// Validate checks the rules section.
func (r *Rules) Validate() error {
	var errs []error
	if r.TargetGrace < 0 {
		errs = append(errs, fieldErr("target_grace", "must not be negative, got %v", r.TargetGrace))
	}
	for i, d := range r.Dirs {
		if d == "" {
			errs = append(errs, fieldErr(fmt.Sprintf("dirs[%d]", i), "empty directory"))
		}
	}
	return errors.Join(errs...)
}

// Validate checks the remediation section.
func (r *Remediation) Validate() error {
	var errs []error
	for i, g := range r.OptIn {
		if err := ValidateGlob(g); err != nil {
			errs = append(errs, fieldErr(fmt.Sprintf("opt_in[%d]", i), "%v", err))
		}
	}
	for i, g := range r.Protected {
		if err := ValidateGlob(g); err != nil {
			errs = append(errs, fieldErr(fmt.Sprintf("protected[%d]", i), "%v", err))
		}
	}
	errs = append(errs, prefix("per_target", r.PerTarget.Validate()), prefix("per_node", r.PerNode.Validate()))
	if r.MaxConcurrent < 1 {
		errs = append(errs, fieldErr("max_concurrent", "must be at least 1, got %d", r.MaxConcurrent))
	}
	if r.MaxTargetsPerHour < 1 {
		errs = append(errs, fieldErr("max_targets_per_hour", "must be at least 1, got %d", r.MaxTargetsPerHour))
	}
	errs = append(errs, prefix("journal", r.Journal.Validate()))
	return errors.Join(errs...)
}

// ValidateGlob checks a target pattern as remediation matches it: a cgroup
// path glob (absolute, path.Match syntax in each element, "**" for any
// depth), or unit:<glob>, namespace:<glob> or label:<key>=<value>.
func ValidateGlob(g string) error {
	switch {
	case strings.HasPrefix(g, "unit:"), strings.HasPrefix(g, "namespace:"):
		_, glob, _ := strings.Cut(g, ":")
		if glob == "" {
			return fmt.Errorf("pattern %q: empty glob", g)
		}
		if _, err := path.Match(glob, ""); err != nil {
			return fmt.Errorf("pattern %q: %w", g, err)
		}
		return nil
	case strings.HasPrefix(g, "label:"):
		if k, _, ok := strings.Cut(g[len("label:"):], "="); !ok || k == "" {
			return fmt.Errorf("pattern %q: want label:<key>=<value>", g)
		}
		return nil
	}
	if !strings.HasPrefix(g, "/") {
		return fmt.Errorf("glob %q must start with / (or be unit:, namespace: or label:)", g)
	}
	for _, elem := range strings.Split(g, "/") {
		if elem == "**" {
			continue
		}
		if _, err := path.Match(elem, ""); err != nil {
			return fmt.Errorf("glob %q: %w", g, err)
		}
	}
	return nil
}

// Validate checks a token bucket.
func (r *RateLimit) Validate() error {
	var errs []error
	if r.Every <= 0 {
		errs = append(errs, fieldErr("every", "must be positive, got %v", r.Every))
	}
	if r.Burst < 1 {
		errs = append(errs, fieldErr("burst", "must be at least 1, got %d", r.Burst))
	}
	return errors.Join(errs...)
}

// Validate checks the journal section.
func (j *Journal) Validate() error {
	var errs []error
	if j.Path == "" {
		errs = append(errs, fieldErr("path", "must not be empty"))
	}
	if j.Retention < time.Hour {
		errs = append(errs, fieldErr("retention", "must be at least 1h, got %v", j.Retention))
	}
	if j.MaxBytes < 1<<20 {
		errs = append(errs, fieldErr("max_bytes", "must be at least 1 MiB, got %d", j.MaxBytes))
	}
	return errors.Join(errs...)
}

// Validate checks the API section.
func (a *API) Validate() error {
	var errs []error
	if a.MaxBodyBytes < 1024 || a.MaxBodyBytes > 64<<20 {
		errs = append(errs, fieldErr("max_body_bytes", "must be between 1 KiB and 64 MiB, got %d", a.MaxBodyBytes))
	}
	return errors.Join(errs...)
}

// Validate checks the self-protection section.
func (s *Self) Validate() error {
	var errs []error
	if s.OOMScoreAdj < -1000 || s.OOMScoreAdj > 1000 {
		errs = append(errs, fieldErr("oom_score_adj", "must be in [-1000, 1000], got %d", s.OOMScoreAdj))
	}
	if s.MemoryLimitBytes < 0 {
		errs = append(errs, fieldErr("memory_limit_bytes", "must not be negative, got %d", s.MemoryLimitBytes))
	}
	if s.Cgroup != "" && (!strings.HasPrefix(s.Cgroup, "/") || s.Cgroup == "/" || path.Clean(s.Cgroup) != s.Cgroup) {
		errs = append(errs, fieldErr("cgroup", "want a clean absolute cgroup path other than /, got %q", s.Cgroup))
	}
	if s.MemoryMinBytes < 0 || s.MemoryLowBytes < 0 {
		errs = append(errs, fieldErr("memory_min_bytes", "memory_min_bytes and memory_low_bytes must not be negative"))
	}
	if (s.MemoryMinBytes > 0 || s.MemoryLowBytes > 0) && s.Cgroup == "" {
		errs = append(errs, fieldErr("cgroup", "memory_min_bytes and memory_low_bytes need a dedicated cgroup"))
	}
	return errors.Join(errs...)
}

// ReadToken returns the API bearer token ("" when none is configured).
func (a *API) ReadToken() (string, error) {
	if a.TokenFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(a.TokenFile)
	if err != nil {
		return "", fmt.Errorf("api token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("api token: %s is empty", a.TokenFile)
	}
	return tok, nil
}

package telemetry

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Span names vigil emits.
const (
	SpanTick        = "vigil.tick"
	SpanRemediation = "vigil.remediation"
	SpanStep        = "vigil.remediation.step"
)

// TracingConfig configures vigil's own traces. The zero value is off.
type TracingConfig struct {
	// Endpoint is the OTLP endpoint: a URL for http
	// (http://collector:4318, traces posted to /v1/traces unless the URL
	// has a path) or host:port for grpc. Empty: tracing off.
	Endpoint string `yaml:"endpoint" json:"endpoint"`
	// Protocol is "http" (default) or "grpc".
	Protocol string `yaml:"protocol" json:"protocol"`
	// Insecure disables TLS for grpc (http follows the URL scheme).
	Insecure bool              `yaml:"insecure" json:"insecure"`
	Headers  map[string]string `yaml:"headers" json:"headers"`
	// TickSampleRatio is the share of ticks traced (default 0.01); every
	// remediation is traced.
	TickSampleRatio *float64 `yaml:"tick_sample_ratio" json:"tick_sample_ratio"`
	// ServiceName defaults to "vigil"; Node is added as host.name.
	ServiceName string `yaml:"service_name" json:"service_name"`
	Node        string `yaml:"-" json:"-"`
	Version     string `yaml:"-" json:"-"`
}

// Validate checks the configuration before anything starts.
func (c TracingConfig) Validate() error {
	switch c.Protocol {
	case "", "http", "grpc":
	default:
		return fmt.Errorf("telemetry: tracing protocol %q: want http or grpc", c.Protocol)
	}
	if r := c.TickSampleRatio; r != nil && (*r < 0 || *r > 1) {
		return fmt.Errorf("telemetry: tick_sample_ratio %v: want 0..1", *r)
	}
	return nil
}

// Tracing holds vigil's tracer provider: a real SDK provider exporting over
// OTLP when configured, a no-op one otherwise.
type Tracing struct {
	provider trace.TracerProvider
	sdk      *sdktrace.TracerProvider
	tracer   trace.Tracer
}

// NewTracing builds the provider. With an empty endpoint it returns a no-op
// Tracing whose spans cost nothing and whose trace ids are empty.
func NewTracing(ctx context.Context, cfg TracingConfig) (*Tracing, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Endpoint == "" {
		p := noop.NewTracerProvider()
		return &Tracing{provider: p, tracer: p.Tracer("vigil")}, nil
	}
	var (
		exp sdktrace.SpanExporter
		err error
	)
	switch cfg.Protocol {
	case "grpc":
		opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(cfg.Endpoint), otlptracegrpc.WithHeaders(cfg.Headers)}
		if cfg.Insecure {
			opts = append(opts, otlptracegrpc.WithInsecure())
		}
		exp, err = otlptracegrpc.New(ctx, opts...)
	default:
		opts := []otlptracehttp.Option{otlptracehttp.WithEndpointURL(tracesURL(cfg.Endpoint)), otlptracehttp.WithHeaders(cfg.Headers)}
		exp, err = otlptracehttp.New(ctx, opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("telemetry: OTLP %s exporter for %s: %w", cfg.Protocol, cfg.Endpoint, err)
	}
	ratio := 0.01
	if cfg.TickSampleRatio != nil {
		ratio = *cfg.TickSampleRatio
	}
	name := cfg.ServiceName
	if name == "" {
		name = "vigil"
	}
	attrs := []attribute.KeyValue{semconv.ServiceName(name)}
	if cfg.Node != "" {
		attrs = append(attrs, semconv.HostName(cfg.Node))
	}
	if cfg.Version != "" {
		attrs = append(attrs, semconv.ServiceVersion(cfg.Version))
	}
	sdk := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(resource.NewWithAttributes(semconv.SchemaURL, attrs...)),
		sdktrace.WithSampler(sdktrace.ParentBased(tickSampler{ratio: sdktrace.TraceIDRatioBased(ratio)})),
	)
	return &Tracing{provider: sdk, sdk: sdk, tracer: sdk.Tracer("github.com/vigil-agent/vigil")}, nil
}

// tracesURL adds the OTLP traces path to a bare collector URL.
func tracesURL(endpoint string) string {
	if !strings.Contains(endpoint, "://") {
		endpoint = "http://" + endpoint
	}
	scheme, rest, _ := strings.Cut(endpoint, "://")
	if _, path, ok := strings.Cut(rest, "/"); !ok || path == "" {
		return scheme + "://" + strings.TrimSuffix(rest, "/") + "/v1/traces"
	}
	return endpoint
}

// tickSampler samples root tick spans by ratio and everything else always.
type tickSampler struct{ ratio sdktrace.Sampler }

func (s tickSampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	if p.Name == SpanTick {
		return s.ratio.ShouldSample(p)
	}
	return sdktrace.AlwaysSample().ShouldSample(p)
}

func (s tickSampler) Description() string { return "vigil ticks by ratio, others always" }

// Provider is the tracer provider, e.g. for otel.SetTracerProvider.
func (t *Tracing) Provider() trace.TracerProvider { return t.provider }

// Enabled reports whether spans are exported.
func (t *Tracing) Enabled() bool { return t.sdk != nil }

// StartTick starts the (sampled) span of one evaluation tick.
func (t *Tracing) StartTick(ctx context.Context, seq uint64) (context.Context, trace.Span) {
	return t.tracer.Start(ctx, SpanTick, trace.WithAttributes(attribute.Int64("vigil.tick.seq", int64(seq))))
}

// Remediation describes the remediation a span is about.
type Remediation struct {
	ID     string
	Rule   string
	Target string // cgroup path or "node"
	// Workload identity when known.
	Namespace, Pod, Container, Unit string
	DryRun                          bool
}

// StartRemediation starts the root span of one remediation and returns the
// trace id to store in its journal record ("" when tracing is off).
func (t *Tracing) StartRemediation(ctx context.Context, r Remediation) (context.Context, trace.Span, string) {
	attrs := []attribute.KeyValue{
		attribute.String("vigil.remediation.id", r.ID),
		attribute.String("vigil.rule", r.Rule),
		attribute.String("vigil.target", r.Target),
		attribute.Bool("vigil.dry_run", r.DryRun),
	}
	for k, v := range map[string]string{"k8s.namespace.name": r.Namespace, "k8s.pod.name": r.Pod, "k8s.container.name": r.Container, "systemd.unit": r.Unit} {
		if v != "" {
			attrs = append(attrs, attribute.String(k, v))
		}
	}
	// A remediation is its own trace: a new root even inside a tick span.
	ctx, span := t.tracer.Start(ctx, SpanRemediation, trace.WithNewRoot(), trace.WithAttributes(attrs...))
	return ctx, span, TraceID(ctx)
}

// StartStep starts the child span of one ladder step.
func (t *Tracing) StartStep(ctx context.Context, index int, action string) (context.Context, trace.Span) {
	return t.tracer.Start(ctx, SpanStep, trace.WithAttributes(
		attribute.Int("vigil.step.index", index),
		attribute.String("vigil.action", action),
	))
}

// EndStep records a step's outcome ("applied", "verified", "timeout",
// "dry_run", "failed"...) and ends its span; err marks the span failed.
func EndStep(span trace.Span, outcome string, err error) {
	span.SetAttributes(attribute.String("vigil.outcome", outcome))
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// TraceID returns the hex trace id of the span in ctx, "" when there is no
// sampled span (tracing off).
func TraceID(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() || !sc.IsSampled() {
		return ""
	}
	return sc.TraceID().String()
}

// ForceFlush exports the spans ended so far.
func (t *Tracing) ForceFlush(ctx context.Context) error {
	if t.sdk == nil {
		return nil
	}
	return t.sdk.ForceFlush(ctx)
}

// Shutdown flushes and stops the exporter.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t.sdk == nil {
		return nil
	}
	if err := t.sdk.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("telemetry: tracing shutdown: %w", err)
	}
	return nil
}

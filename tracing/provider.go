package tracing

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.41.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Process says which herd process traces: the defaults of its resource.
type Process struct {
	// ServiceName is the default service.name ("herd-gateway", "herd-agent").
	ServiceName string
	// Version is service.version.
	Version string
	// Attributes are added to the resource below the configured ones (e.g. the agent's node id).
	Attributes []attribute.KeyValue
}

// Provider is a process's tracer provider: the SDK's with an OTLP exporter when tracing is on,
// OpenTelemetry's no-op one when it is off.
type Provider struct {
	settings Settings
	sdk      *sdktrace.TracerProvider
	noop     trace.TracerProvider
}

// Setup resolves c against the environment and builds the provider. With tracing off it returns
// a no-op provider and no error. The caller must Shutdown the provider to flush spans.
func Setup(ctx context.Context, c Config, p Process) (*Provider, error) {
	s, err := Resolve(c, os.Getenv)
	if err != nil {
		return nil, err
	}
	if !s.Enabled {
		return &Provider{settings: s, noop: noop.NewTracerProvider()}, nil
	}
	exp, err := newExporter(s, os.Getenv)
	if err != nil {
		return nil, err
	}
	res, rerr := newResource(ctx, s, p)
	if rerr != nil {
		s.Warnings = append(s.Warnings, rerr.Error())
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(s.Sampler),
	)
	return &Provider{settings: s, sdk: tp}, nil
}

// newExporter builds the OTLP/HTTP exporter for s (otlphttp.go), reading the exporter's OTEL_*
// variables through getenv. It does not connect: export failures come later, to OpenTelemetry's
// error handler.
func newExporter(s Settings, getenv func(string) string) (sdktrace.SpanExporter, error) {
	exp, err := newHTTPExporter(s, getenv)
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	return exp, nil
}

// newResource builds the resource, lowest precedence first: the process's defaults, the SDK's
// own attributes, OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME, then the section's. A
// malformed variable is reported and the rest kept.
func newResource(ctx context.Context, s Settings, p Process) (*resource.Resource, error) {
	base := append([]attribute.KeyValue{semconv.ServiceName(p.ServiceName)}, p.Attributes...)
	if p.Version != "" {
		base = append(base, semconv.ServiceVersion(p.Version))
	}
	var conf []attribute.KeyValue
	for k, v := range s.ResourceAttributes {
		conf = append(conf, attribute.String(k, v))
	}
	if s.ServiceName != "" {
		conf = append(conf, semconv.ServiceName(s.ServiceName))
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(base...),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(),
		resource.WithAttributes(conf...),
	)
	if err != nil {
		if res == nil || !errors.Is(err, resource.ErrPartialResource) {
			return resource.NewSchemaless(append(base, conf...)...), fmt.Errorf("tracing: resource: %w", err)
		}
		return res, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w: the well-formed attributes are kept", err)
	}
	return res, nil
}

// Enabled reports whether spans are exported.
func (p *Provider) Enabled() bool { return p.sdk != nil }

// Settings returns what the configuration and the environment resolved to.
func (p *Provider) Settings() Settings { return p.settings }

// TracerProvider returns the provider to take tracers from: a no-op one when tracing is off.
func (p *Provider) TracerProvider() trace.TracerProvider {
	if p.sdk != nil {
		return p.sdk
	}
	return p.noop
}

// Shutdown flushes the spans still queued to the exporter and stops it, within ctx (or five
// seconds, when ctx has no deadline). It does nothing when tracing is off.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p.sdk == nil {
		return nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	if err := p.sdk.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracing: shutdown: %w", err)
	}
	return nil
}

// Describe is the start-up log line's attributes: whether tracing is on, why, and how.
func (p *Provider) Describe() []any {
	s := p.settings
	if !s.Enabled {
		return []any{"tracing", "off", "why", s.Why}
	}
	return []any{"tracing", "on", "why", s.Why, "protocol", s.Protocol, "sampler", s.SamplerName, "ratio", s.Ratio}
}

package main

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"

	"github.com/herd-llm/herd/tracing"
)

// tracingFlags binds the tracing section's main fields to flags (--tracing-*, HERD_TRACING_*).
// The OTEL_* variables apply where these and the file leave a field empty.
func tracingFlags(fs *pflag.FlagSet, c *tracing.Config) {
	fs.StringVar(&c.Endpoint, "tracing-endpoint", c.Endpoint, "OTLP collector base URL for OpenTelemetry traces, e.g. http://collector:4318 (default: OTEL_EXPORTER_OTLP_ENDPOINT; none: tracing off)")
	fs.StringVar(&c.Protocol, "tracing-protocol", c.Protocol, "OTLP/HTTP protocol: http/protobuf or http/json (default: OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf)")
	fs.StringVar(&c.Sampler, "tracing-sampler", c.Sampler, "trace sampler, as OTEL_TRACES_SAMPLER (default parentbased_always_on)")
	fs.StringVar(&c.SamplerArg, "tracing-sampler-arg", c.SamplerArg, "ratio of the traceidratio samplers, 0 to 1 (OTEL_TRACES_SAMPLER_ARG)")
	fs.StringVar(&c.ServiceName, "tracing-service-name", c.ServiceName, "service.name of the spans (default: OTEL_SERVICE_NAME, else herd-gateway / herd-agent)")
	fs.BoolVar(&c.Disabled, "tracing-disabled", c.Disabled, "turn tracing off even when an endpoint is configured")
}

// setupTracing builds the process's tracer provider and logs what tracing resolved to. The
// returned function flushes and stops the exporter; call it once the server has stopped.
func setupTracing(ctx context.Context, c tracing.Config, proc string, log *slog.Logger, attrs ...attribute.KeyValue) (*tracing.Provider, func(), error) {
	tp, err := tracing.Setup(ctx, c, tracing.Process{ServiceName: proc, Version: herdVersion(), Attributes: attrs})
	if err != nil {
		return nil, nil, err
	}
	for _, w := range tp.Settings().Warnings {
		log.Warn("tracing: " + w)
	}
	if !tp.Enabled() {
		log.Debug("tracing off", tp.Describe()...)
		return tp, func() {}, nil
	}
	setOTelErrorHandler(log)
	log.Info("OpenTelemetry tracing on", tp.Describe()...)
	return tp, func() {
		if err := tp.Shutdown(context.Background()); err != nil {
			log.Warn("tracing: spans not flushed at shutdown", "err", err)
		}
	}, nil
}

var otelHandlerOnce sync.Once

// setOTelErrorHandler sends OpenTelemetry's internal errors (an export that failed: the collector
// is down) to the log, at most one line a minute, instead of the standard logger. The SDK only
// reports them through this process-wide handler.
func setOTelErrorHandler(log *slog.Logger) {
	otelHandlerOnce.Do(func() {
		var mu sync.Mutex
		var last time.Time
		suppressed := 0
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
			mu.Lock()
			defer mu.Unlock()
			if now := time.Now(); now.Sub(last) >= time.Minute {
				log.Warn("tracing: OpenTelemetry error", "err", err, "suppressed_since_last", suppressed)
				last, suppressed = now, 0
				return
			}
			suppressed++
		}))
	})
}

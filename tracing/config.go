// Package tracing sets up OpenTelemetry tracing for a herd process (gateway or agent): the
// configuration and how it meets the standard OTEL_* environment, the OTLP exporter, the tracer
// provider, and the gen_ai attribute names and response scanner both processes record spans with.
//
// Decisions:
//   - Tracing is off unless configured: an endpoint in the process's `tracing` section (or its
//     flags / HERD_* variables), OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
//     or OTEL_TRACES_EXPORTER=otlp (the exporter's default endpoint, localhost). When off the
//     provider is OpenTelemetry's no-op one and the request path checks one boolean, so an
//     untraced request pays nothing measurable.
//   - OTEL_SDK_DISABLED=true, or OTEL_TRACES_EXPORTER=none, turns tracing off whatever else says.
//   - A value in the section wins over its OTEL_* variable (as the SDK's own options win over the
//     environment); an empty field leaves the variable in charge. The exporter reads the
//     variables herd has no field for (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _COMPRESSION,
//     _CERTIFICATE, _CLIENT_CERTIFICATE, _CLIENT_KEY, each also as OTEL_EXPORTER_OTLP_TRACES_*),
//     and the batch span processor reads OTEL_BSP_*.
//   - The section's values are checked by Validate (a bad one stops the process at start); a bad
//     OTEL_* value is logged and ignored, as the OpenTelemetry specification asks.
//   - Protocols: http/protobuf (the default) and http/json, by herd's own OTLP/HTTP exporter
//     (otlphttp.go). OTLP over gRPC is not offered: OpenTelemetry's exporters link gRPC, which
//     doubles the size of the binary every gateway and agent maps; every OpenTelemetry collector
//     takes OTLP/HTTP (port 4318). Context propagates as W3C trace context
//     (traceparent/tracestate headers).
package tracing

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Protocols the exporter speaks (the values of OTEL_EXPORTER_OTLP_PROTOCOL).
const (
	ProtocolHTTPProtobuf = "http/protobuf"
	ProtocolHTTPJSON     = "http/json"
	// ProtocolGRPC is OTLP over gRPC, which herd does not speak: naming it is an error in the
	// configuration and a warning (then http/protobuf) in OTEL_EXPORTER_OTLP_PROTOCOL.
	ProtocolGRPC = "grpc"
)

// Samplers (the values of OTEL_TRACES_SAMPLER herd supports).
const (
	SamplerAlwaysOn                = "always_on"
	SamplerAlwaysOff               = "always_off"
	SamplerTraceIDRatio            = "traceidratio"
	SamplerParentBasedAlwaysOn     = "parentbased_always_on"
	SamplerParentBasedAlwaysOff    = "parentbased_always_off"
	SamplerParentBasedTraceIDRatio = "parentbased_traceidratio"
)

// Config is the `tracing` section of the gateway's or the agent's configuration. Every field is
// optional; see the package doc for how it meets the OTEL_* environment.
type Config struct {
	// Disabled turns tracing off even when an endpoint is configured.
	Disabled bool `yaml:"disabled"`
	// Endpoint is the OTLP collector's base URL, as OTEL_EXPORTER_OTLP_ENDPOINT: the traces path
	// /v1/traces is appended ("http://collector:4318"). Setting it turns tracing on.
	Endpoint string `yaml:"endpoint"`
	// Protocol is http/protobuf (default) or http/json (OTEL_EXPORTER_OTLP_PROTOCOL).
	Protocol string `yaml:"protocol"`
	// Headers are sent with every export, e.g. a collector's API key (OTEL_EXPORTER_OTLP_HEADERS).
	Headers map[string]string `yaml:"headers"`
	// ServiceName is the resource's service.name (OTEL_SERVICE_NAME); default herd-gateway or
	// herd-agent.
	ServiceName string `yaml:"service_name"`
	// ResourceAttributes are added to the resource (OTEL_RESOURCE_ATTRIBUTES); they win over the
	// variable's.
	ResourceAttributes map[string]string `yaml:"resource_attributes"`
	// Sampler is one of always_on, always_off, traceidratio, parentbased_always_on (default),
	// parentbased_always_off, parentbased_traceidratio (OTEL_TRACES_SAMPLER).
	Sampler string `yaml:"sampler"`
	// SamplerArg is the ratio of the *traceidratio samplers, in [0, 1] (OTEL_TRACES_SAMPLER_ARG;
	// default 1).
	SamplerArg string `yaml:"sampler_arg"`
}

// IsZero reports whether c sets nothing.
func (c Config) IsZero() bool {
	return !c.Disabled && c.Endpoint == "" && c.Protocol == "" && len(c.Headers) == 0 && c.ServiceName == "" &&
		len(c.ResourceAttributes) == 0 && c.Sampler == "" && c.SamplerArg == ""
}

// Validate reports a section herd cannot trace with.
func (c Config) Validate() error {
	var errs []error
	if c.Endpoint != "" {
		if err := checkEndpoint(c.Endpoint); err != nil {
			errs = append(errs, fmt.Errorf("tracing endpoint: %w", err))
		}
	}
	if c.Protocol != "" {
		if _, err := parseProtocol(c.Protocol); err != nil {
			errs = append(errs, fmt.Errorf("tracing protocol: %w", err))
		}
	}
	if c.Sampler != "" {
		if _, err := parseSampler(c.Sampler, "1"); err != nil {
			errs = append(errs, fmt.Errorf("tracing sampler: %w", err))
		}
	}
	if c.SamplerArg != "" {
		if _, err := parseRatio(c.SamplerArg); err != nil {
			errs = append(errs, fmt.Errorf("tracing sampler_arg: %w", err))
		}
	}
	for k := range c.ResourceAttributes {
		if strings.TrimSpace(k) == "" {
			errs = append(errs, errors.New("tracing resource_attributes: empty key"))
		}
	}
	return errors.Join(errs...)
}

// Settings is what Resolve makes of a Config and the environment.
type Settings struct {
	// Enabled is false when tracing is off; the other fields are then meaningless.
	Enabled bool
	// Why says what turned tracing on or off, for the start-up log line.
	Why string
	// Protocol is one of the Protocol* constants.
	Protocol string
	// EndpointURL is the full URL to give the exporter, or "" to let it read the OTEL_* endpoint
	// variables (or its default) itself.
	EndpointURL string
	// Headers are extra export headers from the section (the exporter adds the variable's).
	Headers map[string]string
	// Sampler decides which traces are recorded; SamplerName and Ratio say which it is.
	Sampler     sdktrace.Sampler
	SamplerName string
	Ratio       float64
	// ServiceName is the section's service name, "" to leave it to OTEL_SERVICE_NAME or the default.
	ServiceName string
	// ResourceAttributes are the section's.
	ResourceAttributes map[string]string
	// Warnings are OTEL_* values that were ignored, one sentence each, for the log.
	Warnings []string
}

// Resolve combines c with the environment read through getenv (os.Getenv when nil). It errs
// only on a bad value in c, which Validate would report too.
func Resolve(c Config, getenv func(string) string) (Settings, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	if err := c.Validate(); err != nil {
		return Settings{}, err
	}
	var s Settings
	env := func(k string) string { return strings.TrimSpace(getenv(k)) }

	switch {
	case strings.EqualFold(env("OTEL_SDK_DISABLED"), "true"):
		s.Why = "OTEL_SDK_DISABLED=true"
		return s, nil
	case c.Disabled:
		s.Why = "tracing.disabled is set"
		return s, nil
	}
	exporters := env("OTEL_TRACES_EXPORTER")
	var otlpNamed bool
	for _, e := range strings.Split(exporters, ",") {
		switch e = strings.TrimSpace(e); e {
		case "":
		case "none":
			if c.Endpoint == "" {
				s.Why = "OTEL_TRACES_EXPORTER=none"
				return s, nil
			}
		case "otlp":
			otlpNamed = true
		default:
			s.Warnings = append(s.Warnings, fmt.Sprintf("OTEL_TRACES_EXPORTER: exporter %q is not supported (only otlp): ignored", e))
		}
	}

	// The protocol, which also decides what the endpoint means.
	s.Protocol = ProtocolHTTPProtobuf
	switch p, name := firstEnv(env, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"); {
	case c.Protocol != "":
		s.Protocol, _ = parseProtocol(c.Protocol)
	case p != "":
		if proto, err := parseProtocol(p); err != nil {
			s.Warnings = append(s.Warnings, fmt.Sprintf("%s: %v: using %s", name, err, s.Protocol))
		} else {
			s.Protocol = proto
		}
	}

	tracesEP, _ := firstEnv(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	baseEP, _ := firstEnv(env, "OTEL_EXPORTER_OTLP_ENDPOINT")
	switch {
	case c.Endpoint != "":
		s.EndpointURL = signalURL(c.Endpoint)
		s.Why = "tracing.endpoint " + s.EndpointURL
	case tracesEP != "":
		s.Why = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT " + tracesEP
	case baseEP != "":
		s.Why = "OTEL_EXPORTER_OTLP_ENDPOINT " + baseEP
	case otlpNamed:
		s.Why = "OTEL_TRACES_EXPORTER=otlp (default endpoint)"
	default:
		s.Why = "no OTLP endpoint configured"
		return s, nil
	}
	s.Enabled = true
	s.Headers = c.Headers
	s.ServiceName = strings.TrimSpace(c.ServiceName)
	s.ResourceAttributes = c.ResourceAttributes

	name, arg := c.Sampler, c.SamplerArg
	if name == "" {
		if v := env("OTEL_TRACES_SAMPLER"); v != "" {
			if _, err := parseSampler(v, "1"); err != nil {
				s.Warnings = append(s.Warnings, fmt.Sprintf("OTEL_TRACES_SAMPLER: %v: using %s", err, SamplerParentBasedAlwaysOn))
			} else {
				name = strings.ToLower(v)
			}
		}
	}
	if name == "" {
		name = SamplerParentBasedAlwaysOn
	}
	if arg == "" {
		if v := env("OTEL_TRACES_SAMPLER_ARG"); v != "" {
			if _, err := parseRatio(v); err != nil {
				s.Warnings = append(s.Warnings, fmt.Sprintf("OTEL_TRACES_SAMPLER_ARG: %v: using 1", err))
			} else {
				arg = v
			}
		}
	}
	if arg == "" {
		arg = "1"
	}
	s.SamplerName = name
	s.Ratio, _ = parseRatio(arg)
	s.Sampler, _ = parseSampler(name, arg)
	return s, nil
}

// firstEnv returns the first non-empty variable of names and its name.
func firstEnv(env func(string) string, names ...string) (string, string) {
	for _, n := range names {
		if v := env(n); v != "" {
			return v, n
		}
	}
	return "", ""
}

// signalURL is the exporter URL for a base endpoint, as the specification builds it from
// OTEL_EXPORTER_OTLP_ENDPOINT for OTLP/HTTP: the traces path appended.
func signalURL(base string) string {
	return strings.TrimSuffix(base, "/") + "/v1/traces"
}

func checkEndpoint(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q: %w", s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http(s) URL with a host", s)
	}
	return nil
}

func parseProtocol(s string) (string, error) {
	switch p := strings.ToLower(strings.TrimSpace(s)); p {
	case ProtocolHTTPProtobuf, ProtocolHTTPJSON:
		return p, nil
	case ProtocolGRPC:
		return "", fmt.Errorf("protocol %q is not supported: herd exports OTLP over HTTP (%s or %s; a collector's OTLP/HTTP port is 4318)", s, ProtocolHTTPProtobuf, ProtocolHTTPJSON)
	}
	return "", fmt.Errorf("protocol %q: want %s or %s", s, ProtocolHTTPProtobuf, ProtocolHTTPJSON)
}

func parseRatio(s string) (float64, error) {
	r, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || r < 0 || r > 1 {
		return 0, fmt.Errorf("ratio %q: want a number from 0 to 1", s)
	}
	return r, nil
}

// parseSampler builds the sampler called name with ratio arg (for the ratio samplers).
func parseSampler(name, arg string) (sdktrace.Sampler, error) {
	ratio := func() sdktrace.Sampler {
		r, err := parseRatio(arg)
		if err != nil {
			r = 1
		}
		return sdktrace.TraceIDRatioBased(r)
	}
	switch strings.ToLower(strings.TrimSpace(name)) {
	case SamplerAlwaysOn:
		return sdktrace.AlwaysSample(), nil
	case SamplerAlwaysOff:
		return sdktrace.NeverSample(), nil
	case SamplerTraceIDRatio:
		return ratio(), nil
	case SamplerParentBasedAlwaysOn:
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case SamplerParentBasedAlwaysOff:
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case SamplerParentBasedTraceIDRatio:
		return sdktrace.ParentBased(ratio()), nil
	}
	return nil, fmt.Errorf("sampler %q: want one of %s, %s, %s, %s, %s, %s", name,
		SamplerAlwaysOn, SamplerAlwaysOff, SamplerTraceIDRatio,
		SamplerParentBasedAlwaysOn, SamplerParentBasedAlwaysOff, SamplerParentBasedTraceIDRatio)
}

package tracing

import (
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
		env  map[string]string

		enabled  bool
		why      string // substring of Settings.Why
		protocol string
		url      string
		sampler  string
		ratio    float64
		warn     string // substring of a warning; "" wants none
	}{
		{name: "nothing configured", why: "no OTLP endpoint"},
		{name: "base endpoint from env", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
			enabled: true, why: "OTEL_EXPORTER_OTLP_ENDPOINT", protocol: ProtocolHTTPProtobuf, sampler: SamplerParentBasedAlwaysOn, ratio: 1},
		{name: "traces endpoint from env wins", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:4318/x"},
			enabled: true, why: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", protocol: ProtocolHTTPProtobuf, sampler: SamplerParentBasedAlwaysOn, ratio: 1},
		{name: "config endpoint gets the traces path", cfg: Config{Endpoint: "http://c:4318/"},
			enabled: true, why: "tracing.endpoint", protocol: ProtocolHTTPProtobuf, url: "http://c:4318/v1/traces", sampler: SamplerParentBasedAlwaysOn, ratio: 1},
		{name: "config endpoint wins over env", cfg: Config{Endpoint: "http://cfg:4318"}, env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4318"},
			enabled: true, why: "tracing.endpoint", protocol: ProtocolHTTPProtobuf, url: "http://cfg:4318/v1/traces", sampler: SamplerParentBasedAlwaysOn, ratio: 1},
		{name: "protocol from env", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
			enabled: true, protocol: ProtocolHTTPJSON, sampler: SamplerParentBasedAlwaysOn, ratio: 1},
		{name: "grpc in env is not spoken: http/protobuf and a warning", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
			enabled: true, protocol: ProtocolHTTPProtobuf, sampler: SamplerParentBasedAlwaysOn, ratio: 1, warn: "not supported"},
		{name: "traces protocol wins", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
			enabled: true, protocol: ProtocolHTTPJSON, sampler: SamplerParentBasedAlwaysOn, ratio: 1},
		{name: "bad env protocol ignored", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"},
			enabled: true, protocol: ProtocolHTTPProtobuf, sampler: SamplerParentBasedAlwaysOn, ratio: 1, warn: "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{name: "sdk disabled wins over everything", cfg: Config{Endpoint: "http://c:4318"}, env: map[string]string{"OTEL_SDK_DISABLED": "TRUE"},
			why: "OTEL_SDK_DISABLED"},
		{name: "sdk disabled only by true", env: map[string]string{"OTEL_SDK_DISABLED": "yes", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
			enabled: true, protocol: ProtocolHTTPProtobuf, sampler: SamplerParentBasedAlwaysOn, ratio: 1},
		{name: "config disabled", cfg: Config{Endpoint: "http://c:4318", Disabled: true}, why: "disabled"},
		{name: "exporter none", env: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, why: "none"},
		{name: "exporter otlp alone uses the default endpoint", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"},
			enabled: true, why: "default endpoint", protocol: ProtocolHTTPProtobuf, sampler: SamplerParentBasedAlwaysOn, ratio: 1},
		{name: "unsupported exporter warned", env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
			enabled: true, protocol: ProtocolHTTPProtobuf, sampler: SamplerParentBasedAlwaysOn, ratio: 1, warn: "zipkin"},
		{name: "sampler from env", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"},
			enabled: true, protocol: ProtocolHTTPProtobuf, sampler: SamplerParentBasedTraceIDRatio, ratio: 0.25},
		{name: "config sampler wins", cfg: Config{Sampler: "traceidratio", SamplerArg: "0.5"}, env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_SAMPLER": "always_off", "OTEL_TRACES_SAMPLER_ARG": "0.25"},
			enabled: true, protocol: ProtocolHTTPProtobuf, sampler: SamplerTraceIDRatio, ratio: 0.5},
		{name: "bad env sampler ignored", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_SAMPLER": "jaeger_remote"},
			enabled: true, protocol: ProtocolHTTPProtobuf, sampler: SamplerParentBasedAlwaysOn, ratio: 1, warn: "OTEL_TRACES_SAMPLER"},
		{name: "bad env ratio ignored", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"},
			enabled: true, protocol: ProtocolHTTPProtobuf, sampler: SamplerTraceIDRatio, ratio: 1, warn: "OTEL_TRACES_SAMPLER_ARG"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Resolve(tt.cfg, func(k string) string { return tt.env[k] })
			if err != nil {
				t.Fatal(err)
			}
			if s.Enabled != tt.enabled || !strings.Contains(s.Why, tt.why) {
				t.Fatalf("enabled %v why %q, want %v and %q", s.Enabled, s.Why, tt.enabled, tt.why)
			}
			if !s.Enabled {
				return
			}
			if s.Protocol != tt.protocol || s.EndpointURL != tt.url || s.SamplerName != tt.sampler || s.Ratio != tt.ratio || s.Sampler == nil {
				t.Errorf("got protocol %q url %q sampler %q ratio %v", s.Protocol, s.EndpointURL, s.SamplerName, s.Ratio)
			}
			warnings := strings.Join(s.Warnings, "\n")
			if (tt.warn == "") != (warnings == "") || !strings.Contains(warnings, tt.warn) {
				t.Errorf("warnings %q, want one about %q", warnings, tt.warn)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
		err  string // "" wants none
	}{
		{name: "empty"},
		{name: "full", cfg: Config{Endpoint: "https://c:4318", Protocol: "HTTP/JSON", Sampler: "parentbased_traceidratio", SamplerArg: "0.1",
			ResourceAttributes: map[string]string{"a": "b"}, Headers: map[string]string{"x-key": "v"}}},
		{name: "endpoint not a URL", cfg: Config{Endpoint: "collector:4318"}, err: "endpoint"},
		{name: "bad protocol", cfg: Config{Protocol: "thrift"}, err: "protocol"},
		{name: "grpc is not spoken", cfg: Config{Protocol: "grpc"}, err: "not supported"},
		{name: "bad sampler", cfg: Config{Sampler: "sometimes"}, err: "sampler"},
		{name: "ratio out of range", cfg: Config{SamplerArg: "1.5"}, err: "sampler_arg"},
		{name: "ratio not a number", cfg: Config{SamplerArg: "half"}, err: "sampler_arg"},
		{name: "empty resource key", cfg: Config{ResourceAttributes: map[string]string{" ": "x"}}, err: "resource_attributes"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("Validate() = %v, want an error about %q", err, tt.err)
			}
			if _, rerr := Resolve(tt.cfg, func(string) string { return "" }); (rerr == nil) != (err == nil) {
				t.Fatalf("Resolve and Validate disagree: %v / %v", rerr, err)
			}
		})
	}
}

func TestIsZero(t *testing.T) {
	if !(Config{}).IsZero() || (Config{Sampler: "always_on"}).IsZero() || (Config{Disabled: true}).IsZero() {
		t.Fatal("IsZero is wrong")
	}
}

package tracing

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// httpExporter sends spans to an OTLP/HTTP collector (http/protobuf or http/json). herd has its
// own rather than OpenTelemetry's otlptracehttp because that one links gRPC (its request type's
// package carries the gRPC service, and its configuration gRPC's options): gRPC pulls in
// golang.org/x/net/trace, whose html/template use stops the linker from dropping unused methods,
// which doubled the size of the binary every gateway and agent maps (docs/BENCHMARKS.md, "Memory
// under the overhead scenario's c50 load").
type httpExporter struct {
	url         string
	json        bool
	gzip        bool
	headers     map[string]string
	timeout     time.Duration
	client      *http.Client
	mu          sync.Mutex
	stopped     bool
	maxInterval time.Duration // the longest pause between retries
}

var _ sdktrace.SpanExporter = (*httpExporter)(nil)

// defaultTracesURL is where spans go when neither the configuration nor the environment names a
// collector (OTEL_TRACES_EXPORTER=otlp alone), as the specification says.
const defaultTracesURL = "http://localhost:4318/v1/traces"

// newHTTPExporter builds the exporter for s, reading the OTEL_EXPORTER_OTLP_* variables herd
// has no field for through getenv (the traces-specific one wins): the endpoint when s has none,
// _HEADERS (below the section's), _TIMEOUT, _COMPRESSION, _CERTIFICATE, _CLIENT_CERTIFICATE and
// _CLIENT_KEY.
func newHTTPExporter(s Settings, getenv func(string) string) (*httpExporter, error) {
	env := func(name string) string {
		v, _ := firstEnv(func(k string) string { return strings.TrimSpace(getenv(k)) },
			"OTEL_EXPORTER_OTLP_TRACES_"+name, "OTEL_EXPORTER_OTLP_"+name)
		return v
	}
	e := &httpExporter{url: s.EndpointURL, json: s.Protocol == ProtocolHTTPJSON, timeout: 10 * time.Second,
		headers: map[string]string{}, maxInterval: 30 * time.Second}
	if e.url == "" {
		if v := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")); v != "" {
			e.url = v
		} else if v := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_ENDPOINT")); v != "" {
			e.url = signalURL(v)
		} else {
			e.url = defaultTracesURL
		}
	}
	if err := checkEndpoint(e.url); err != nil {
		return nil, fmt.Errorf("endpoint: %w", err)
	}
	if v := env("HEADERS"); v != "" {
		h, err := parseHeaders(v)
		if err != nil {
			return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_HEADERS: %w", err)
		}
		e.headers = h
	}
	for k, v := range s.Headers {
		e.headers[k] = v
	}
	if v := env("TIMEOUT"); v != "" {
		ms, err := strconv.Atoi(v)
		if err != nil || ms <= 0 {
			return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_TIMEOUT %q: want milliseconds", v)
		}
		e.timeout = time.Duration(ms) * time.Millisecond
	}
	switch v := strings.ToLower(env("COMPRESSION")); v {
	case "", "none":
	case "gzip":
		e.gzip = true
	default:
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_COMPRESSION %q: want gzip or none", v)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if ca, cert, key := env("CERTIFICATE"), env("CLIENT_CERTIFICATE"), env("CLIENT_KEY"); ca != "" || cert != "" || key != "" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if ca != "" {
			pem, err := os.ReadFile(ca)
			if err != nil {
				return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_CERTIFICATE: %w", err)
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_CERTIFICATE %s: no PEM certificate in it", ca)
			}
		}
		if cert != "" || key != "" {
			pair, err := tls.LoadX509KeyPair(cert, key)
			if err != nil {
				return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE / _CLIENT_KEY: %w", err)
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
		tr.TLSClientConfig = cfg
	}
	e.client = &http.Client{Transport: tr}
	return e, nil
}

// parseHeaders reads OTEL_EXPORTER_OTLP_HEADERS: comma-separated key=value pairs, values
// percent-encoded.
func parseHeaders(s string) (map[string]string, error) {
	h := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		if strings.TrimSpace(kv) == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not key=value", kv)
		}
		uv, err := url.PathUnescape(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("header %s: %w", k, err)
		}
		h[k] = uv
	}
	return h, nil
}

// ExportSpans sends spans in one request, retrying what the specification calls retryable (429,
// 502, 503, 504, or no answer) until the export timeout.
func (e *httpExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	e.mu.Lock()
	stopped := e.stopped
	e.mu.Unlock()
	if stopped || len(spans) == 0 {
		return nil
	}
	body, ctype, err := e.encode(toResourceSpans(spans))
	if err != nil {
		return fmt.Errorf("otlp: encoding spans: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	pause := time.Second
	for {
		retry, wait, err := e.post(ctx, body, ctype)
		if err == nil || !retry {
			return err
		}
		if wait <= 0 {
			wait = pause
			pause = min(2*pause, e.maxInterval)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
		case <-time.After(wait):
		}
	}
}

// post makes one export request. It says whether a failure may be retried, and after how long
// the collector asked (Retry-After), 0 if it did not.
func (e *httpExporter) post(ctx context.Context, body []byte, ctype string) (bool, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url, bytes.NewReader(body))
	if err != nil {
		return false, 0, fmt.Errorf("otlp: %w", err)
	}
	req.Header.Set("Content-Type", ctype)
	if e.gzip {
		req.Header.Set("Content-Encoding", "gzip")
	}
	for k, v := range e.headers {
		req.Header.Set(k, v)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return ctx.Err() == nil, 0, fmt.Errorf("otlp: export to %s: %w", e.url, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode/100 == 2 {
		return false, 0, nil
	}
	err = fmt.Errorf("otlp: export to %s: HTTP %d: %s", e.url, resp.StatusCode, bytes.TrimSpace(msg[:min(len(msg), 200)]))
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		var wait time.Duration
		if s, perr := strconv.Atoi(resp.Header.Get("Retry-After")); perr == nil && s > 0 {
			wait = time.Duration(s) * time.Second
		}
		return true, wait, err
	}
	return false, 0, err
}

// encode is the ExportTraceServiceRequest of rs in the exporter's encoding (gzipped if asked),
// and its content type. The request message is one repeated field (resource_spans = 1), written
// here so that its package, which carries the gRPC service, is not linked.
func (e *httpExporter) encode(rs []*tracepb.ResourceSpans) ([]byte, string, error) {
	var b []byte
	ctype := "application/x-protobuf"
	if e.json {
		ctype = "application/json"
		var err error
		if b, err = encodeJSON(rs); err != nil {
			return nil, "", err
		}
	} else {
		for _, r := range rs {
			m, err := proto.Marshal(r)
			if err != nil {
				return nil, "", err
			}
			b = protowire.AppendTag(b, 1, protowire.BytesType)
			b = protowire.AppendBytes(b, m)
		}
	}
	if !e.gzip {
		return b, ctype, nil
	}
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	if _, err := zw.Write(b); err != nil {
		return nil, "", err
	}
	if err := zw.Close(); err != nil {
		return nil, "", err
	}
	return z.Bytes(), ctype, nil
}

// encodeJSON writes {"resourceSpans":[...]} as OTLP/JSON asks: protobuf's JSON mapping with enums
// as numbers, but trace and span IDs in hex where protojson writes bytes in base64.
func encodeJSON(rs []*tracepb.ResourceSpans) ([]byte, error) {
	opts := protojson.MarshalOptions{UseEnumNumbers: true}
	list := make([]any, 0, len(rs))
	for _, r := range rs {
		m, err := opts.Marshal(r)
		if err != nil {
			return nil, err
		}
		var v any
		if err := json.Unmarshal(m, &v); err != nil {
			return nil, err
		}
		hexIDs(v)
		list = append(list, v)
	}
	return json.Marshal(map[string]any{"resourceSpans": list})
}

// hexIDs rewrites the traceId, spanId and parentSpanId fields under v from base64 to hex.
func hexIDs(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && (k == "traceId" || k == "spanId" || k == "parentSpanId") {
				if b, err := base64.StdEncoding.DecodeString(s); err == nil {
					v[k] = hex.EncodeToString(b)
				}
				continue
			}
			hexIDs(x)
		}
	case []any:
		for _, x := range v {
			hexIDs(x)
		}
	}
}

// Shutdown stops the exporter: later exports do nothing.
func (e *httpExporter) Shutdown(ctx context.Context) error {
	e.mu.Lock()
	e.stopped = true
	e.mu.Unlock()
	e.client.CloseIdleConnections()
	return ctx.Err()
}

// toResourceSpans groups spans by resource and instrumentation scope, in the order met.
func toResourceSpans(spans []sdktrace.ReadOnlySpan) []*tracepb.ResourceSpans {
	type scopeKey struct {
		res   *resource.Resource
		scope instrumentation.Scope
	}
	var out []*tracepb.ResourceSpans
	byRes := map[*resource.Resource]*tracepb.ResourceSpans{}
	byScope := map[scopeKey]*tracepb.ScopeSpans{}
	for _, sp := range spans {
		res := sp.Resource()
		rs := byRes[res]
		if rs == nil {
			rs = &tracepb.ResourceSpans{Resource: &resourcepb.Resource{}}
			if res != nil {
				rs.Resource.Attributes = keyValues(res.Attributes())
				rs.SchemaUrl = res.SchemaURL()
			}
			byRes[res] = rs
			out = append(out, rs)
		}
		sc := sp.InstrumentationScope()
		key := scopeKey{res, instrumentation.Scope{Name: sc.Name, Version: sc.Version, SchemaURL: sc.SchemaURL}}
		ss := byScope[key]
		if ss == nil {
			ss = &tracepb.ScopeSpans{Scope: &commonpb.InstrumentationScope{Name: sc.Name, Version: sc.Version,
				Attributes: keyValues(sc.Attributes.ToSlice())}, SchemaUrl: sc.SchemaURL}
			byScope[key] = ss
			rs.ScopeSpans = append(rs.ScopeSpans, ss)
		}
		ss.Spans = append(ss.Spans, toSpan(sp))
	}
	return out
}

// OTLP's span flags: bit 8 says whether the parent's remoteness is known, bit 9 that it is remote.
const (
	flagHasIsRemote = 0x100
	flagIsRemote    = 0x200
)

func toSpan(sp sdktrace.ReadOnlySpan) *tracepb.Span {
	sc := sp.SpanContext()
	tid, sid := sc.TraceID(), sc.SpanID()
	out := &tracepb.Span{
		TraceId:                tid[:],
		SpanId:                 sid[:],
		TraceState:             sc.TraceState().String(),
		Name:                   sp.Name(),
		Kind:                   tracepb.Span_SpanKind(spanKind(sp.SpanKind())),
		StartTimeUnixNano:      unixNano(sp.StartTime()),
		EndTimeUnixNano:        unixNano(sp.EndTime()),
		Attributes:             keyValues(sp.Attributes()),
		DroppedAttributesCount: uint32(max(0, sp.DroppedAttributes())),
		DroppedEventsCount:     uint32(max(0, sp.DroppedEvents())),
		DroppedLinksCount:      uint32(max(0, sp.DroppedLinks())),
		Flags:                  uint32(sc.TraceFlags()) | flagHasIsRemote,
		Status:                 &tracepb.Status{Message: sp.Status().Description},
	}
	if p := sp.Parent(); p.IsValid() {
		psid := p.SpanID()
		out.ParentSpanId = psid[:]
		if p.IsRemote() {
			out.Flags |= flagIsRemote
		}
	}
	switch sp.Status().Code {
	case codes.Ok:
		out.Status.Code = tracepb.Status_STATUS_CODE_OK
	case codes.Error:
		out.Status.Code = tracepb.Status_STATUS_CODE_ERROR
	}
	for _, ev := range sp.Events() {
		out.Events = append(out.Events, &tracepb.Span_Event{TimeUnixNano: unixNano(ev.Time), Name: ev.Name,
			Attributes: keyValues(ev.Attributes), DroppedAttributesCount: uint32(max(0, ev.DroppedAttributeCount))})
	}
	for _, l := range sp.Links() {
		ltid, lsid := l.SpanContext.TraceID(), l.SpanContext.SpanID()
		flags := uint32(l.SpanContext.TraceFlags()) | flagHasIsRemote
		if l.SpanContext.IsRemote() {
			flags |= flagIsRemote
		}
		out.Links = append(out.Links, &tracepb.Span_Link{TraceId: ltid[:], SpanId: lsid[:],
			TraceState: l.SpanContext.TraceState().String(), Attributes: keyValues(l.Attributes),
			DroppedAttributesCount: uint32(max(0, l.DroppedAttributeCount)), Flags: flags})
	}
	return out
}

// spanKind maps OpenTelemetry's span kinds to OTLP's, which number them alike.
func spanKind(k trace.SpanKind) int32 {
	if k < trace.SpanKindInternal || k > trace.SpanKindConsumer {
		return int32(tracepb.Span_SPAN_KIND_INTERNAL)
	}
	return int32(k)
}

func unixNano(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(max(0, t.UnixNano()))
}

func keyValues(attrs []attribute.KeyValue) []*commonpb.KeyValue {
	if len(attrs) == 0 {
		return nil
	}
	out := make([]*commonpb.KeyValue, 0, len(attrs))
	for _, kv := range attrs {
		out = append(out, &commonpb.KeyValue{Key: string(kv.Key), Value: anyValue(kv.Value)})
	}
	return out
}

func anyValue(v attribute.Value) *commonpb.AnyValue {
	array := func(n int, at func(int) *commonpb.AnyValue) *commonpb.AnyValue {
		vals := make([]*commonpb.AnyValue, n)
		for i := range vals {
			vals[i] = at(i)
		}
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{Values: vals}}}
	}
	switch v.Type() {
	case attribute.BOOL:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: v.AsBool()}}
	case attribute.INT64:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: v.AsInt64()}}
	case attribute.FLOAT64:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: v.AsFloat64()}}
	case attribute.STRING:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v.AsString()}}
	case attribute.BOOLSLICE:
		s := v.AsBoolSlice()
		return array(len(s), func(i int) *commonpb.AnyValue { return anyValue(attribute.BoolValue(s[i])) })
	case attribute.INT64SLICE:
		s := v.AsInt64Slice()
		return array(len(s), func(i int) *commonpb.AnyValue { return anyValue(attribute.Int64Value(s[i])) })
	case attribute.FLOAT64SLICE:
		s := v.AsFloat64Slice()
		return array(len(s), func(i int) *commonpb.AnyValue { return anyValue(attribute.Float64Value(s[i])) })
	case attribute.STRINGSLICE:
		s := v.AsStringSlice()
		return array(len(s), func(i int) *commonpb.AnyValue { return anyValue(attribute.StringValue(s[i])) })
	}
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v.String()}}
}

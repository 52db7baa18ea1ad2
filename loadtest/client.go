package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// HeaderNode is the response header herd's gateway names the serving node in.
const HeaderNode = "X-Herd-Node"

// maxResponseBytes bounds a non-streaming response body read by the generator.
const maxResponseBytes = 64 << 20

// ErrorKind classifies a failed request.
type ErrorKind string

// Error kinds.
const (
	// ErrConnect: no response at all (refused, reset, closed before the headers).
	ErrConnect ErrorKind = "connect"
	// ErrTimeout: the request ran past Options.RequestTimeout.
	ErrTimeout ErrorKind = "timeout"
	// ErrHTTP4xx and ErrHTTP5xx: the server answered with that class of status.
	ErrHTTP4xx ErrorKind = "http_4xx"
	ErrHTTP5xx ErrorKind = "http_5xx"
	// ErrStreamBroken: a 200 whose SSE stream carried an error event, a malformed chunk, or ended
	// without [DONE] or mid-read.
	ErrStreamBroken ErrorKind = "stream_error"
	// ErrBadResponse: a 200 whose non-streaming body was not a completion.
	ErrBadResponse ErrorKind = "bad_response"
	// ErrCanceled: still running when the drain after the run ended ran out.
	ErrCanceled ErrorKind = "canceled"
	// ErrDropped: an open-loop arrival not sent because MaxInFlight requests were outstanding.
	ErrDropped ErrorKind = "dropped"
)

// Sample is what one request measured. Offsets are from the start of the run.
type Sample struct {
	// Index is the request's number in the workload (its body is a function of it and the seed).
	Index uint64
	// Start is when it was sent; Latency is send to last byte.
	Start   time.Duration
	Latency time.Duration
	// TTFT is send to first content delta (streaming) or the latency (non-streaming).
	TTFT time.Duration
	// ITL holds the gaps between consecutive content deltas (streaming only).
	ITL []time.Duration
	// PromptTokens and OutputTokens come from the server's usage (or counted deltas).
	PromptTokens, OutputTokens int
	// Streamed is true for a streaming request.
	Streamed bool
	// Status is the HTTP status (0: none).
	Status int
	// Err is empty on success.
	Err ErrorKind
	// ErrMsg says what went wrong, briefly.
	ErrMsg string
	// Node is the X-Herd-Node response header, when the target is herd.
	Node string
}

// OK reports whether the request succeeded.
func (s *Sample) OK() bool { return s.Err == "" }

// TPOT is the time per output token after the first: (latency − TTFT) ÷ (tokens − 1). It is zero
// for a non-streaming request or one with fewer than two tokens.
func (s *Sample) TPOT() time.Duration {
	if !s.Streamed || s.OutputTokens < 2 {
		return 0
	}
	return (s.Latency - s.TTFT) / time.Duration(s.OutputTokens-1)
}

// NewHTTPClient returns a client tuned for load generation: keep-alive connections to one host,
// at least maxConns of them kept idle, no proxy, no transparent gzip (it would hide streaming),
// no overall timeout (each request carries its own deadline).
func NewHTTPClient(maxConns int) *http.Client {
	if maxConns < 64 {
		maxConns = 64
	}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          maxConns,
		MaxIdleConnsPerHost:   maxConns,
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true,
		ExpectContinueTimeout: 0,
		WriteBufferSize:       16 << 10,
		ReadBufferSize:        16 << 10,
	}
	return &http.Client{Transport: tr}
}

// caller sends one workload request and measures it.
type caller struct {
	client  *http.Client
	url     string
	apiKey  string
	timeout time.Duration
	epoch   time.Time
}

// do sends body and returns its sample. runCtx is the run's context: its cancellation marks the
// request "canceled" rather than timed out.
func (c *caller) do(runCtx context.Context, idx uint64, body []byte, stream bool) Sample {
	start := time.Now()
	s := Sample{Index: idx, Start: start.Sub(c.epoch), Streamed: stream}
	since := func() time.Duration { return time.Since(start) }
	ctx, cancel := context.WithTimeout(runCtx, c.timeout)
	defer cancel()
	fail := func(kind ErrorKind, err error) Sample {
		s.Latency = since()
		s.Err = kind
		if err != nil {
			s.ErrMsg = err.Error()
		}
		if runCtx.Err() != nil {
			s.Err = ErrCanceled
		} else if kind != ErrHTTP4xx && kind != ErrHTTP5xx && (errors.Is(err, context.DeadlineExceeded) || isTimeout(err)) {
			s.Err = ErrTimeout
		}
		return s
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return fail(ErrConnect, err)
	}
	req.Header.Set("Content-Type", "application/json")
	if stream {
		req.Header.Set("Accept", "text/event-stream")
	}
	if c.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return fail(ErrConnect, err)
	}
	defer resp.Body.Close()
	s.Status = resp.StatusCode
	s.Node = resp.Header.Get(HeaderNode)
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<10))
		kind := ErrHTTP5xx
		if resp.StatusCode < 500 {
			kind = ErrHTTP4xx
		}
		return fail(kind, fmt.Errorf("HTTP %d: %s", resp.StatusCode, errorMessage(b)))
	}
	if stream {
		st, err := parseStream(resp.Body, since)
		s.Latency = since()
		s.ITL = st.ITL
		if st.HasFirst {
			s.TTFT = st.First
		}
		s.OutputTokens = st.Deltas
		if st.Usage != nil {
			s.PromptTokens = st.Usage.PromptTokens
			if st.Usage.CompletionTokens > 0 {
				s.OutputTokens = st.Usage.CompletionTokens
			}
		}
		if err != nil {
			if errors.Is(err, errStream) {
				return fail(ErrStreamBroken, err)
			}
			return fail(ErrStreamBroken, fmt.Errorf("reading the stream: %w", err))
		}
		if !st.HasFirst {
			s.TTFT = s.Latency
		}
		return s
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	s.Latency = since()
	s.TTFT = s.Latency
	if err != nil {
		return fail(ErrConnect, fmt.Errorf("reading the response: %w", err))
	}
	var cmp completion
	if err := json.Unmarshal(b, &cmp); err != nil {
		return fail(ErrBadResponse, fmt.Errorf("response is not JSON: %w", err))
	}
	if cmp.Error != nil {
		return fail(ErrBadResponse, fmt.Errorf("error in a 200 response: %s", cmp.Error.Message))
	}
	if len(cmp.Choices) == 0 {
		return fail(ErrBadResponse, errors.New("response has no choices"))
	}
	if cmp.Usage != nil {
		s.PromptTokens, s.OutputTokens = cmp.Usage.PromptTokens, cmp.Usage.CompletionTokens
	}
	return s
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

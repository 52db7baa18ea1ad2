package loadtest

import (
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

// tickClock returns an injected clock that advances 10ms each time it is read.
func tickClock() func() time.Duration {
	var t time.Duration
	return func() time.Duration { t += 10 * time.Millisecond; return t }
}

const (
	chunkRole  = `data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}` + "\n\n"
	chunkTok   = `data: {"choices":[{"index":0,"delta":{"content":"tok "}}]}` + "\n\n"
	chunkStop  = `data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}` + "\n\n"
	chunkUsage = `data: {"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}` + "\n\n"
	chunkDone  = "data: [DONE]\n\n"
)

func TestParseStream(t *testing.T) {
	tests := []struct {
		name       string
		in         string
		wantErr    bool
		deltas     int
		first      time.Duration
		itl        []time.Duration
		usageOut   int
		wantDone   bool
		errContain string
	}{
		{
			name:   "openai stream with usage",
			in:     chunkRole + chunkTok + chunkTok + chunkTok + chunkStop + chunkUsage + chunkDone,
			deltas: 3, first: 10 * time.Millisecond, itl: []time.Duration{10 * time.Millisecond, 10 * time.Millisecond},
			usageOut: 3, wantDone: true,
		},
		{
			name:   "CRLF lines, comments, event names and no space after the colon",
			in:     ": keep-alive\r\n\r\nevent: message\r\ndata:{\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\r\n\r\n" + chunkDone,
			deltas: 1, first: 10 * time.Millisecond, wantDone: true,
		},
		{
			name:   "legacy completions text and reasoning content count as tokens",
			in:     `data: {"choices":[{"text":"x"}]}` + "\n\n" + `data: {"choices":[{"delta":{"reasoning_content":"hmm"}}]}` + "\n\n" + chunkDone,
			deltas: 2, first: 10 * time.Millisecond, itl: []time.Duration{10 * time.Millisecond}, wantDone: true,
		},
		{
			name:   "multi-line data joined by newline",
			in:     "data: {\"choices\":\ndata: [{\"delta\":{\"content\":\"a\"}}]}\n\n" + chunkDone,
			deltas: 1, first: 10 * time.Millisecond, wantDone: true,
		},
		{
			name:   "done without a trailing blank line",
			in:     chunkTok + "data: [DONE]",
			deltas: 1, first: 10 * time.Millisecond, wantDone: true,
		},
		{
			name: "ends without DONE", in: chunkTok + chunkTok,
			wantErr: true, deltas: 2, first: 10 * time.Millisecond, itl: []time.Duration{10 * time.Millisecond}, errContain: "without [DONE]",
		},
		{
			name: "error object mid-stream", in: chunkTok + `data: {"error":{"message":"node died","type":"server_error"}}` + "\n\n",
			wantErr: true, deltas: 1, first: 10 * time.Millisecond, errContain: "node died",
		},
		{
			name: "error event", in: "event: error\ndata: {\"message\":\"boom\"}\n\n",
			wantErr: true, errContain: "error event",
		},
		{
			name: "malformed chunk", in: "data: {not json\n\n",
			wantErr: true, errContain: "malformed",
		},
		{name: "empty body", in: "", wantErr: true, errContain: "without [DONE]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := parseStream(strings.NewReader(tt.in), tickClock())
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				if !errors.Is(err, errStream) {
					t.Errorf("err %v does not wrap errStream", err)
				}
				if !strings.Contains(err.Error(), tt.errContain) {
					t.Errorf("err %q does not contain %q", err, tt.errContain)
				}
			}
			if st.Deltas != tt.deltas || st.First != tt.first || !slices.Equal(st.ITL, tt.itl) || st.Done != tt.wantDone {
				t.Errorf("stats = %+v", st)
			}
			if tt.usageOut > 0 && (st.Usage == nil || st.Usage.CompletionTokens != tt.usageOut || st.Usage.PromptTokens != 12) {
				t.Errorf("usage = %+v", st.Usage)
			}
		})
	}
}

func TestParseStreamLineTooLong(t *testing.T) {
	in := "data: " + strings.Repeat("x", maxSSELine+10) + "\n\n"
	_, err := parseStream(strings.NewReader(in), tickClock())
	if !errors.Is(err, errStream) || !strings.Contains(err.Error(), "longer") {
		t.Errorf("err = %v, want a too-long stream error", err)
	}
}

func TestParseStreamReadError(t *testing.T) {
	r := io.MultiReader(strings.NewReader(chunkTok), errReader{})
	_, err := parseStream(r, tickClock())
	if err == nil || errors.Is(err, errStream) {
		t.Errorf("err = %v, want the reader's error unwrapped as a transport error", err)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

func TestErrorMessage(t *testing.T) {
	if got := errorMessage([]byte(`{"error":{"message":"no node","type":"x"}}`)); got != "no node" {
		t.Errorf("got %q", got)
	}
	if got := errorMessage([]byte("  plain text\n")); got != "plain text" {
		t.Errorf("got %q", got)
	}
}

// FuzzParseStream feeds arbitrary bytes to the SSE parser: it must not panic, and what it
// reports must be consistent whatever the input.
func FuzzParseStream(f *testing.F) {
	f.Add(chunkRole + chunkTok + chunkStop + chunkUsage + chunkDone)
	f.Add("data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":{\"completion_tokens\":-5}}\n\ndata: [DONE]")
	f.Add("event: error\ndata: x\n\n")
	f.Add(":\r\n\r\ndata\ndata:\n\n")
	f.Add("data: {\"error\":null,\"choices\":null}\n\n")
	f.Add(`data: {"usage":{"prompt_tokens":1e99}}` + "\n\n")
	f.Fuzz(func(t *testing.T, in string) {
		st, err := parseStream(strings.NewReader(in), tickClock())
		if st.Deltas < 0 || len(st.ITL) != max(st.Deltas-1, 0) {
			t.Fatalf("deltas %d with %d gaps", st.Deltas, len(st.ITL))
		}
		if st.Deltas > 0 && (!st.HasFirst || st.Last < st.First) {
			t.Fatalf("deltas without a consistent first/last: %+v", st)
		}
		for _, g := range st.ITL {
			if g <= 0 {
				t.Fatalf("non-positive gap %v", g)
			}
		}
		if err == nil && !st.Done {
			t.Fatal("no error but no [DONE]")
		}
	})
}

// FuzzErrorMessage checks the error-body reader never panics and stays short for non-JSON.
func FuzzErrorMessage(f *testing.F) {
	f.Add([]byte(`{"error":{"message":"x"}}`))
	f.Add([]byte(`{"error":"string"}`))
	f.Add([]byte("<html>"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = errorMessage(b)
	})
}

package gateway

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/scheduler"
)

// chunkBody hands out its chunks one per Read (a chunk longer than the buffer over several), as
// an agent's answer arrives, and records every read: the space it was given and what it got.
type chunkBody struct {
	chunks [][]byte
	reads  [][2]int
}

func (b *chunkBody) Read(p []byte) (int, error) {
	if len(b.chunks) == 0 {
		b.reads = append(b.reads, [2]int{len(p), 0})
		return 0, io.EOF
	}
	n := copy(p, b.chunks[0])
	if b.chunks[0] = b.chunks[0][n:]; len(b.chunks[0]) == 0 {
		b.chunks = b.chunks[1:]
	}
	b.reads = append(b.reads, [2]int{len(p), n})
	return n, nil
}

func (b *chunkBody) Close() error { return nil }

// writeLog is a sink that keeps every Write apart.
type writeLog struct {
	*httptest.ResponseRecorder
	writes [][]byte
}

func (w *writeLog) Write(p []byte) (int, error) {
	w.writes = append(w.writes, bytes.Clone(p))
	return w.ResponseRecorder.Write(p)
}

// sseEvent is one SSE event of about size bytes.
func sseEvent(i, size int) string {
	head := fmt.Sprintf(`data: {"i":%d,"pad":"`, i)
	return head + strings.Repeat("x", max(0, size-len(head)-4)) + "\"}\n\n"
}

// TestRelayBuffers relays answers that arrive in pieces of every size through the call's small
// buffer and the pooled large one: the client gets every byte in order, streams get whole events
// per write (but for an event larger than the large buffer), a read after one that did not fill
// its buffer goes into the small buffer (what a stream waiting for its next token holds), and no
// large buffer is kept once the relay returns.
func TestRelayBuffers(t *testing.T) {
	tokens := make([][]byte, 20)
	for i := range tokens {
		tokens[i] = []byte(sseEvent(i, 300))
	}
	var burst strings.Builder
	for i := range 200 {
		burst.WriteString(sseEvent(i, 300))
	}
	mid := sseEvent(1, 5000)
	huge := sseEvent(2, 40<<10)
	plain := bytes.Repeat([]byte(`{"k":"v"},`), 10<<10)
	ndjson := []byte(strings.Repeat(`{"message":{"content":"tok"},"done":false}`+"\n", 300))

	for _, tc := range []struct {
		name   string
		ctype  string
		chunks [][]byte
		// wholeEvents: every write ends on an event boundary.
		wholeEvents bool
		// noBig: the large buffer is never needed.
		noBig bool
		// longEvents: an event is longer than the small buffer, so a partial one may keep the
		// large buffer between reads.
		longEvents bool
	}{
		{"tokens one per read", "text/event-stream", tokens, true, true, false},
		{"a burst of events, then a token", "text/event-stream", [][]byte{[]byte(burst.String()), tokens[0]}, true, false, false},
		{"an event longer than the small buffer, split", "text/event-stream",
			[][]byte{[]byte(mid[:1000]), []byte(mid[1000:3000]), []byte(mid[3000:]), tokens[1]}, true, false, true},
		{"tokens split across reads", "text/event-stream",
			[][]byte{tokens[0][:100], append(bytes.Clone(tokens[0][100:]), tokens[1][:7]...), tokens[1][7:], tokens[2]}, true, true, false},
		{"an event longer than the large buffer", "text/event-stream", [][]byte{[]byte(huge), tokens[3]}, false, false, true},
		{"a plain body", "application/json", [][]byte{plain}, false, false, false},
		{"NDJSON lines", "application/x-ndjson", [][]byte{ndjson[:5000], ndjson[5000:]}, false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newCoreGW(t, nil)
			var want []byte
			for _, c := range tc.chunks {
				want = append(want, c...)
			}
			body := &chunkBody{}
			for _, c := range tc.chunks {
				body.chunks = append(body.chunks, bytes.Clone(c))
			}
			resp := &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {tc.ctype}}, Body: body}
			k := g.s.getCall(context.Background(), agentapi.PathChatCompletions, agentapi.ClassInteractive)
			defer putCall(k)
			var wd watchdog
			wd.arm(time.Minute, func() {}, g.s, "a")
			defer wd.stop()
			w := &writeLog{ResponseRecorder: httptest.NewRecorder()}

			if got := k.relay(&scheduler.Node{ID: "a"}, resp, w, &wd); got != outcomeDone {
				t.Fatalf("relay = %v, want done", got)
			}
			if k.big != nil {
				t.Error("the call still holds a large buffer after the relay")
			}
			if got := w.Body.Bytes(); !bytes.Equal(got, want) {
				t.Fatalf("relayed %d bytes, want %d (first difference at %d)", len(got), len(want), firstDiff(got, want))
			}
			for i, wr := range w.writes {
				if tc.wholeEvents && !bytes.HasSuffix(wr, sseEventEnd) {
					t.Errorf("write %d of %d bytes does not end an event: %q", i, len(wr), wr[max(0, len(wr)-20):])
				}
			}
			big := false
			for i, r := range body.reads {
				big = big || r[0] > relaySmall
				// A read that got less than its space leaves the answer waiting for more: the
				// next read goes into the small buffer when what is kept of an event fits it.
				if i > 0 && !tc.longEvents && body.reads[i-1][1] < body.reads[i-1][0] && r[0] > relaySmall {
					t.Errorf("read %d waits with %d bytes of space after a read that did not fill its buffer (reads %v)", i, r[0], body.reads)
				}
			}
			if tc.noBig && big {
				t.Errorf("reads took the large buffer: reads %v", body.reads)
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

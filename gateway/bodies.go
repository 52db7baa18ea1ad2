package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/gin-gonic/gin"
)

// Request bodies: how long a client may take to send one, how much memory it may make the
// gateway hold, and what a broken one is answered with.
//
// Decisions:
//   - A body is read into a buffer that grows as data arrives (doubling from 16 KiB, never
//     past what came plus the limit check): the Content-Length a client announces is only
//     checked against MaxBodyBytes, never allocated. So a client announcing 1 MiB and sending
//     nothing holds 16 KiB at most, however many such clients there are.
//   - Every body read has a deadline, the earliest of three (bodyLimits): BodyReadTimeout after
//     the last data arrived (idle: a client that stops sending is cut); BodyReadTimeout plus
//     the time the bytes received so far take at BodyMinRate, counted from the end of the
//     headers (min_rate: a deadline that only grows as fast as data comes, so a client
//     trickling a byte now and then — which renews an idle timeout forever — is cut within
//     BodyReadTimeout / (1 − its rate / BodyMinRate), about BodyReadTimeout for a trickle); and
//     BodyMaxDuration after the headers (max_duration: no body, however steady, holds a
//     connection longer). A large upload on a slow but honest link stays well above the
//     minimum rate. The deadline is lifted as soon as the body is read, so it never cuts a long
//     streamed answer. Each cut is counted by its reason (herd_request_bodies_cut_total).
//   - A body that breaks off (the client closed the connection, a deadline passed, a truncated
//     chunked or multipart body) is a 400 to a client that can still hear it, logged as 499 when
//     it is gone; never a 500.

// readDeadliner is the part of net/http's ResponseWriter that sets the connection's read
// deadline (what http.ResponseController calls, without allocating one per request).
type readDeadliner interface{ SetReadDeadline(time.Time) error }

// Reasons a body was cut, for herd_request_bodies_cut_total.
const (
	cutIdle        = "idle"
	cutMinRate     = "min_rate"
	cutMaxDuration = "max_duration"
)

// bodyLimits are the three deadlines of a request body (see the decisions above); a zero or
// negative minRate or maxDuration turns that one off.
type bodyLimits struct {
	idle        time.Duration
	minRate     int64
	maxDuration time.Duration
	// cut, when set, counts a body cut by a deadline, by reason.
	cut func(reason string)
}

// deadline is the deadline for the next read of a body whose headers ended at start, of which
// read bytes have arrived, at now; and which of the limits set it.
func (l bodyLimits) deadline(start, now time.Time, read int64) (time.Time, string) {
	dl, why := now.Add(l.idle), cutIdle
	if l.minRate > 0 {
		// read/minRate seconds, in nanoseconds without overflowing for any body size.
		earned := time.Duration(float64(read) / float64(l.minRate) * float64(time.Second))
		if r := start.Add(l.idle + earned); r.Before(dl) {
			dl, why = r, cutMinRate
		}
	}
	if l.maxDuration > 0 {
		if m := start.Add(l.maxDuration); m.Before(dl) {
			dl, why = m, cutMaxDuration
		}
	}
	return dl, why
}

// deadlineBody sets the connection's read deadline before each read of a request body and
// clears it at the end of the body.
type deadlineBody struct {
	body   io.ReadCloser
	rc     readDeadliner
	limits bodyLimits
	start  time.Time
	read   int64
	done   bool
}

func (d *deadlineBody) Read(p []byte) (int, error) {
	if d.done {
		return d.body.Read(p)
	}
	dl, why := d.limits.deadline(d.start, time.Now(), d.read)
	_ = d.rc.SetReadDeadline(dl)
	n, err := d.body.Read(p)
	d.read += int64(n)
	switch {
	case err == io.EOF:
		// The body is over: lift the deadline, or the server's background read of the
		// connection would hit it and cancel a long answer's context.
		_ = d.rc.SetReadDeadline(time.Time{})
		d.done = true
	case err != nil:
		// A broken body: keep the connection's reads failing at once, so that the server's own
		// drain of the rest of the body (before it writes the answer) does not wait forever.
		_ = d.rc.SetReadDeadline(time.Now())
		d.done = true
		if isTimeout(err) && d.limits.cut != nil {
			d.limits.cut(why)
		}
	}
	return n, err
}

func (d *deadlineBody) Close() error { return d.body.Close() }

// withBodyDeadline wraps h so that request bodies are read under limits. A ResponseWriter that
// cannot set deadlines (a test recorder) leaves the body as it is.
func withBodyDeadline(h http.Handler, limits bodyLimits) http.Handler {
	if limits.idle <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
			// Set now too: a handler that answers without reading the body (401, 413) leaves it
			// to the server to drain, and that drain must not wait on a stalled client either.
			start := time.Now()
			dl, _ := limits.deadline(start, start, 0)
			if rd, ok := w.(readDeadliner); ok && rd.SetReadDeadline(dl) == nil {
				r.Body = &deadlineBody{body: r.Body, rc: rd, limits: limits, start: start}
			}
		}
		h.ServeHTTP(w, r)
	})
}

// errTooLarge is the 413 for a body over limit bytes.
func errTooLarge(limit int64) *APIError {
	return &APIError{Status: http.StatusRequestEntityTooLarge, Type: errInvalidRequest, Code: "request_too_large",
		Message: fmt.Sprintf("The request body is too large: the limit is %d bytes.", limit)}
}

// errBrokenBody is the 400 for a body that could not be read to its end.
func errBrokenBody(err error) *APIError {
	msg := "The request body ended before it was complete"
	if isTimeout(err) {
		msg = "The request body was not sent in time"
	}
	return &APIError{Status: http.StatusBadRequest, Type: errInvalidRequest, Code: "incomplete_request_body", Message: msg + "."}
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &te) && te.Timeout())
}

// bodyChunk is the first buffer a body is read into.
const bodyChunk = 16 << 10

// readBody reads the whole request body, bounded by MaxBodyBytes, into a buffer that grows as
// data arrives.
func (s *Server) readBody(r *http.Request) ([]byte, *APIError) {
	limit := s.cfg.MaxBodyBytes
	if r.ContentLength > limit {
		return nil, errTooLarge(limit)
	}
	b, err := readGrowingSized(r.Body, limit, r.ContentLength)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errTooLarge(limit)
		}
		return nil, errBrokenBody(err)
	}
	return b, nil
}

// readGrowing reads r to its end into a buffer that starts small and doubles as data arrives;
// more than limit bytes is an *http.MaxBytesError.
func readGrowing(r io.Reader, limit int64) ([]byte, error) { return readGrowingSized(r, limit, -1) }

// readGrowingSized is readGrowing for a body that announced size bytes (-1: unknown): a small
// announced body gets a buffer of its size (plus one byte, to see the end without growing), but
// never more than bodyChunk up front, whatever the announcement.
func readGrowingSized(r io.Reader, limit, size int64) ([]byte, error) {
	first := min(int64(bodyChunk), limit+1)
	if size >= 0 {
		first = min(first, size+1)
	}
	b := make([]byte, 0, first)
	for {
		if len(b) == cap(b) {
			grown := min(int64(cap(b))*2, limit+1)
			if grown <= int64(cap(b)) {
				return nil, &http.MaxBytesError{Limit: limit}
			}
			nb := make([]byte, len(b), grown)
			copy(nb, b)
			b = nb
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if int64(len(b)) > limit {
			return nil, &http.MaxBytesError{Limit: limit}
		}
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// decodeJSONBody decodes a small JSON body (admin and batch requests) bounded by limit.
func decodeJSONBody(c *gin.Context, limit int64, v any) *APIError {
	if c.Request.ContentLength > limit {
		return errTooLarge(limit)
	}
	b, err := readGrowing(c.Request.Body, limit)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errTooLarge(limit)
		}
		return errBrokenBody(err)
	}
	if err := json.Unmarshal(stripBOM(b), v); err != nil {
		return badRequest("invalid_json", "", "request body is not valid JSON: %v", err)
	}
	return nil
}

// stripBOM drops a UTF-8 byte order mark at the start of b.
func stripBOM(b []byte) []byte {
	if len(b) >= 3 && b[0] == 0xEF && b[1] == 0xBB && b[2] == 0xBF {
		return b[3:]
	}
	return b
}

// clientGone reports whether the request's client went away (its context ended).
func clientGone(ctx context.Context) bool { return ctx.Err() != nil }

package backend

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// h1Transport is the agent's HTTP/1.1 client for the inference hot path to a plain-http backend.
// It does what NewTransport's http.Transport does for these requests, without goroutines of its
// own: net/http's Transport runs a read loop and a write loop goroutine for every connection as
// long as it lives (to notice a backend closing an idle connection, and to write a body while
// reading the answer), and with ten thousand slow streams open that was two goroutine stacks per
// stream. Here the caller's goroutine writes the request and then reads the answer from the
// connection; a cancelled context closes the connection (context.AfterFunc, no goroutine until
// it fires); a write buffer is taken from a pool only while the request is written, so a stream
// waiting for its next token holds its connection and a 4 KiB read buffer, nothing more.
//
// An idle connection the backend closed is found when it is next used: when the write fails, or
// the answer ends before its first byte, on a connection that had served a request before, the
// request is sent once more on a new connection (its body is replayable: GetBody). net/http
// resends in that case too, having seen the close in its read loop.
//
// https backends, and requests it does not make (a body without GetBody, other protocols), go
// to next, the http.Transport.
type h1Transport struct {
	dialer      net.Dialer
	next        http.RoundTripper
	maxIdle     int
	idleTimeout time.Duration
	now         func() time.Time

	mu   sync.Mutex
	idle map[string][]*h1Conn // by host:port, most recently used last
	// reaper closes connections idle longer than idleTimeout (armed while any are idle), so a
	// backend's closed keep-alive connections do not linger here when no request comes.
	reaper *time.Timer

	writers sync.Pool // *bufio.Writer
}

var _ http.RoundTripper = (*h1Transport)(nil)

// newH1Transport returns the hot path's transport, falling back to next.
func newH1Transport(next http.RoundTripper) *h1Transport {
	return &h1Transport{
		dialer:      net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second},
		next:        next,
		maxIdle:     512,
		idleTimeout: 90 * time.Second,
		now:         time.Now,
		idle:        map[string][]*h1Conn{},
	}
}

// h1Conn is one backend connection and its read buffer.
type h1Conn struct {
	net.Conn
	br        *bufio.Reader
	idleSince time.Time
	// used is true once it has carried a whole request and answer.
	used bool
}

// RoundTrip sends req and returns the backend's answer; its body reads from the connection.
func (t *h1Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "http" || req.URL.Host == "" || (req.Body != nil && req.Body != http.NoBody && req.GetBody == nil) {
		return t.next.RoundTrip(req)
	}
	addr := req.URL.Host
	if req.URL.Port() == "" {
		addr = net.JoinHostPort(req.URL.Hostname(), "80")
	}
	for attempt := 0; ; attempt++ {
		c, err := t.conn(req.Context(), addr)
		if err != nil {
			return nil, err
		}
		resp, retry, err := t.send(c, req, addr)
		if err == nil {
			return resp, nil
		}
		if !retry || !c.used || attempt > 0 || req.Context().Err() != nil {
			return nil, err
		}
		// The backend had closed this idle connection: once more, on a new one.
		body, gerr := req.GetBody()
		if gerr != nil {
			return nil, errors.Join(err, gerr)
		}
		req = req.Clone(req.Context())
		req.Body = body
	}
}

// conn takes an idle connection to addr that has not idled too long, or dials one.
func (t *h1Transport) conn(ctx context.Context, addr string) (*h1Conn, error) {
	now := t.now()
	t.mu.Lock()
	for list := t.idle[addr]; len(list) > 0; list = t.idle[addr] {
		c := list[len(list)-1]
		list[len(list)-1] = nil
		t.idle[addr] = list[:len(list)-1]
		if now.Sub(c.idleSince) < t.idleTimeout {
			t.mu.Unlock()
			return c, nil
		}
		c.Close()
	}
	t.mu.Unlock()
	nc, err := t.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &h1Conn{Conn: nc, br: bufio.NewReaderSize(nc, 4<<10)}, nil
}

// put keeps c for the next request, or closes it when enough are idle.
func (t *h1Transport) put(addr string, c *h1Conn) {
	c.used, c.idleSince = true, t.now()
	t.mu.Lock()
	if len(t.idle[addr]) < t.maxIdle {
		t.idle[addr] = append(t.idle[addr], c)
		if t.reaper == nil {
			t.reaper = time.AfterFunc(t.idleTimeout, t.reap)
		}
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	c.Close()
}

// reap closes the connections idle for idleTimeout or longer (the oldest are first in each
// list) and looks again later while any are left.
func (t *h1Transport) reap() {
	now := t.now()
	var old []*h1Conn
	t.mu.Lock()
	for addr, list := range t.idle {
		n := 0
		for n < len(list) && now.Sub(list[n].idleSince) >= t.idleTimeout {
			n++
		}
		old = append(old, list[:n]...)
		if n == len(list) {
			delete(t.idle, addr)
		} else if n > 0 {
			t.idle[addr] = append([]*h1Conn(nil), list[n:]...)
		}
	}
	if len(t.idle) > 0 {
		t.reaper.Reset(t.idleTimeout)
	} else {
		t.reaper = nil
	}
	t.mu.Unlock()
	for _, c := range old {
		c.Close()
	}
}

// CloseIdleConnections closes the idle connections, its own and next's.
func (t *h1Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = map[string][]*h1Conn{}
	if t.reaper != nil {
		t.reaper.Stop()
		t.reaper = nil
	}
	t.mu.Unlock()
	for _, list := range idle {
		for _, c := range list {
			c.Close()
		}
	}
	if ci, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// send writes req on c (to addr) and reads the answer's head. retry says whether the failure could be a
// backend that had closed the connection before this request reached it: the write failed, or
// the connection ended before the answer's first byte.
func (t *h1Transport) send(c *h1Conn, req *http.Request, addr string) (*http.Response, bool, error) {
	ctx := req.Context()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	fail := func(err error, retry bool) (*http.Response, bool, error) {
		stop()
		c.Close()
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return nil, retry, err
	}
	bw, _ := t.writers.Get().(*bufio.Writer)
	if bw == nil {
		bw = bufio.NewWriterSize(c, 4<<10)
	} else {
		bw.Reset(c)
	}
	err := req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	bw.Reset(nil)
	t.writers.Put(bw)
	if err != nil {
		return fail(fmt.Errorf("writing the request: %w", err), true)
	}
	for {
		resp, err := http.ReadResponse(c.br, req)
		if err != nil {
			first := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)
			return fail(fmt.Errorf("reading the answer: %w", err), first && c.br.Buffered() == 0)
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue // informational: the answer follows
		}
		reuse := !resp.Close && !req.Close
		resp.Body = &h1Body{rc: resp.Body, c: c, t: t, addr: addr, stop: stop, reuse: reuse}
		return resp, false, nil
	}
}

// h1Body is an answer's body on its connection: read to the end, it gives the connection back
// for the next request; closed before, it closes the connection, whose framing is lost.
type h1Body struct {
	rc    io.ReadCloser
	c     *h1Conn
	t     *h1Transport
	addr  string
	stop  func() bool
	reuse bool
	mu    sync.Mutex
	done  bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.finish(true)
	}
	return n, err
}

// Close ends the body; before its end the connection is closed.
func (b *h1Body) Close() error {
	b.finish(false)
	return nil
}

func (b *h1Body) finish(atEOF bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	b.done = true
	// stop reports false once the context's close ran (or runs): the connection is gone then.
	if b.stop() && atEOF && b.reuse {
		b.t.put(b.addr, b.c)
		return
	}
	b.c.Close()
}

package backend

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// postTo builds a replayable POST, as the proxy does.
func postTo(ctx context.Context, t *testing.T, url, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// TestH1StreamsOnTheCallersGoroutine: a chunked stream arrives event by event (the backend sends
// the next only after the client read the last), no goroutine of a net/http client connection
// exists while it waits, and the connection serves the next request once the body is read.
func TestH1StreamsOnTheCallersGoroutine(t *testing.T) {
	step := make(chan struct{})
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			if i > 0 {
				<-step
			}
			fmt.Fprintf(w, "data: %s %d\n\n", body, i)
			w.(http.Flusher).Flush()
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	tr := newH1Transport(failTransport{t})
	t.Cleanup(tr.CloseIdleConnections)

	before := clientConnLoops() // other tests' idle connections may hold some
	for round := range 2 {
		resp, err := tr.RoundTrip(postTo(context.Background(), t, srv.URL+"/v1/chat/completions", "hi"))
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(resp.Body)
		for i := range 3 {
			if i > 0 {
				step <- struct{}{}
			}
			line, err := br.ReadString('\n')
			if want := fmt.Sprintf("data: hi %d\n", i); err != nil || line != want {
				t.Fatalf("round %d event %d: %q, %v; want %q", round, i, line, err, want)
			}
			_, _ = br.ReadString('\n')
			if i == 1 && round == 0 {
				if n := clientConnLoops(); n > before {
					t.Errorf("%d net/http client connection goroutines while the stream waits, %d before it", n, before)
				}
			}
		}
		if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
			t.Fatalf("after the events: %q, %v", rest, err)
		}
		resp.Body.Close()
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for two requests in turn, want 1 (kept alive)", n)
	}
}

// clientConnLoops counts the goroutines of net/http client connections (their read and write
// loops).
func clientConnLoops() int {
	var stacks bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&stacks, 2)
	return strings.Count(stacks.String(), "net/http.(*persistConn).readLoop(") + strings.Count(stacks.String(), "net/http.(*persistConn).writeLoop(")
}

// failTransport is a next transport that must not be used.
type failTransport struct{ t *testing.T }

func (f failTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	f.t.Errorf("request to %s went to the fallback transport", r.URL)
	return nil, fmt.Errorf("not here")
}

// TestH1ResendsOnAConnectionTheBackendClosed: a backend that closes a kept-alive connection
// while it idles (its keep-alive timeout) costs the next request nothing: it goes again on a new
// connection. A connection that never served a request is not retried.
func TestH1ResendsOnAConnectionTheBackendClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var conns, answered atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func(c net.Conn) {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				body, _ := io.ReadAll(req.Body)
				answered.Add(1)
				// Keep-alive promised, then the connection is closed: one request per connection.
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			}(c)
		}
	}()
	tr := newH1Transport(failTransport{t})
	t.Cleanup(tr.CloseIdleConnections)
	url := "http://" + ln.Addr().String() + "/v1/embeddings"
	for i := range 3 {
		resp, err := tr.RoundTrip(postTo(context.Background(), t, url, fmt.Sprintf(`{"n":%d}`, i)))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf(`{"n":%d}`, i); err != nil || string(got) != want {
			t.Fatalf("request %d: %q, %v", i, got, err)
		}
		time.Sleep(10 * time.Millisecond) // lets the server's close land before the next request
	}
	if a, c := answered.Load(), conns.Load(); a != 3 || c < 3 {
		t.Errorf("%d answered on %d connections, want 3 on 3 or more", a, c)
	}
}

// TestH1CancelAndEarlyClose: a cancelled context ends a waiting read at once and the connection
// with it; a body closed before its end is not reused (its framing is lost), and the next request
// works on a new connection.
func TestH1CancelAndEarlyClose(t *testing.T) {
	release := make(chan struct{})
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/quick" {
			_, _ = io.WriteString(w, "ok")
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(func() { close(release); srv.Close() })
	tr := newH1Transport(failTransport{t})
	t.Cleanup(tr.CloseIdleConnections)

	ctx, cancel := context.WithCancel(context.Background())
	resp, err := tr.RoundTrip(postTo(ctx, t, srv.URL+"/slow", "x"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := resp.Body.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "data: first") {
		t.Fatalf("first read %q, %v", buf[:n], err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := resp.Body.Read(buf)
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the read after the cancel succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a cancelled context did not end the read")
	}
	resp.Body.Close()

	// A body closed early: the next request dials anew.
	resp, err = tr.RoundTrip(postTo(context.Background(), t, srv.URL+"/slow", "x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp, err = tr.RoundTrip(postTo(context.Background(), t, srv.URL+"/quick", "x"))
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "ok" {
		t.Fatalf("after an early close: %q, %v", b, err)
	}
	resp.Body.Close()
	if n := conns.Load(); n != 3 {
		t.Errorf("%d connections, want 3 (none reused after a cancel or an early close)", n)
	}
}

// recordTransport records the requests it is given.
type recordTransport struct{ urls []string }

func (r *recordTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r.urls = append(r.urls, req.URL.String())
	return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Request: req}, nil
}

// TestH1FallsBack: https, and a body that cannot be sent twice, go to the next transport.
func TestH1FallsBack(t *testing.T) {
	next := &recordTransport{}
	tr := newH1Transport(next)
	req, _ := http.NewRequest(http.MethodGet, "https://backend.example/v1/models", nil)
	if _, err := tr.RoundTrip(req); err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	defer pw.Close()
	req, _ = http.NewRequest(http.MethodPost, "http://127.0.0.1:1/v1/chat/completions", pr)
	if _, err := tr.RoundTrip(req); err != nil {
		t.Fatal(err)
	}
	if len(next.urls) != 2 {
		t.Fatalf("fallback got %v, want both requests", next.urls)
	}
}

// TestH1ClosesIdleConnections: a connection idle for the idle timeout is closed without another
// request coming.
func TestH1ClosesIdleConnections(t *testing.T) {
	closed := make(chan struct{}, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed <- struct{}{}
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	tr := newH1Transport(failTransport{t})
	tr.idleTimeout = 20 * time.Millisecond
	t.Cleanup(tr.CloseIdleConnections)
	resp, err := tr.RoundTrip(postTo(context.Background(), t, srv.URL+"/v1/embeddings", "x"))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the idle connection was not closed")
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.idle) != 0 || tr.reaper != nil {
		t.Errorf("after the reap: %d addresses idle, reaper %v", len(tr.idle), tr.reaper != nil)
	}
}

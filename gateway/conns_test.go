package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestBodyLimitsDeadline(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := bodyLimits{idle: 30 * time.Second, minRate: 1024, maxDuration: 15 * time.Minute}
	for _, tc := range []struct {
		name    string
		limits  bodyLimits
		elapsed time.Duration
		read    int64
		want    time.Duration // from start
		why     string
	}{
		{"at the start: idle", l, 0, 0, 30 * time.Second, cutIdle},
		{"a fast client: idle", l, 10 * time.Second, 1 << 20, 40 * time.Second, cutIdle},
		// One byte every 5 s for 45 s: 9 bytes earn 9 ms beyond the first 30 s.
		{"a trickle: min rate", l, 45 * time.Second, 9, 30*time.Second + 8789062*time.Nanosecond, cutMinRate},
		{"steady but endless: max duration", l, 14*time.Minute + 50*time.Second, 1 << 30, 15 * time.Minute, cutMaxDuration},
		{"no min rate: idle renews", bodyLimits{idle: 30 * time.Second}, 45 * time.Second, 9, 75 * time.Second, cutIdle},
	} {
		dl, why := tc.limits.deadline(start, start.Add(tc.elapsed), tc.read)
		if got := dl.Sub(start); got != tc.want || why != tc.why {
			t.Errorf("%s: deadline at %s (%s), want %s (%s)", tc.name, got, why, tc.want, tc.why)
		}
	}
}

// TestSlowBodiesCut is issue 17's slow-body reproduction at small scale: 50 connections each
// sending a request body one byte at a time, often enough that the idle timeout alone would
// never fire, are all cut (400, connection closed) within the documented bound —
// body_read_timeout / (1 − rate / body_min_rate) after their headers — and counted; with the
// minimum rate turned off the same trickle is still open well past that bound.
func TestSlowBodiesCut(t *testing.T) {
	const (
		conns    = 50
		idle     = 400 * time.Millisecond
		minRate  = 100 // bytes/s
		interval = 100 * time.Millisecond
	)
	// 10 bytes/s against a minimum of 100: cut within idle / (1 − 0.1).
	bound := idle * 10 / 9
	slack := 700 * time.Millisecond // scheduling on a loaded machine under -race

	trickle := func(addr string, stop <-chan struct{}) (time.Duration, string, error) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			return 0, "", err
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
		start := time.Now()
		closed := make(chan string, 1)
		go func() {
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			b, _ := io.ReadAll(conn)
			closed <- string(b)
		}()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case answer := <-closed:
				return time.Since(start), answer, nil
			case <-stop:
				return time.Since(start), "", nil
			case <-tick.C:
				_, _ = conn.Write([]byte(" "))
			}
		}
	}

	s, addr := serveGW(t, func(c *Config) {
		c.BodyReadTimeout, c.BodyMinRate = idle, minRate
		c.MaxConnectionsPerClient = conns + 10
	})
	var wg sync.WaitGroup
	type result struct {
		took   time.Duration
		answer string
		err    error
	}
	results := make([]result, conns)
	never := make(chan struct{})
	for i := range conns {
		wg.Go(func() {
			took, answer, err := trickle(addr, never)
			results[i] = result{took, answer, err}
		})
	}
	wg.Wait()
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("connection %d: %v", i, r.err)
		}
		if r.took > bound+slack || !strings.Contains(r.answer, "400 Bad Request") || !strings.Contains(r.answer, "incomplete_request_body") {
			t.Fatalf("connection %d: cut after %s (bound %s) with %q", i, r.took, bound, r.answer)
		}
	}
	if got := metricValue(t, s.conns.cut.WithLabelValues(cutMinRate)); got != conns {
		t.Errorf("herd_request_bodies_cut_total{reason=min_rate} = %v, want %d", got, conns)
	}

	// The control: without a minimum rate the idle timeout renews with every byte.
	_, addr = serveGW(t, func(c *Config) { c.BodyReadTimeout, c.BodyMinRate = idle, -1 })
	stop := make(chan struct{})
	time.AfterFunc(bound+2*slack, func() { close(stop) })
	took, answer, err := trickle(addr, stop)
	if err != nil || answer != "" || took < bound+slack {
		t.Fatalf("without a minimum rate the trickle ended after %s with %q (%v); the control should stay open", took, answer, err)
	}
}

// dialFrom opens a TCP connection to addr from the loopback address local.
func dialFrom(t *testing.T, local, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// served reports whether the gateway answers a request on c (rather than closing it unread).
func served(t *testing.T, c net.Conn) bool {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"); err != nil {
		return false
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// TestLoopbackNotCappedPerClient: the gateway's own host (benchmarks, a local proxy) is held
// only to the total cap.
func TestLoopbackNotCappedPerClient(t *testing.T) {
	_, addr := serveGW(t, func(c *Config) { c.MaxConnectionsPerClient, c.MaxConnections = 1, 3 })
	for i := range 3 {
		if !served(t, dialFrom(t, "127.0.0.1", addr)) {
			t.Fatalf("loopback connection %d refused under the total cap", i+1)
		}
	}
	if served(t, dialFrom(t, "127.0.0.1", addr)) {
		t.Fatal("a loopback connection was served past the total cap")
	}
}

// TestConnectionCaps: a client address holds at most MaxConnectionsPerClient connections and
// the gateway at most MaxConnections; one more is closed unanswered and counted, and a closed
// connection frees its slot.
func TestConnectionCaps(t *testing.T) {
	s, addr := serveGWWith(t, func(c *Config) { c.MaxConnectionsPerClient, c.MaxConnections = 2, 3 },
		func(s *Server) { s.conns.perLoopback = true }) // loopback stands for LAN addresses here
	a1, a2 := dialFrom(t, "127.0.0.1", addr), dialFrom(t, "127.0.0.1", addr)
	if !served(t, a1) || !served(t, a2) {
		t.Fatal("the first two connections of 127.0.0.1 were not served")
	}
	if served(t, dialFrom(t, "127.0.0.1", addr)) {
		t.Fatal("a third connection from 127.0.0.1 was served past the per-client cap of 2")
	}
	b1 := dialFrom(t, "127.0.0.2", addr)
	if !served(t, b1) {
		t.Fatal("another address was refused while under both caps")
	}
	if served(t, dialFrom(t, "127.0.0.3", addr)) {
		t.Fatal("a fourth connection was served past the total cap of 3")
	}
	a1.Close()
	waitUntil(t, "the closed connection's slot to be freed", func() bool { return metricValue(t, s.conns.open) == 2 })
	if !served(t, dialFrom(t, "127.0.0.1", addr)) {
		t.Fatal("a connection closed did not free its slot")
	}
	if got := metricValue(t, s.conns.rejected.WithLabelValues(rejectPerClient)); got != 1 {
		t.Errorf("rejected per_client = %v, want 1", got)
	}
	if got := metricValue(t, s.conns.rejected.WithLabelValues(rejectTotal)); got != 1 {
		t.Errorf("rejected total = %v, want 1", got)
	}
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestClientAddr(t *testing.T) {
	l, err := newConnLimits(Config{TrustedProxies: []string{"10.0.0.0/8", "192.168.1.5"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"direct client, no header", "203.0.113.7:5000", nil, "203.0.113.7"},
		{"direct client lying in the header", "203.0.113.7:5000", []string{"1.2.3.4"}, "203.0.113.7"},
		{"through a trusted proxy", "10.1.2.3:5000", []string{"198.51.100.9"}, "198.51.100.9"},
		{"through two trusted proxies", "192.168.1.5:5000", []string{"6.6.6.6, 198.51.100.9, 10.0.0.1"}, "198.51.100.9"},
		{"headers over several lines", "10.1.2.3:5000", []string{"6.6.6.6", "198.51.100.9"}, "198.51.100.9"},
		{"a garbled hop stops the walk", "10.1.2.3:5000", []string{"198.51.100.9, junk, 10.0.0.7"}, "10.0.0.7"},
		{"only proxies", "10.1.2.3:5000", []string{"10.0.0.9"}, "10.0.0.9"},
		{"IPv4-mapped peer", "[::ffff:10.1.2.3]:5000", []string{"198.51.100.9"}, "198.51.100.9"},
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = tc.peer
		for _, v := range tc.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := l.clientAddr(r).String(); got != tc.want {
			t.Errorf("%s: client %s, want %s", tc.name, got, tc.want)
		}
	}
	if _, err := newConnLimits(Config{TrustedProxies: []string{"not-an-address"}}, nil); err == nil {
		t.Error("a bad trusted proxy was accepted")
	}
}

// TestProxiedClientCap: behind a trusted proxy, whose own connections are not capped per
// address, the cap applies to each forwarded client's requests in flight (429 past it), and
// clients are told apart by X-Forwarded-For.
func TestProxiedClientCap(t *testing.T) {
	l, err := newConnLimits(Config{TrustedProxies: []string{"10.0.0.1"}, MaxConnectionsPerClient: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	entered := make(chan struct{}, 4)
	h := (&proxied{l: l, in: map[netip.Addr]int{}}).wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	}))
	req := func(peer, client string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = peer
		if client != "" {
			r.Header.Set("X-Forwarded-For", client)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec
	}
	var wg sync.WaitGroup
	wg.Go(func() { req("10.0.0.1:1", "198.51.100.1") })
	<-entered
	if rec := req("10.0.0.1:2", "198.51.100.1"); rec.Code != http.StatusTooManyRequests || !strings.Contains(rec.Body.String(), "too_many_connections") {
		t.Fatalf("a second request of the same forwarded client = %d %s, want 429", rec.Code, rec.Body)
	}
	wg.Go(func() { req("10.0.0.1:3", "198.51.100.2") })    // another client behind the same proxy
	wg.Go(func() { req("203.0.113.5:1", "198.51.100.1") }) // not through the proxy: not capped here
	<-entered
	<-entered
	close(release)
	wg.Wait()
	if got := metricValue(t, l.rejected.WithLabelValues(rejectPerClient)); got != 1 {
		t.Errorf("rejected per_client = %v, want 1", got)
	}
}

// FuzzClientAddr: whatever a proxy forwards, clientAddr never panics and names either the peer
// or an address from the header.
func FuzzClientAddr(f *testing.F) {
	l, err := newConnLimits(Config{TrustedProxies: []string{"10.0.0.0/8"}}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add("10.0.0.1:80", "1.2.3.4, 10.0.0.2")
	f.Add("10.0.0.1:80", ",,,")
	f.Add("[::1]:80", "::ffff:1.2.3.4")
	f.Add("junk", "1.2.3.4")
	f.Fuzz(func(t *testing.T, peer, xff string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = peer
		r.Header.Set("X-Forwarded-For", xff)
		got := l.clientAddr(r)
		if !got.IsValid() {
			return
		}
		if ap, err := netip.ParseAddrPort(peer); err == nil && ap.Addr().Unmap() == got {
			return
		}
		if !strings.Contains(xff, got.String()) && !strings.Contains(strings.ToLower(xff), got.String()) {
			// An IPv4-mapped address in the header is named unmapped.
			if !strings.Contains(xff, "::ffff:") {
				t.Fatalf("client %s is neither the peer %q nor in the header %q", got, peer, xff)
			}
		}
	})
}

// metricValue reads one counter or gauge.
func metricValue(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		t.Fatal(err)
	}
	if out.Counter != nil {
		return out.Counter.GetValue()
	}
	return out.Gauge.GetValue()
}

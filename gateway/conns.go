package gateway

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Connections: how many a client may hold, how many the gateway holds in all, and who the
// client is behind a proxy.
//
// Decisions:
//   - Caps are counted at the listener, on the raw TCP connections (before TLS, HTTP/1 or
//     HTTP/2): a connection over a cap is closed at once, without a word (no HTTP answer can be
//     written before the request, and none at all before a TLS handshake). It is counted in
//     herd_connections_rejected_total{reason} and logged at most once a second. Clients retry
//     (the OpenAI SDKs do, with backoff).
//   - The per-client cap is per peer address. A peer in Config.TrustedProxies (a load balancer,
//     a reverse proxy) is not capped per address, since its connections carry many clients; its
//     requests are counted instead per client address, the rightmost X-Forwarded-For entry that
//     is not itself a trusted proxy, and a client over the cap gets 429 too_many_connections.
//     X-Forwarded-For from any other peer is ignored: it is only what the client says.
//   - Users behind one NAT share an address: the per-client default (256) leaves room for an
//     office of SDK clients with their connection pools; raise it for larger ones.
//   - Loopback peers (the gateway's own host: herd loadtest and the benchmarks, which open
//     hundreds of connections at once, or a local reverse proxy) count only towards the total
//     cap: the per-client cap is for the LAN.
//   - Everything else that answers a request keeps counting the peer (or forwarded) address
//     that clientAddr gives, including the audit log.

// connLimits is the listener's part: the caps and the live counts.
type connLimits struct {
	max, perClient int
	trusted        []netip.Prefix
	log            *slog.Logger
	// perLoopback caps loopback peers per address too (only tests set it, to try the cap on
	// loopback addresses).
	perLoopback bool

	mu     sync.Mutex
	total  int
	byAddr map[netip.Addr]int
	// lastLog is when a rejection was last logged (unix ns), so a flood logs once a second.
	lastLog atomic.Int64

	open     prometheus.Gauge
	rejected *prometheus.CounterVec
	// cut counts request bodies cut by a deadline (bodies.go), by which one.
	cut *prometheus.CounterVec
}

// Reasons for herd_connections_rejected_total.
const (
	rejectPerClient = "per_client"
	rejectTotal     = "total"
)

func newConnLimits(cfg Config, log *slog.Logger) (*connLimits, error) {
	trusted, err := parseTrustedProxies(cfg.TrustedProxies)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &connLimits{max: cfg.MaxConnections, perClient: cfg.MaxConnectionsPerClient, trusted: trusted, log: log,
		byAddr: map[netip.Addr]int{},
		open: prometheus.NewGauge(prometheus.GaugeOpts{Name: "herd_connections_open",
			Help: "Client connections the gateway holds open now."}),
		rejected: counterVec("herd_connections_rejected_total",
			"Client connections closed at once, or proxied requests refused (429), because a cap was reached: per_client (--max-connections-per-client) or total (--max-connections).",
			"reason"),
		cut: counterVec("herd_request_bodies_cut_total",
			"Request bodies cut (400 incomplete_request_body) because the client sent too slowly: idle (--body-read-timeout), min_rate (--body-min-rate) or max_duration (--body-max-duration).",
			"reason"),
	}
	for _, r := range []string{rejectPerClient, rejectTotal} {
		l.rejected.WithLabelValues(r)
	}
	for _, r := range []string{cutIdle, cutMinRate, cutMaxDuration} {
		l.cut.WithLabelValues(r)
	}
	return l, nil
}

func (l *connLimits) collectors() []prometheus.Collector {
	return []prometheus.Collector{l.open, l.rejected, l.cut}
}

// parseTrustedProxies reads CIDRs ("10.0.0.0/8") and single addresses ("10.0.0.5").
func parseTrustedProxies(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("trusted proxy %q is neither an address nor a CIDR", s)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// isTrusted reports whether a is a trusted proxy.
func (l *connLimits) isTrusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range l.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// addrOf is the IP of a net.Addr (TCP or otherwise "host:port"); the zero Addr when none.
func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	if a == nil {
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// cappedPerClient reports whether connections from a count towards the per-client cap.
func (l *connLimits) cappedPerClient(a netip.Addr) bool {
	return l.perClient > 0 && a.IsValid() && (l.perLoopback || !a.IsLoopback()) && !l.isTrusted(a)
}

// admit counts a new connection from a, or says which cap refuses it.
func (l *connLimits) admit(a netip.Addr) (reason string) {
	capped := l.cappedPerClient(a)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max > 0 && l.total >= l.max {
		return rejectTotal
	}
	if capped && l.byAddr[a] >= l.perClient {
		return rejectPerClient
	}
	l.total++
	if capped {
		l.byAddr[a]++
	}
	l.open.Inc()
	return ""
}

// release gives back what admit counted for a connection from a.
func (l *connLimits) release(a netip.Addr) {
	capped := l.cappedPerClient(a)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if capped {
		if n := l.byAddr[a] - 1; n > 0 {
			l.byAddr[a] = n
		} else {
			delete(l.byAddr, a)
		}
	}
	l.open.Dec()
}

// reject counts (and now and then logs) a refusal.
func (l *connLimits) reject(reason string, client netip.Addr) {
	l.rejected.WithLabelValues(reason).Inc()
	now := time.Now().UnixNano()
	last := l.lastLog.Load()
	if now-last < int64(time.Second) || !l.lastLog.CompareAndSwap(last, now) {
		return
	}
	l.log.Warn("connection cap reached: refusing a client", "reason", reason, "client", client.String(),
		"max_connections", l.max, "max_connections_per_client", l.perClient)
}

// listener wraps ln (the raw TCP listener, under any TLS) with the caps.
func (l *connLimits) listener(ln net.Listener) net.Listener { return &capListener{Listener: ln, l: l} }

type capListener struct {
	net.Listener
	l *connLimits
}

// Accept returns the next connection the caps admit; the others are closed here.
func (cl *capListener) Accept() (net.Conn, error) {
	for {
		c, err := cl.Listener.Accept()
		if err != nil {
			return nil, err
		}
		a := addrOf(c.RemoteAddr())
		if reason := cl.l.admit(a); reason != "" {
			_ = c.Close()
			cl.l.reject(reason, a)
			continue
		}
		return &capConn{Conn: c, l: cl.l, addr: a}, nil
	}
}

// capConn gives its slot back when closed (once, however often Close is called).
type capConn struct {
	net.Conn
	l      *connLimits
	addr   netip.Addr
	closed atomic.Bool
}

func (c *capConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.l.release(c.addr)
	}
	return c.Conn.Close()
}

// CloseWrite half-closes a TCP connection, as net/http does before closing one it answered
// with an error, so that the client reads the answer rather than a reset.
func (c *capConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// clientAddr is the address that stands for the request's client: the peer, or, when the peer
// is a trusted proxy, the rightmost X-Forwarded-For entry that is not a trusted proxy (the
// leftmost entries are whatever the client wrote).
func (l *connLimits) clientAddr(r *http.Request) netip.Addr {
	peer := netip.Addr{}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		peer = ap.Addr().Unmap()
	}
	if !peer.IsValid() || !l.isTrusted(peer) {
		return peer
	}
	client := peer
	hops := r.Header.Values("X-Forwarded-For")
	for i := len(hops) - 1; i >= 0; i-- {
		parts := strings.Split(hops[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(parts[j]))
			if err != nil {
				return client // a garbled hop: trust nothing before it
			}
			client = a.Unmap()
			if !l.isTrusted(client) {
				return client
			}
		}
	}
	return client
}

// proxied caps, per client address, the requests in flight through trusted proxies (whose
// connections the listener does not cap per address).
type proxied struct {
	l  *connLimits
	mu sync.Mutex
	in map[netip.Addr]int
}

// wrap admits a request through a trusted proxy if its client is under the per-client cap.
func (p *proxied) wrap(h http.Handler) http.Handler {
	if p.l.perClient <= 0 || len(p.l.trusted) == 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer := netip.Addr{}
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			peer = ap.Addr().Unmap()
		}
		if !p.l.isTrusted(peer) {
			h.ServeHTTP(w, r)
			return
		}
		client := p.l.clientAddr(r)
		p.mu.Lock()
		if p.in[client] >= p.l.perClient {
			p.mu.Unlock()
			p.l.reject(rejectPerClient, client)
			writeTooManyConnections(w, p.l.perClient)
			return
		}
		p.in[client]++
		p.mu.Unlock()
		defer func() {
			p.mu.Lock()
			if n := p.in[client] - 1; n > 0 {
				p.in[client] = n
			} else {
				delete(p.in, client)
			}
			p.mu.Unlock()
		}()
		h.ServeHTTP(w, r)
	})
}

// writeTooManyConnections is the 429 for a proxied client over its cap, in the OpenAI shape.
func writeTooManyConnections(w http.ResponseWriter, limit int) {
	(&APIError{Status: http.StatusTooManyRequests, Type: "requests", Code: "too_many_connections", RetryAfter: 1,
		Message: fmt.Sprintf("Too many requests in flight from your address: the limit is %d at once.", limit)}).Write(w)
}

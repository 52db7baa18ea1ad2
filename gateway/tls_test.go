package gateway

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herd-llm/herd/gateway/api"
	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/pki"
)

const tlsTestAdmin = "admin-key-tls"

// newTLSServer is a gateway with TLS on (cluster CA in a temp data dir), no cluster token.
func newTLSServer(t testing.TB) *Server {
	t.Helper()
	s, err := New(Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", TLS: true, AdminKeys: []string{tlsTestAdmin}},
		WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func serveTLSReq(s *Server, method, path, key string, body []byte, cs *tls.ConnectionState) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.TLS = cs
	if req.TLS == nil {
		req.TLS = &tls.ConnectionState{}
	}
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, req)
	return w
}

func newToken(t testing.TB, s *Server, ttl string) string {
	t.Helper()
	b, _ := json.Marshal(api.JoinTokenRequest{TTL: ttl})
	w := serveTLSReq(s, http.MethodPost, "/admin/v1/join-tokens", tlsTestAdmin, b, nil)
	if w.Code != 200 {
		t.Fatalf("join-tokens: %d %s", w.Code, w.Body)
	}
	var jt api.JoinToken
	if err := json.Unmarshal(w.Body.Bytes(), &jt); err != nil {
		t.Fatal(err)
	}
	return jt.Token
}

func joinBody(t testing.TB, token, node, advertise string) []byte {
	t.Helper()
	key, _ := pki.NewKey()
	csr, err := pki.NewCSR(key, node)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(agentapi.JoinRequest{Token: token, NodeID: node, Advertise: advertise, CSR: string(csr)})
	return b
}

// verified is the connection state of a peer presenting certPEM, as net/http fills it in after
// the handshake verified the chain.
func verified(t testing.TB, certPEM string) *tls.ConnectionState {
	t.Helper()
	c, err := pki.ParseCertificate([]byte(certPEM))
	if err != nil {
		t.Fatal(err)
	}
	return &tls.ConnectionState{PeerCertificates: []*x509.Certificate{c}, VerifiedChains: [][]*x509.Certificate{{c}}}
}

func TestJoinRenewRevoke(t *testing.T) {
	s := newTLSServer(t)
	tok := newToken(t, s, "10m")

	w := serveTLSReq(s, http.MethodPost, agentapi.PathJoin, "", joinBody(t, tok, "gpu-a", "https://10.0.0.5:9090"), nil)
	if w.Code != 200 {
		t.Fatalf("join: %d %s", w.Code, w.Body)
	}
	var reply agentapi.JoinReply
	if err := json.Unmarshal(w.Body.Bytes(), &reply); err != nil {
		t.Fatal(err)
	}
	client, _ := pki.ParseCertificate([]byte(reply.ClientCert))
	server, _ := pki.ParseCertificate([]byte(reply.ServerCert))
	ca, _ := pki.ParseCertificate([]byte(reply.CACert))
	if pki.Fingerprint(ca) != s.CAFingerprint() {
		t.Fatal("reply's CA is not the gateway's")
	}
	for _, c := range []*x509.Certificate{client, server} {
		id, err := pki.IdentityOf(c)
		if err != nil || id != (pki.Identity{Role: pki.RoleNode, Name: "gpu-a"}) || len(c.IPAddresses) != 1 || c.IPAddresses[0].String() != "10.0.0.5" {
			t.Fatalf("certificate names %v %v (%v)", id, c.IPAddresses, err)
		}
	}

	// Bad joins: wrong secret, unknown token, malformed, an http advertise URL, a bad CSR.
	bad := strings.Replace(tok, tok[len("herdjoin1.")+13:len("herdjoin1.")+14], "x", 1)
	for name, tc := range map[string]struct {
		body []byte
		want int
	}{
		"wrong token":    {joinBody(t, bad, "gpu-b", "https://10.0.0.6:9090"), 401},
		"no token":       {joinBody(t, "", "gpu-b", "https://10.0.0.6:9090"), 401},
		"http advertise": {joinBody(t, tok, "gpu-b", "http://10.0.0.6:9090"), 400},
		"slash node":     {joinBody(t, tok, "gpu/b", "https://10.0.0.6:9090"), 400},
		"bad csr":        {[]byte(`{"token":"` + tok + `","node_id":"gpu-b","advertise":"https://h:1","csr":"junk"}`), 400},
		"not json":       {[]byte(`{`), 400},
	} {
		if w := serveTLSReq(s, http.MethodPost, agentapi.PathJoin, "", tc.body, nil); w.Code != tc.want {
			t.Errorf("%s: %d %s, want %d", name, w.Code, w.Body, tc.want)
		}
	}
	// Join over plain HTTP is refused: the token would cross in the clear.
	req := httptest.NewRequest(http.MethodPost, agentapi.PathJoin, bytes.NewReader(joinBody(t, tok, "gpu-c", "https://h:1")))
	w = httptest.NewRecorder()
	s.Handler().ServeHTTP(w, req)
	if w.Code != 400 {
		t.Fatalf("join without TLS: %d", w.Code)
	}

	// Renewal with the node's certificate; then a revocation refuses it, on the next request.
	cs := verified(t, reply.ClientCert)
	key, _ := pki.NewKey()
	csr, _ := pki.NewCSR(key, "gpu-a")
	rb, _ := json.Marshal(agentapi.RenewRequest{Advertise: "https://10.0.0.5:9090", CSR: string(csr)})
	if w := serveTLSReq(s, http.MethodPost, agentapi.PathRenew, "", rb, cs); w.Code != 200 {
		t.Fatalf("renew: %d %s", w.Code, w.Body)
	}
	if w := serveTLSReq(s, http.MethodPost, agentapi.PathRenew, "", rb, nil); w.Code != 401 {
		t.Fatalf("renew without a certificate: %d %s", w.Code, w.Body)
	}
	// The revocation is ordered by issue time (to the second): wait for the next second.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
	if w := serveTLSReq(s, http.MethodPost, "/admin/v1/nodes/gpu-a/revoke", tlsTestAdmin, nil, nil); w.Code != 200 {
		t.Fatalf("revoke: %d %s", w.Code, w.Body)
	}
	if w := serveTLSReq(s, http.MethodPost, agentapi.PathRenew, "", rb, cs); w.Code != 403 || !strings.Contains(w.Body.String(), agentapi.CodeNodeRevoked) {
		t.Fatalf("renew after revoke: %d %s", w.Code, w.Body)
	}
	// Joining again later with a new token is allowed, and that certificate is admitted.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
	w = serveTLSReq(s, http.MethodPost, agentapi.PathJoin, "", joinBody(t, newToken(t, s, ""), "gpu-a", "https://10.0.0.5:9090"), nil)
	if w.Code != 200 {
		t.Fatalf("join again after revocation: %d %s", w.Code, w.Body)
	}
	_ = json.Unmarshal(w.Body.Bytes(), &reply)
	if w := serveTLSReq(s, http.MethodPost, agentapi.PathRenew, "", rb, verified(t, reply.ClientCert)); w.Code != 200 {
		t.Fatalf("renew with the new certificate: %d %s", w.Code, w.Body)
	}
	// Admin routes need the admin key.
	if w := serveTLSReq(s, http.MethodPost, "/admin/v1/join-tokens", "", nil, nil); w.Code != 401 {
		t.Fatalf("join-tokens without a key: %d", w.Code)
	}
	if w := serveTLSReq(s, http.MethodPost, "/admin/v1/join-tokens", tlsTestAdmin, []byte(`{"ttl":"1000h"}`), nil); w.Code != 400 {
		t.Fatalf("join token of 1000h: %d %s", w.Code, w.Body)
	}
}

func TestTLSConfigValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		cfg  Config
		want string
	}{
		"plain without token":   {Config{Listen: "127.0.0.1:1", DataDir: "d"}, "cluster token is empty"},
		"cert without key":      {Config{Listen: "127.0.0.1:1", DataDir: "d", TLSCert: "c"}, "go together"},
		"insecure and tls":      {Config{Listen: "127.0.0.1:1", DataDir: "d", TLS: true, Insecure: true}, "contradict"},
		"redis without secret":  {Config{Listen: "127.0.0.1:1", DataDir: "d", TLS: true, RedisURL: "redis://x"}, "ca_secret"},
		"lan is tls by default": {Config{Listen: "10.0.0.1:1", DataDir: "d", APIKeys: []string{"k"}}, ""},
	} {
		err := tc.cfg.withDefaults().Validate()
		if tc.want == "" {
			if err != nil || !tc.cfg.TLSEnabled() {
				t.Errorf("%s: %v, TLS %v", name, err, tc.cfg.TLSEnabled())
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
}

// FuzzJoinEndpoint: whatever body a stranger posts to the join route, the answer is a client
// error in the OpenAI shape (never a 500, never certificates without the token).
func FuzzJoinEndpoint(f *testing.F) {
	s := newTLSServer(f)
	tok := newToken(f, s, "")
	f.Add(joinBody(f, tok, "gpu-a", "https://10.0.0.5:9090"))
	f.Add(joinBody(f, "herdjoin1.000000000000.00000000000000000000000000000000."+strings.Repeat("0", 64), "gpu-a", "https://h:1"))
	f.Add([]byte(`{"token":1}`))
	f.Add([]byte(`{"csr":"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		w := serveTLSReq(s, http.MethodPost, agentapi.PathJoin, "", body, nil)
		switch w.Code {
		case 200:
			var r agentapi.JoinRequest
			if json.Unmarshal(body, &r) != nil || r.Token != tok {
				t.Fatalf("certificates issued without the token: %q", body)
			}
		case 400, 401, 409, 413:
			var eb agentapi.ErrorBody
			if err := json.Unmarshal(w.Body.Bytes(), &eb); err != nil || eb.Error.Message == "" {
				t.Fatalf("%d without an OpenAI-shaped error: %s", w.Code, w.Body)
			}
		default:
			t.Fatalf("status %d for %q: %s", w.Code, body, w.Body)
		}
	})
}

// The request path's transport to agents speaks HTTP/2 over TLS, many streams on one connection.
func TestAgentTransportIsHTTP2(t *testing.T) {
	s := newTLSServer(t)
	var conns atomic.Int32
	agent := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond)
		_, _ = w.Write([]byte(r.Proto))
	}))
	agent.EnableHTTP2 = true
	agent.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	agent.StartTLS()
	defer agent.Close()
	conf := s.agentClientTLS()
	conf.RootCAs = x509.NewCertPool()
	conf.RootCAs.AddCert(agent.Certificate())
	conf.VerifyConnection = nil // httptest's certificate is not a node's
	rt := withAgentTLS(newAgentTransport(), conf)
	// One request opens the connection (concurrent first requests each dial one, as net/http
	// does); the next 50 at once share it.
	if req, _ := http.NewRequest(http.MethodGet, agent.URL, nil); true {
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodGet, agent.URL, nil)
			resp, err := rt.RoundTrip(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			if resp.ProtoMajor != 2 {
				t.Errorf("proto %s", resp.Proto)
			}
		})
	}
	wg.Wait()
	if n := conns.Load(); n != 1 {
		t.Fatalf("51 requests (50 at once) took %d connections, want 1", n)
	}
}

// A loopback agent that announces h2c gets HTTP/2 without TLS, on one connection; one that does
// not, or one off loopback, gets HTTP/1.1.
func TestAgentRoundTripperH2C(t *testing.T) {
	var conns atomic.Int32
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(r.Proto)) })}
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Protocols = &p
	srv.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	s := &Server{h2cHosts: &sync.Map{}}
	rt := newAgentRoundTripper(nil, s.h2cHosts)
	addr := "http://" + ln.Addr().String()
	proto := func() string {
		req, _ := http.NewRequest(http.MethodGet, addr, nil)
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return resp.Proto
	}
	if got := proto(); got != "HTTP/1.1" {
		t.Fatalf("before the agent announced h2c: %s", got)
	}
	s.noteH2C(&agentapi.Heartbeat{Address: "http://10.0.0.9:9090", H2C: true}) // not loopback: ignored
	s.noteH2C(&agentapi.Heartbeat{Address: "https://127.0.0.1:1", H2C: true})  // TLS: ignored
	s.noteH2C(&agentapi.Heartbeat{Address: addr, H2C: true})
	if got := proto(); got != "HTTP/2.0" {
		t.Fatalf("after the agent announced h2c: %s", got)
	}
	before := conns.Load()
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if got := proto(); got != "HTTP/2.0" {
				t.Errorf("after the agent announced h2c: %s", got)
			}
		})
	}
	wg.Wait()
	if n := conns.Load() - before; n != 0 {
		t.Fatalf("20 h2c requests at once on a warm connection opened %d more", n)
	}
	n := 0
	s.h2cHosts.Range(func(any, any) bool { n++; return true })
	if n != 1 {
		t.Fatalf("%d hosts recorded, want only the loopback one", n)
	}
}

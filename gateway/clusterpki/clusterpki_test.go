package clusterpki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/pki"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func open(t *testing.T, dir string, c *clock, live func(string) bool) *Authority {
	t.Helper()
	a, err := Open(context.Background(), Config{DataDir: dir, GatewayID: "gw", Hosts: []string{"127.0.0.1"}, Now: c.now,
		Log: slog.New(slog.DiscardHandler), LiveNode: live, NodeCertTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

func joinReq(t *testing.T, token, node string) agentapi.JoinRequest {
	t.Helper()
	key, _ := pki.NewKey()
	csr, _ := pki.NewCSR(key, node)
	return agentapi.JoinRequest{Token: token, NodeID: node, Advertise: "https://10.0.0.7:9090", CSR: string(csr)}
}

func state(t *testing.T, certPEM string) *tls.ConnectionState {
	t.Helper()
	c, err := pki.ParseCertificate([]byte(certPEM))
	if err != nil {
		t.Fatal(err)
	}
	return &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{c}}}
}

func TestAuthority(t *testing.T) {
	c := &clock{t: time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)}
	dir := t.TempDir()
	live := map[string]bool{"busy": true}
	a := open(t, dir, c, func(id string) bool { return live[id] })

	// The same data dir gives the same CA on the next start; tokens and revocations persist.
	tok, exp, err := a.NewJoinToken(context.Background(), 10*time.Minute)
	if err != nil || !exp.Equal(c.t.Add(10*time.Minute)) {
		t.Fatalf("token: %v %v", exp, err)
	}
	b := open(t, dir, c, nil)
	if b.Fingerprint() != a.Fingerprint() {
		t.Fatal("a restart made another CA")
	}
	r, err := b.Join(context.Background(), joinReq(t, tok, "gpu-a"))
	if err != nil {
		t.Fatalf("join on the restarted authority: %v", err)
	}
	if node, err := a.PeerNode(state(t, r.ClientCert)); err != nil || node != "gpu-a" {
		t.Fatalf("PeerNode = %q, %v", node, err)
	}
	// A server certificate is not a client certificate; a gateway's is not a node's.
	if _, err := a.PeerNode(state(t, r.ServerCert)); !errors.Is(err, ErrNoCertificate) {
		t.Fatalf("server certificate as a client: %v", err)
	}
	if _, err := a.PeerNode(nil); !errors.Is(err, ErrNoCertificate) {
		t.Fatalf("no certificate: %v", err)
	}
	if _, err := a.Join(context.Background(), joinReq(t, tok, "busy")); !errors.Is(err, ErrNodeLive) {
		t.Fatalf("joining a live node's id: %v", err)
	}
	// The token expires.
	c.t = c.t.Add(11 * time.Minute)
	if _, err := a.Join(context.Background(), joinReq(t, tok, "gpu-b")); !errors.Is(err, ErrBadToken) {
		t.Fatalf("expired token: %v", err)
	}
	if _, _, err := a.NewJoinToken(context.Background(), MaxJoinTokenTTL+time.Second); err == nil {
		t.Fatal("a token past the longest life")
	}

	// Revocation refuses certificates issued up to it, also on another authority over the same
	// store once it reads back, and not those issued later.
	c.t = c.t.Add(time.Second)
	if err := a.Revoke(context.Background(), "gpu-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.PeerNode(state(t, r.ClientCert)); !errors.Is(err, ErrRevoked) {
		t.Fatalf("after revoke: %v", err)
	}
	if _, err := b.PeerNode(state(t, r.ClientCert)); err != nil {
		t.Fatalf("the other authority before it reads back: %v", err)
	}
	if err := b.refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := b.PeerNode(state(t, r.ClientCert)); !errors.Is(err, ErrRevoked) {
		t.Fatalf("the other authority after reading back: %v", err)
	}
	c.t = c.t.Add(time.Second)
	tok2, _, _ := a.NewJoinToken(context.Background(), 0)
	r2, err := a.Join(context.Background(), joinReq(t, tok2, "gpu-a"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.PeerNode(state(t, r2.ClientCert)); err != nil {
		t.Fatalf("a certificate issued after the revocation: %v", err)
	}
}

func TestRedisNeedsSecret(t *testing.T) {
	if _, err := Open(context.Background(), Config{DataDir: t.TempDir(), RedisURL: "redis://127.0.0.1:1/0", Secret: "short"}); err == nil {
		t.Fatal("Open with Redis and a short secret")
	}
}

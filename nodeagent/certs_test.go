package nodeagent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/pki"
)

// joinedCerts writes what a join leaves in dir (a key, the CA, a client and a server
// certificate for node naming 127.0.0.1) and loads it.
func joinedCerts(t *testing.T, ca *pki.CA, node, dir string) *NodeCerts {
	t.Helper()
	key, _ := pki.NewKey()
	keyPEM, _ := pki.KeyPEM(key)
	now := time.Now()
	id := pki.Identity{Role: pki.RoleNode, Name: node}
	client, err := ca.Issue(key.Public(), id, []string{"127.0.0.1"}, x509.ExtKeyUsageClientAuth, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.Issue(key.Public(), id, []string{"127.0.0.1"}, x509.ExtKeyUsageServerAuth, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	n, err := newNodeCerts(dir, keyPEM, ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.save(client, server); err != nil {
		t.Fatal(err)
	}
	back, err := LoadNodeCerts(dir)
	if err != nil {
		t.Fatal(err)
	}
	return back
}

func clientWith(t *testing.T, ca *pki.CA, id pki.Identity) *http.Client {
	t.Helper()
	c, k, err := ca.IssueTLS(id, nil, x509.ExtKeyUsageClientAuth, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return agentapi.HTTPClient(&tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{pair}})
}

// A joined agent serves HTTPS over HTTP/2, admits a gateway's certificate, refuses a node's on
// the management routes and a caller without a certificate, and its key file is 0600.
func TestJoinedAgentServesMutualTLS(t *testing.T) {
	ca, err := pki.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "agent")
	certs := joinedCerts(t, ca, "node-a", dir)
	if st, err := os.Stat(filepath.Join(dir, nodeKeyFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st.Mode().Perm(), err)
	}
	if certs.NodeID() != "node-a" {
		t.Fatalf("node id %q", certs.NodeID())
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{NodeID: "node-a", Listen: ln.Addr().String(), Certs: certs}, &fakeBackend{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := a.Advertise(); got != "https://"+ln.Addr().String() {
		t.Fatalf("advertise %q", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })

	url := "https://" + ln.Addr().String() + agentapi.PathInfo
	gw := clientWith(t, ca, pki.Identity{Role: pki.RoleGateway, Name: "gw"})
	resp, err := gw.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("gateway certificate: %d over %s, want 200 over HTTP/2", resp.StatusCode, resp.Proto)
	}
	peer := clientWith(t, ca, pki.Identity{Role: pki.RoleNode, Name: "node-b"})
	if resp, err := peer.Get(url); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a node's certificate on /info: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	anon := agentapi.HTTPClient(&tls.Config{RootCAs: ca.Pool()})
	if resp, err := anon.Get(url); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no certificate: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if resp, err := anon.Get("https://" + ln.Addr().String() + agentapi.PathHealthz); err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz without a certificate: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
}

package nodeagent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/herd-llm/herd/atomicfile"
	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/pki"
)

// Files of a joined agent in its data dir.
const (
	nodeKeyFile    = "node.key"
	nodeClientFile = "client.crt"
	nodeServerFile = "server.crt"
)

// joinTimeout bounds the whole join exchange.
const joinTimeout = 30 * time.Second

// NodeCerts is a joined agent's key and certificates (in its data dir) and the TLS
// configurations made of them: its listener serves the server certificate and admits gateways
// (and, for model copies, peer nodes) by their client certificates of the cluster CA; its
// heartbeats and copies present the client certificate and trust the cluster CA (plus the
// system's roots, for a gateway front with a certificate of another CA).
type NodeCerts struct {
	dir    string
	key    crypto.Signer
	keyPEM []byte
	caPEM  []byte
	// roots holds the cluster CA only: who may call this agent.
	roots *x509.CertPool
	// servers holds the cluster CA and the system's roots: whom this agent calls.
	servers *x509.CertPool

	mu     sync.Mutex
	nodeID string
	client pki.Holder
	server pki.Holder
}

// LoadNodeCerts reads a joined agent's files from dir; an error wrapping os.ErrNotExist means
// the agent has not joined.
func LoadNodeCerts(dir string) (*NodeCerts, error) {
	keyPath := filepath.Join(dir, nodeKeyFile)
	if st, err := os.Stat(keyPath); err != nil {
		return nil, fmt.Errorf("agent certificates: %w", err)
	} else if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("agent certificates: %s is readable by others (mode %v): chmod 600 it", keyPath, st.Mode().Perm())
	}
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("agent certificates: %w", err)
		}
		return b, nil
	}
	keyPEM, err := read(nodeKeyFile)
	if err != nil {
		return nil, err
	}
	caPEM, err := read(pki.CACertFile)
	if err != nil {
		return nil, err
	}
	clientPEM, err := read(nodeClientFile)
	if err != nil {
		return nil, err
	}
	serverPEM, err := read(nodeServerFile)
	if err != nil {
		return nil, err
	}
	n, err := newNodeCerts(dir, keyPEM, caPEM)
	if err != nil {
		return nil, err
	}
	if err := n.install(clientPEM, serverPEM); err != nil {
		return nil, err
	}
	return n, nil
}

func newNodeCerts(dir string, keyPEM, caPEM []byte) (*NodeCerts, error) {
	key, err := pki.ParseKey(keyPEM)
	if err != nil {
		return nil, err
	}
	ca, err := pki.ParseCertificate(caPEM)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	servers, err := x509.SystemCertPool()
	if err != nil || servers == nil {
		servers = x509.NewCertPool()
	}
	servers.AddCert(ca)
	return &NodeCerts{dir: dir, key: key, keyPEM: keyPEM, caPEM: caPEM, roots: roots, servers: servers}, nil
}

// install puts a client and server certificate in service after checking they are this key's
// and name one node.
func (n *NodeCerts) install(clientPEM, serverPEM []byte) error {
	client, err := pki.KeyPair(clientPEM, n.keyPEM)
	if err != nil {
		return fmt.Errorf("agent certificates: client: %w", err)
	}
	server, err := pki.KeyPair(serverPEM, n.keyPEM)
	if err != nil {
		return fmt.Errorf("agent certificates: server: %w", err)
	}
	cid, err := pki.IdentityOf(client.Leaf)
	if err != nil {
		return fmt.Errorf("agent certificates: %w", err)
	}
	sid, err := pki.IdentityOf(server.Leaf)
	if err != nil || sid != cid || cid.Role != pki.RoleNode {
		return errors.New("agent certificates: the client and server certificates do not name the same node")
	}
	n.mu.Lock()
	n.nodeID = cid.Name
	n.mu.Unlock()
	n.client.Set(client)
	n.server.Set(server)
	return nil
}

// save writes the key (0600) and certificates into the data dir.
func (n *NodeCerts) save(clientPEM, serverPEM []byte) error {
	if err := os.MkdirAll(n.dir, 0o700); err != nil {
		return fmt.Errorf("agent certificates: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
		perm os.FileMode
	}{{nodeKeyFile, n.keyPEM, 0o600}, {pki.CACertFile, n.caPEM, 0o644}, {nodeClientFile, clientPEM, 0o644}, {nodeServerFile, serverPEM, 0o644}} {
		if err := atomicfile.Write(filepath.Join(n.dir, f.name), f.data, f.perm); err != nil {
			return fmt.Errorf("agent certificates: %w", err)
		}
	}
	return nil
}

// NodeID is the node the certificates name.
func (n *NodeCerts) NodeID() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.nodeID
}

// ClientLeaf is the client certificate in service.
func (n *NodeCerts) ClientLeaf() *x509.Certificate { return n.client.Get().Leaf }

// ServerLeaf is the server certificate in service.
func (n *NodeCerts) ServerLeaf() *x509.Certificate { return n.server.Get().Leaf }

// ServerTLS is the agent listener's configuration. Clients without a certificate get through
// the handshake (health probes); every other route checks the certificate (authenticate).
func (n *NodeCerts) ServerTLS() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: n.server.GetCertificate,
		ClientAuth:     tls.VerifyClientCertIfGiven,
		ClientCAs:      n.roots,
	}
}

// ClientTLS is the configuration of the agent's calls to gateways and peers.
func (n *NodeCerts) ClientTLS() *tls.Config {
	return agentapi.ClientTLS(n.servers, n.client.GetClientCertificate)
}

// JoinConfig is what `herd agent --join` needs.
type JoinConfig struct {
	// Gateway is the gateway's https URL.
	Gateway string
	// Token is the join token.
	Token string
	// NodeID is the node ID to ask for.
	NodeID string
	// Advertise is the agent's https URL; its host goes into the certificates.
	Advertise string
	// Dir is the agent's data dir, where the key and certificates are written.
	Dir string
}

// Join fetches the cluster CA from the gateway without trusting it, checks it against the
// fingerprint in the join token, then (trusting only that CA and the system's roots) sends a CSR
// with the token and writes the key and certificates it gets into Dir.
func Join(ctx context.Context, jc JoinConfig) (*NodeCerts, error) {
	ctx, cancel := context.WithTimeout(ctx, joinTimeout)
	defer cancel()
	tok, err := pki.ParseJoinToken(jc.Token)
	if err != nil {
		return nil, fmt.Errorf("join: --token: %w", err)
	}
	u, err := url.Parse(jc.Gateway)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("join: --join %q must be the gateway's https URL", jc.Gateway)
	}
	base := strings.TrimRight(jc.Gateway, "/")

	// 1. The CA, over a connection not yet trusted: what proves it is the token's fingerprint.
	insecure := &http.Client{Transport: &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}}} //nolint:gosec // checked by fingerprint below
	defer insecure.CloseIdleConnections()
	var caReply agentapi.CACertReply
	if err := postOrGet(ctx, insecure, http.MethodGet, base+agentapi.PathJoinCA, nil, &caReply); err != nil {
		return nil, fmt.Errorf("join: fetch the cluster CA: %w", err)
	}
	ca, err := pki.ParseCertificate([]byte(caReply.CACert))
	if err != nil {
		return nil, fmt.Errorf("join: the gateway's CA: %w", err)
	}
	if got := pki.Fingerprint(ca); got != tok.CAFingerprint {
		return nil, fmt.Errorf("join: the gateway at %s presents a CA with fingerprint %s, not the token's %s: refusing to trust it", base, got, tok.CAFingerprint)
	}

	// 2. The CSR, to a gateway verified against that CA.
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	keyPEM, err := pki.KeyPEM(key)
	if err != nil {
		return nil, err
	}
	n, err := newNodeCerts(jc.Dir, keyPEM, []byte(caReply.CACert))
	if err != nil {
		return nil, err
	}
	csr, err := pki.NewCSR(key, jc.NodeID)
	if err != nil {
		return nil, err
	}
	trusted := agentapi.HTTPClient(agentapi.ClientTLS(n.servers, nil))
	defer trusted.CloseIdleConnections()
	var reply agentapi.JoinReply
	req := agentapi.JoinRequest{Token: jc.Token, NodeID: jc.NodeID, Advertise: jc.Advertise, CSR: string(csr)}
	if err := postOrGet(ctx, trusted, http.MethodPost, base+agentapi.PathJoin, req, &reply); err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	if err := n.install([]byte(reply.ClientCert), []byte(reply.ServerCert)); err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	if n.NodeID() != jc.NodeID {
		return nil, fmt.Errorf("join: the gateway issued certificates for %q, not %q", n.NodeID(), jc.NodeID)
	}
	if err := n.save([]byte(reply.ClientCert), []byte(reply.ServerCert)); err != nil {
		return nil, err
	}
	return n, nil
}

// Renew asks the gateways (in order, until one answers) for fresh certificates naming advertise,
// authenticated by the current client certificate, and puts them in service and on disk.
func (n *NodeCerts) Renew(ctx context.Context, hc *http.Client, gateways []string, advertise string) error {
	csr, err := pki.NewCSR(n.key, n.NodeID())
	if err != nil {
		return err
	}
	var errs []error
	for _, g := range gateways {
		var reply agentapi.JoinReply
		err := postOrGet(ctx, hc, http.MethodPost, strings.TrimRight(g, "/")+agentapi.PathRenew, agentapi.RenewRequest{Advertise: advertise, CSR: string(csr)}, &reply)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", g, err))
			continue
		}
		if err := n.install([]byte(reply.ClientCert), []byte(reply.ServerCert)); err != nil {
			return err
		}
		return n.save([]byte(reply.ClientCert), []byte(reply.ServerCert))
	}
	return fmt.Errorf("renew certificates: %w", errors.Join(errs...))
}

// renewLoop renews the certificates at two thirds of their life, and at once when the advertised
// host is not the one they name, retrying every few seconds until a gateway answers.
func (n *NodeCerts) renewLoop(ctx context.Context, hc *http.Client, gateways []string, advertise string, now func() time.Time, log *slog.Logger) {
	host := ""
	if u, err := url.Parse(advertise); err == nil {
		host = u.Hostname()
	}
	for {
		leaf := n.ClientLeaf()
		wait := pki.RenewAt(leaf.NotBefore, leaf.NotAfter).Sub(now())
		if host != "" && leaf.VerifyHostname(host) != nil {
			wait = 0
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		if err := n.Renew(ctx, hc, gateways, advertise); err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Warn("certificate renewal failed; retrying", "err", err, "expires", leaf.NotAfter)
			select {
			case <-ctx.Done():
				return
			case <-time.After(min(5*time.Second, max(time.Until(leaf.NotAfter)/10, 100*time.Millisecond))):
			}
			continue
		}
		log.Info("certificates renewed", "expires", n.ClientLeaf().NotAfter)
	}
}

// postOrGet sends in (nil: none) and decodes a 2xx answer into out; other answers become
// *agentapi.APIError.
func postOrGet(ctx context.Context, hc *http.Client, method, u string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var eb agentapi.ErrorBody
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &eb) == nil && eb.Error.Message != "" {
			msg = eb.Error.Message
		}
		return &agentapi.APIError{Status: resp.StatusCode, Message: msg}
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out)
}

// Package clusterpki is the gateway's side of the closed cluster: the cluster CA (made on the
// first start, or by `herd ca init`), the gateway's own certificates issued from it, join tokens,
// joining and renewing nodes, and revocations.
//
// Decisions:
//   - With one gateway everything lives in the data dir's pki folder, the CA key in a 0600 file.
//     With several gateways on Redis, the CA lives in Redis with its private key sealed
//     (AES-256-GCM, key from PBKDF2 over the CA secret every gateway has in its configuration,
//     --ca-secret / HERD_CA_SECRET): every gateway can issue, and nobody who reads Redis without
//     the secret can. The secret never goes to Redis.
//   - A node joins with a join token (TTL, reusable until it expires, stored as a digest) and a
//     CSR; it gets a client certificate and a server certificate, both naming herd://node/<id>
//     and the host of the URL it advertises. A node ID that a live node holds cannot be joined.
//   - Revoking a node records the time; every certificate of that node issued at or before it is
//     refused from then on (pki.IssuedAt), so a node that
//     joins again later with a new token is accepted. Gateways re-read the revocations every
//     second, and check them on every request, not only at the handshake, so connections that
//     are already open are refused too.
//   - Certificates are valid from five minutes before they are issued, so one another gateway
//     issued a moment ago is not "not yet valid" on a gateway whose clock is a little behind.
package clusterpki

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"
	"unicode"

	"github.com/herd-llm/herd/atomicfile"
	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/pki"
)

// DefaultNodeCertTTL is how long a node's certificates are valid; agents renew at two thirds.
const DefaultNodeCertTTL = 30 * 24 * time.Hour

// DefaultJoinTokenTTL is how long a join token is valid when the admin does not say.
const DefaultJoinTokenTTL = time.Hour

// MaxJoinTokenTTL bounds a join token's life: tokens are for joining, not for standing access.
const MaxJoinTokenTTL = 7 * 24 * time.Hour

// gatewayCertTTL is the life of a gateway's own certificates (renewed in Run at two thirds).
const gatewayCertTTL = 7 * 24 * time.Hour

// revocationPoll is how often revocations are read back from the store.
const revocationPoll = time.Second

// Config says where the CA lives and what the gateway's own certificates name.
type Config struct {
	// DataDir is the gateway's data dir; the CA and the records live in DataDir/pki.
	DataDir string
	// RedisURL, when set, keeps the CA (sealed), tokens and revocations in Redis.
	RedisURL string
	// Secret seals the CA key in Redis; required with RedisURL, at least pki.MinSecretLen long.
	Secret string
	// GatewayID names this gateway in its client certificate.
	GatewayID string
	// Hosts are the names and addresses the gateway's serving certificate names.
	Hosts []string
	// NodeCertTTL is the life of node certificates (0: DefaultNodeCertTTL).
	NodeCertTTL time.Duration
	// LiveNode reports whether a node ID is held by a live node (joins of it are refused); nil: never.
	LiveNode func(id string) bool
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Log receives the CA's creation, refused joins and claims (nil: slog.Default()).
	Log *slog.Logger
}

// Authority issues and checks the cluster's certificates.
type Authority struct {
	cfg   Config
	ca    *pki.CA
	pool  *x509.CertPool
	st    store
	now   func() time.Time
	log   *slog.Logger
	serve pki.Holder
	cli   pki.Holder

	mu      sync.RWMutex
	revoked map[string]time.Time
}

// Open loads the cluster CA, or makes it when there is none (seeding Redis from the data dir
// when `herd ca init` made one there), and issues the gateway's own certificates.
func Open(ctx context.Context, cfg Config) (*Authority, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.NodeCertTTL <= 0 {
		cfg.NodeCertTTL = DefaultNodeCertTTL
	}
	if cfg.GatewayID == "" {
		cfg.GatewayID = "gateway"
	}
	dir := filepath.Join(cfg.DataDir, "pki")
	var st store = &fileStore{dir: dir}
	if cfg.RedisURL != "" {
		if len(cfg.Secret) < pki.MinSecretLen {
			return nil, fmt.Errorf("clusterpki: with --redis-url the CA key is kept in Redis sealed with --ca-secret (HERD_CA_SECRET), which must be at least %d characters and the same on every gateway", pki.MinSecretLen)
		}
		rs, err := openRedisStore(ctx, cfg.RedisURL, cfg.Secret)
		if err != nil {
			return nil, err
		}
		st = rs
	}
	a := &Authority{cfg: cfg, st: st, now: cfg.Now, log: cfg.Log, revoked: map[string]time.Time{}}
	ca, err := st.loadCA(ctx)
	if err != nil {
		_ = st.close()
		return nil, err
	}
	if ca == nil {
		ca, err = a.seedCA(ctx, dir)
		if err != nil {
			_ = st.close()
			return nil, err
		}
	}
	a.ca, a.pool = ca, ca.Pool()
	// The CA certificate (public) beside the data, for clients: --ca-file, NODE_EXTRA_CA_CERTS.
	if old, err := os.ReadFile(filepath.Join(dir, pki.CACertFile)); err != nil || !bytes.Equal(old, ca.CertPEM) {
		err := os.MkdirAll(dir, 0o700)
		if err == nil {
			err = atomicfile.Write(filepath.Join(dir, pki.CACertFile), ca.CertPEM, 0o644)
		}
		if err != nil {
			_ = st.close()
			return nil, fmt.Errorf("clusterpki: write the CA certificate: %w", err)
		}
	}
	if err := a.issueOwn(); err != nil {
		_ = st.close()
		return nil, err
	}
	if err := a.refresh(ctx); err != nil {
		_ = st.close()
		return nil, err
	}
	return a, nil
}

// seedCA stores a CA where there is none: the data dir's (herd ca init) when Redis is used and
// one is there, else a new one.
func (a *Authority) seedCA(ctx context.Context, dir string) (*pki.CA, error) {
	var ca *pki.CA
	if a.cfg.RedisURL != "" {
		local, err := pki.LoadCA(dir)
		if err == nil {
			ca = local
		}
	}
	if ca == nil {
		var err error
		if ca, err = pki.NewCA(a.now()); err != nil {
			return nil, err
		}
	}
	stored, err := a.st.createCA(ctx, ca)
	if err != nil {
		return nil, err
	}
	if stored.Fingerprint() == ca.Fingerprint() {
		where := dir
		if a.cfg.RedisURL != "" {
			where = "redis (key sealed with the CA secret)"
		}
		a.log.Info("cluster CA stored", "fingerprint", ca.Fingerprint(), "where", where)
	}
	return stored, nil
}

// issueOwn issues the gateway's serving and client certificates.
func (a *Authority) issueOwn() error {
	now := a.now()
	id := pki.Identity{Role: pki.RoleGateway, Name: a.cfg.GatewayID}
	c, k, err := a.ca.IssueTLS(id, a.cfg.Hosts, x509.ExtKeyUsageServerAuth, now, gatewayCertTTL)
	if err != nil {
		return err
	}
	sc, err := pki.KeyPair(c, k)
	if err != nil {
		return err
	}
	c, k, err = a.ca.IssueTLS(id, nil, x509.ExtKeyUsageClientAuth, now, gatewayCertTTL)
	if err != nil {
		return err
	}
	cc, err := pki.KeyPair(c, k)
	if err != nil {
		return err
	}
	a.serve.Set(sc)
	a.cli.Set(cc)
	return nil
}

// Close releases the store's connections.
func (a *Authority) Close() error { return a.st.close() }

// Fingerprint is the cluster CA's fingerprint.
func (a *Authority) Fingerprint() string { return a.ca.Fingerprint() }

// CACertPEM is the cluster CA certificate.
func (a *Authority) CACertPEM() []byte { return a.ca.CertPEM }

// Pool holds the cluster CA.
func (a *Authority) Pool() *x509.CertPool { return a.pool }

// GetCertificate serves the gateway's certificate from the cluster CA.
func (a *Authority) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return a.serve.GetCertificate(hello)
}

// ClientTLS is the TLS configuration for dialing agents: the cluster CA as the only root, the
// gateway's client certificate, and a check that the agent's certificate is a node's that is not
// revoked (the host name is checked against the node's advertised address as usual).
func (a *Authority) ClientTLS() *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS12,
		RootCAs:              a.pool,
		GetClientCertificate: a.cli.GetClientCertificate,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := a.peer(&cs, x509.ExtKeyUsageServerAuth)
			return err
		},
	}
}

// Errors of certificate checks and joining.
var (
	// ErrNoCertificate: the peer sent no client certificate of the cluster.
	ErrNoCertificate = errors.New("no client certificate of this cluster")
	// ErrRevoked: the certificate's node was revoked after it was issued.
	ErrRevoked = errors.New("node revoked")
	// ErrBadToken: the join token is malformed, unknown, expired or for another CA.
	ErrBadToken = errors.New("invalid or expired join token")
	// ErrNodeLive: a live node holds the node ID a join asks for.
	ErrNodeLive = errors.New("node id is held by a live node")
)

// BadRequestError is a join or renewal the gateway cannot act on (400).
type BadRequestError struct{ Msg string }

// Error implements error.
func (e *BadRequestError) Error() string { return e.Msg }

// PeerNode returns the node a request's verified client certificate names: ErrNoCertificate when
// it carries none (or a gateway's), ErrRevoked (with the node's name) when the node was revoked
// since.
func (a *Authority) PeerNode(cs *tls.ConnectionState) (string, error) {
	id, err := a.peer(cs, x509.ExtKeyUsageClientAuth)
	return id.Name, err
}

// peer checks a verified peer certificate: a node's, not revoked.
func (a *Authority) peer(cs *tls.ConnectionState, usage x509.ExtKeyUsage) (pki.Identity, error) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return pki.Identity{}, ErrNoCertificate
	}
	leaf := cs.VerifiedChains[0][0]
	id, err := pki.IdentityOf(leaf)
	if err != nil || id.Role != pki.RoleNode || !hasUsage(leaf, usage) {
		return pki.Identity{}, ErrNoCertificate
	}
	if a.revokedCert(id.Name, leaf) {
		return id, ErrRevoked
	}
	return id, nil
}

func hasUsage(c *x509.Certificate, u x509.ExtKeyUsage) bool {
	for _, have := range c.ExtKeyUsage {
		if have == u {
			return true
		}
	}
	return false
}

// revokedCert reports whether node was revoked at or after leaf was issued.
func (a *Authority) revokedCert(node string, leaf *x509.Certificate) bool {
	a.mu.RLock()
	at, ok := a.revoked[node]
	a.mu.RUnlock()
	return ok && !pki.IssuedAt(leaf).After(at.Truncate(time.Second))
}

// NewJoinToken makes a join token valid for ttl (0: DefaultJoinTokenTTL) and returns its written
// form and expiry. Only its digest is stored.
func (a *Authority) NewJoinToken(ctx context.Context, ttl time.Duration) (string, time.Time, error) {
	if ttl <= 0 {
		ttl = DefaultJoinTokenTTL
	}
	if ttl > MaxJoinTokenTTL {
		return "", time.Time{}, &BadRequestError{Msg: fmt.Sprintf("a join token may live at most %s", MaxJoinTokenTTL)}
	}
	tok, err := pki.NewJoinToken(a.Fingerprint())
	if err != nil {
		return "", time.Time{}, err
	}
	exp := a.now().Add(ttl)
	if err := a.st.putToken(ctx, tok.ID, tok.Digest(), exp); err != nil {
		return "", time.Time{}, err
	}
	return tok.String(), exp, nil
}

// Join checks req's token and issues the node's certificates.
func (a *Authority) Join(ctx context.Context, req agentapi.JoinRequest) (agentapi.JoinReply, error) {
	tok, err := pki.ParseJoinToken(req.Token)
	if err != nil || tok.CAFingerprint != a.Fingerprint() {
		return agentapi.JoinReply{}, ErrBadToken
	}
	digest, err := a.st.tokenDigest(ctx, tok.ID, a.now())
	if err != nil {
		return agentapi.JoinReply{}, err
	}
	if digest == "" || !tok.MatchesDigest(digest) {
		return agentapi.JoinReply{}, ErrBadToken
	}
	if err := CheckNodeID(req.NodeID); err != nil {
		return agentapi.JoinReply{}, err
	}
	if a.cfg.LiveNode != nil && a.cfg.LiveNode(req.NodeID) {
		return agentapi.JoinReply{}, ErrNodeLive
	}
	return a.issueNode(req.NodeID, req.Advertise, req.CSR)
}

// Renew issues fresh certificates to node, which a verified client certificate named.
func (a *Authority) Renew(node string, req agentapi.RenewRequest) (agentapi.JoinReply, error) {
	return a.issueNode(node, req.Advertise, req.CSR)
}

func (a *Authority) issueNode(node, advertise, csrPEM string) (agentapi.JoinReply, error) {
	host, err := AdvertisedHost(advertise)
	if err != nil {
		return agentapi.JoinReply{}, err
	}
	csr, err := pki.ParseCSR([]byte(csrPEM))
	if err != nil {
		return agentapi.JoinReply{}, &BadRequestError{Msg: err.Error()}
	}
	id := pki.Identity{Role: pki.RoleNode, Name: node}
	now := a.now()
	client, err := a.ca.Issue(csr.PublicKey, id, []string{host}, x509.ExtKeyUsageClientAuth, now, a.cfg.NodeCertTTL)
	if err != nil {
		return agentapi.JoinReply{}, err
	}
	server, err := a.ca.Issue(csr.PublicKey, id, []string{host}, x509.ExtKeyUsageServerAuth, now, a.cfg.NodeCertTTL)
	if err != nil {
		return agentapi.JoinReply{}, err
	}
	return agentapi.JoinReply{NodeID: node, CACert: string(a.ca.CertPEM), ClientCert: string(client), ServerCert: string(server)}, nil
}

// AdvertisedHost returns the host of an agent's advertised https URL.
func AdvertisedHost(advertise string) (string, error) {
	u, err := url.Parse(advertise)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" || u.User != nil {
		return "", &BadRequestError{Msg: fmt.Sprintf("advertise %q is not an https URL of the agent", advertise)}
	}
	return u.Hostname(), nil
}

// CertNamesHost reports whether cert names host (an IP or a DNS name).
func CertNamesHost(cert *x509.Certificate, host string) bool {
	if ip := net.ParseIP(host); ip != nil {
		for _, have := range cert.IPAddresses {
			if have.Equal(ip) {
				return true
			}
		}
		return false
	}
	return cert.VerifyHostname(host) == nil
}

// CheckNodeID refuses node IDs that cannot be a node's (the heartbeat's rules).
func CheckNodeID(id string) error {
	if id == "" || len(id) > 253 {
		return &BadRequestError{Msg: "node_id must be 1 to 253 bytes"}
	}
	for _, r := range id {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) || r == '/' || r == unicode.ReplacementChar {
			return &BadRequestError{Msg: fmt.Sprintf("node_id %q contains a space, slash or unprintable character", id)}
		}
	}
	return nil
}

// Revoke refuses node from now on, on this gateway at once and on the others sharing the store
// within a second.
func (a *Authority) Revoke(ctx context.Context, node string) error {
	if err := CheckNodeID(node); err != nil {
		return err
	}
	at := a.now()
	if err := a.st.revoke(ctx, node, at); err != nil {
		return err
	}
	a.mu.Lock()
	a.revoked[node] = at
	a.mu.Unlock()
	a.log.Warn("node revoked: its certificates are refused", "node", node)
	return nil
}

// Revoked reports whether node has a revocation on record.
func (a *Authority) Revoked(node string) bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	_, ok := a.revoked[node]
	return ok
}

// refresh reads the revocations back from the store.
func (a *Authority) refresh(ctx context.Context) error {
	rev, err := a.st.revocations(ctx)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.revoked = rev
	a.mu.Unlock()
	return nil
}

// Run re-reads revocations every second and renews the gateway's own certificates, until ctx
// is done.
func (a *Authority) Run(ctx context.Context) {
	t := time.NewTicker(revocationPoll)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := a.refresh(ctx); err != nil {
			if !failing && ctx.Err() == nil {
				a.log.Warn("cannot read revocations; keeping the last list", "err", err)
			}
			failing = true
		} else {
			failing = false
		}
		if c := a.cli.Get(); c != nil && a.now().After(pki.RenewAt(c.Leaf.NotBefore, c.Leaf.NotAfter)) {
			if err := a.issueOwn(); err != nil {
				a.log.Warn("cannot renew the gateway's certificates", "err", err)
			}
		}
	}
}

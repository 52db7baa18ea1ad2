package agentapi

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"time"
)

// Joining routes on the gateway (see docs/DESIGN.md, "Closed cluster").
const (
	// PathJoinCA answers the cluster CA certificate (GET, no auth: the agent checks it against
	// the fingerprint in its join token before it trusts anything else).
	PathJoinCA = "/join/v1/ca"
	// PathJoin takes a JoinRequest with a join token and answers a JoinReply (POST, over TLS).
	PathJoin = "/join/v1/csr"
	// PathRenew takes a RenewRequest from a node authenticated by its client certificate and
	// answers a JoinReply with fresh certificates (POST, mutual TLS).
	PathRenew = "/internal/v1/renew"
)

// Error codes of the joining routes and of certificate checks.
const (
	// CodeInvalidJoinToken: the join token is unknown, expired or wrong (401).
	CodeInvalidJoinToken = "invalid_join_token"
	// CodeNodeRevoked: the node's certificate was revoked (403).
	CodeNodeRevoked = "node_revoked"
	// CodeIdentityMismatch: a heartbeat claims a node ID (or address) its certificate does not name (403).
	CodeIdentityMismatch = "certificate_identity_mismatch"
	// CodeClientCertRequired: the route needs a client certificate of the cluster (401).
	CodeClientCertRequired = "client_certificate_required"
)

// CACertReply is the answer of PathJoinCA.
type CACertReply struct {
	// CACert is the cluster CA certificate in PEM.
	CACert string `json:"ca_cert"`
}

// JoinRequest asks the gateway for a node's certificates.
type JoinRequest struct {
	// Token is the join token (herd nodes join-token).
	Token string `json:"token"`
	// NodeID is the node ID the certificates will name.
	NodeID string `json:"node_id"`
	// Advertise is the URL gateways will reach the agent at; its host goes into both certificates.
	Advertise string `json:"advertise"`
	// CSR is a PEM certificate request carrying the agent's public key.
	CSR string `json:"csr"`
}

// RenewRequest asks for fresh certificates for the node the client certificate names.
type RenewRequest struct {
	// Advertise is the agent's URL (it may have changed since it joined).
	Advertise string `json:"advertise"`
	// CSR is a PEM certificate request carrying the agent's public key.
	CSR string `json:"csr"`
}

// JoinReply carries a node's certificates.
type JoinReply struct {
	// NodeID is the node ID the certificates name.
	NodeID string `json:"node_id"`
	// CACert is the cluster CA certificate (PEM).
	CACert string `json:"ca_cert"`
	// ClientCert is the node's client certificate to gateways (PEM).
	ClientCert string `json:"client_cert"`
	// ServerCert is the certificate of the agent's own listener (PEM), naming its advertised host.
	ServerCert string `json:"server_cert"`
}

// HTTPClient returns an http.Client for gateway↔agent traffic over TLS with cfg (roots, client
// certificate): HTTP/2 (one connection carries thousands of concurrent streams), and HTTP/1.1
// only with a peer that does not offer HTTP/2. A nil cfg gives DefaultHTTPClient.
func HTTPClient(cfg *tls.Config) *http.Client {
	if cfg == nil {
		return DefaultHTTPClient()
	}
	return &http.Client{Transport: NewTransport(cfg)}
}

// NewTransport returns the transport for gateway↔agent traffic with cfg (nil: plain HTTP/1.1 as
// DefaultHTTPClient's). With TLS it speaks HTTP/2, pinging idle connections so that a dead peer
// is noticed in seconds rather than at the next write.
func NewTransport(cfg *tls.Config) *http.Transport {
	t := DefaultHTTPClient().Transport.(*http.Transport)
	if cfg == nil {
		return t
	}
	t.TLSClientConfig = cfg.Clone()
	t.ForceAttemptHTTP2 = true
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	t.Protocols = &p
	t.HTTP2 = &http.HTTP2Config{
		SendPingTimeout: 15 * time.Second,
		PingTimeout:     5 * time.Second,
	}
	return t
}

// ClientTLS returns a TLS client configuration trusting roots (plus the system's, for gateways
// whose client front carries a certificate of another CA) and presenting getCert's certificate.
func ClientTLS(roots *x509.CertPool, getCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, GetClientCertificate: getCert}
}

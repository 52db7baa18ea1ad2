// Package pki is herd's cluster certificate authority and the certificate plumbing around it:
// making and loading the CA, issuing certificates to gateways and nodes from a CSR, naming who a
// certificate belongs to, join tokens that pin the CA by its fingerprint, sealing the CA key for
// a shared store, and serving certificates that follow files on disk.
//
// Decisions:
//   - Keys are ECDSA P-256: small certificates, fast handshakes, supported everywhere (Node's
//     TLS stack included). Certificates a CSR asks for may use P-256, P-384, Ed25519 or RSA of at
//     least 2048 bits.
//   - Who a certificate belongs to is one URI SAN, herd://node/<id> or herd://gateway/<id>
//     (IdentityOf). The common name repeats it for people reading `openssl x509`, and is never
//     trusted.
//   - The CA fingerprint is SHA-256 over the CA certificate's SubjectPublicKeyInfo, as kubeadm's
//     discovery-token-ca-cert-hash is, so `openssl` can compute it too.
//   - A node's certificate names the node's advertised host (IP or DNS SAN) in both its client
//     and server certificate: the gateway checks a heartbeat's address against the client
//     certificate, and dials the agent checking the server certificate names that host.
//
// The package is a leaf: crypto and files only, no network.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/herd-llm/herd/atomicfile"
)

// File names of a CA in a directory.
const (
	// CACertFile is the CA certificate (PEM, public).
	CACertFile = "ca.crt"
	// CAKeyFile is the CA private key (PEM, mode 0600).
	CAKeyFile = "ca.key"
)

// Roles a certificate can carry.
const (
	// RoleNode is a node agent's certificate: its client certificate to gateways and its server
	// certificate for its own listener.
	RoleNode = "node"
	// RoleGateway is a gateway's client certificate to agents.
	RoleGateway = "gateway"
)

// caValidity is how long a CA made by NewCA is valid: long, because replacing it means every
// node joins again.
const caValidity = 10 * 365 * 24 * time.Hour

// clockSkew is how far back a certificate's NotBefore is put before its issue time, for peers
// whose clocks run behind; IssuedAt adds it back.
const clockSkew = 5 * time.Minute

// maxPEM bounds a PEM input (a CSR or certificate from outside): far above any real one.
const maxPEM = 64 << 10

// Identity says whom a certificate belongs to.
type Identity struct {
	// Role is RoleNode or RoleGateway.
	Role string
	// Name is the node ID or the gateway ID.
	Name string
}

// URI returns the identity's URI SAN, herd://<role>/<name>.
func (id Identity) URI() *url.URL {
	return &url.URL{Scheme: "herd", Host: id.Role, Path: "/" + id.Name}
}

// String is "node gpu-a" or "gateway gw-1".
func (id Identity) String() string { return id.Role + " " + id.Name }

// ErrNoIdentity is returned by IdentityOf for a certificate that names no herd identity.
var ErrNoIdentity = errors.New("certificate names no herd identity")

// IdentityOf returns the identity in cert's herd:// URI SAN. A certificate with none, or more
// than one, or an unknown role, has no identity.
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	var found []Identity
	for _, u := range cert.URIs {
		if u.Scheme != "herd" {
			continue
		}
		name := strings.TrimPrefix(u.Path, "/")
		if (u.Host != RoleNode && u.Host != RoleGateway) || name == "" || strings.Contains(name, "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return Identity{}, fmt.Errorf("%w: bad herd URI %q", ErrNoIdentity, u.String())
		}
		found = append(found, Identity{Role: u.Host, Name: name})
	}
	if len(found) != 1 {
		return Identity{}, fmt.Errorf("%w (%d herd URIs)", ErrNoIdentity, len(found))
	}
	return found[0], nil
}

// CA is a cluster certificate authority: its certificate and private key.
type CA struct {
	// Cert is the CA certificate.
	Cert *x509.Certificate
	// Key signs what the CA issues.
	Key crypto.Signer
	// CertPEM is Cert in PEM.
	CertPEM []byte
}

// NewKey returns a new ECDSA P-256 key.
func NewKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// NewCA makes a self-signed CA, valid from now (less clock skew) for ten years.
func NewCA(now time.Time) (*CA, error) {
	key, err := NewKey()
	if err != nil {
		return nil, fmt.Errorf("pki: CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "herd cluster CA " + serial.Text(16)[:8], Organization: []string{"herd"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("pki: CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// ParseCA reads a CA from its certificate and private key in PEM, and checks they belong together.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := ParseCertificate(certPEM)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, errors.New("pki: the CA certificate is not a CA")
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		return nil, err
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, errors.New("pki: the CA key does not belong to the CA certificate")
	}
	return &CA{Cert: cert, Key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})}, nil
}

// KeyPEM returns the CA's private key in PKCS #8 PEM.
func (ca *CA) KeyPEM() ([]byte, error) { return KeyPEM(ca.Key) }

// Fingerprint is the CA's fingerprint ("sha256:<hex>").
func (ca *CA) Fingerprint() string { return Fingerprint(ca.Cert) }

// Pool returns a pool holding only the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Save writes the CA into dir: the certificate world-readable, the key 0600. It refuses to
// overwrite a CA already there.
func (ca *CA) Save(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, CAKeyFile)); err == nil {
		return fmt.Errorf("pki: %s already holds a CA key", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(dir, CAKeyFile), keyPEM, 0o600); err != nil {
		return fmt.Errorf("pki: write CA key: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, CACertFile), ca.CertPEM, 0o644); err != nil {
		return fmt.Errorf("pki: write CA certificate: %w", err)
	}
	return nil
}

// LoadCA reads the CA Save wrote into dir. It returns an error wrapping os.ErrNotExist when dir
// holds none, and refuses a key file that others may read.
func LoadCA(dir string) (*CA, error) {
	keyPath := filepath.Join(dir, CAKeyFile)
	st, err := os.Stat(keyPath)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("pki: %s is readable by others (mode %v): chmod 600 it", keyPath, st.Mode().Perm())
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	certPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return ParseCA(certPEM, keyPEM)
}

// Issue signs a certificate for pub naming id (URI SAN) and hosts (IP or DNS SANs), for the
// given use (client or server authentication), issued at issuedAt and valid until ttl after it;
// it returns it in PEM. Its NotBefore is clockSkew before issuedAt (IssuedAt reads it back).
func (ca *CA) Issue(pub crypto.PublicKey, id Identity, hosts []string, usage x509.ExtKeyUsage, issuedAt time.Time, ttl time.Duration) ([]byte, error) {
	if err := checkPublicKey(pub); err != nil {
		return nil, err
	}
	if id.Role != RoleNode && id.Role != RoleGateway || id.Name == "" || strings.ContainsAny(id.Name, "/ ") {
		return nil, fmt.Errorf("pki: bad identity %q", id.String())
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	notBefore := issuedAt.Add(-clockSkew)
	notAfter := issuedAt.Add(ttl)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: id.Name, OrganizationalUnit: []string{"herd " + id.Role}},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		URIs:         []*url.URL{id.URI()},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: issue %s: %w", id, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// IssueTLS makes a key and a certificate for it (see Issue) and returns them in PEM.
func (ca *CA) IssueTLS(id Identity, hosts []string, usage x509.ExtKeyUsage, now time.Time, ttl time.Duration) (certPEM, keyPEM []byte, err error) {
	key, err := NewKey()
	if err != nil {
		return nil, nil, fmt.Errorf("pki: %w", err)
	}
	certPEM, err = ca.Issue(key.Public(), id, hosts, usage, now, ttl)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err = KeyPEM(key)
	return certPEM, keyPEM, err
}

// IssuedAt is when a certificate Issue made was issued (to the second): revocations are ordered
// by it.
func IssuedAt(cert *x509.Certificate) time.Time { return cert.NotBefore.Add(clockSkew) }

// Verify checks that cert chains to the CA for the given use at now and returns its identity.
func (ca *CA) Verify(cert *x509.Certificate, usage x509.ExtKeyUsage, now time.Time) (Identity, error) {
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return Identity{}, fmt.Errorf("pki: %w", err)
	}
	return IdentityOf(cert)
}

// Fingerprint returns "sha256:" and the hex SHA-256 of cert's SubjectPublicKeyInfo.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ParseCertificate reads the first certificate of a PEM input.
func ParseCertificate(data []byte) (*x509.Certificate, error) {
	if len(data) > maxPEM {
		return nil, fmt.Errorf("pki: certificate PEM longer than %d bytes", maxPEM)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("pki: no CERTIFICATE PEM block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return cert, nil
}

// ParseCSR reads a PEM certificate request from outside, checks its self-signature and its key
// (see checkPublicKey). It is the gateway's parser of what joining agents send.
func ParseCSR(data []byte) (*x509.CertificateRequest, error) {
	if len(data) > maxPEM {
		return nil, fmt.Errorf("pki: CSR longer than %d bytes", maxPEM)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("pki: no CERTIFICATE REQUEST PEM block")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("pki: CSR signature: %w", err)
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, err
	}
	return csr, nil
}

// NewCSR returns a PEM certificate request for key naming name (the CA decides what the
// certificate really names; the request only carries the key).
func NewCSR(key crypto.Signer, name string) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		return nil, fmt.Errorf("pki: CSR: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// KeyPEM encodes key in PKCS #8 PEM.
func KeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKey reads a PKCS #8 (or SEC 1 EC) private key in PEM.
func ParseKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("pki: no private key PEM block")
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
		return nil, errors.New("pki: private key cannot sign")
	}
	k, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: private key: %w", err)
	}
	return k, nil
}

// checkPublicKey accepts the keys herd issues certificates for.
func checkPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return errors.New("pki: ECDSA key must be on P-256 or P-384")
		}
	case ed25519.PublicKey:
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("pki: RSA key of %d bits is too short (want at least 2048)", k.N.BitLen())
		}
	default:
		return fmt.Errorf("pki: unsupported key type %T", pub)
	}
	return nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ad, err1 := x509.MarshalPKIXPublicKey(a)
	bd, err2 := x509.MarshalPKIXPublicKey(b)
	return err1 == nil && err2 == nil && bytes.Equal(ad, bd)
}

func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("pki: serial: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}

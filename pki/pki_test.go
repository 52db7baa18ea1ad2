package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

func TestIssueAndVerify(t *testing.T) {
	ca, err := NewCA(t0)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := NewKey()
	csrPEM, err := NewCSR(key, "gpu-a")
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ParseCSR(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.Issue(csr.PublicKey, Identity{RoleNode, "gpu-a"}, []string{"10.0.0.5", "gpu-a.lan"}, x509.ExtKeyUsageClientAuth, t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ParseCertificate(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	id, err := ca.Verify(cert, x509.ExtKeyUsageClientAuth, t0.Add(time.Minute))
	if err != nil || id != (Identity{RoleNode, "gpu-a"}) {
		t.Fatalf("Verify = %v, %v", id, err)
	}
	if len(cert.IPAddresses) != 1 || cert.IPAddresses[0].String() != "10.0.0.5" || len(cert.DNSNames) != 1 {
		t.Fatalf("hosts: %v %v", cert.IPAddresses, cert.DNSNames)
	}
	// A client certificate is not a server certificate, and an expired one is refused.
	if _, err := ca.Verify(cert, x509.ExtKeyUsageServerAuth, t0.Add(time.Minute)); err == nil {
		t.Fatal("client certificate verified for server use")
	}
	if _, err := ca.Verify(cert, x509.ExtKeyUsageClientAuth, t0.Add(2*time.Hour)); err == nil {
		t.Fatal("expired certificate verified")
	}
	// Another CA's certificate does not verify.
	other, _ := NewCA(t0)
	if _, err := other.Verify(cert, x509.ExtKeyUsageClientAuth, t0.Add(time.Minute)); err == nil {
		t.Fatal("verified against another CA")
	}
}

func TestIssueRefusesWeakKeysAndBadIdentities(t *testing.T) {
	ca, _ := NewCA(t0)
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	good, _ := NewKey()
	for name, tc := range map[string]struct {
		pub any
		id  Identity
	}{
		"rsa1024": {&weak.PublicKey, Identity{RoleNode, "a"}},
		"p224":    {&p224.PublicKey, Identity{RoleNode, "a"}},
		"role":    {good.Public(), Identity{"admin", "a"}},
		"empty":   {good.Public(), Identity{RoleNode, ""}},
		"slash":   {good.Public(), Identity{RoleNode, "a/b"}},
	} {
		if _, err := ca.Issue(tc.pub, tc.id, nil, x509.ExtKeyUsageClientAuth, t0, time.Hour); err == nil {
			t.Errorf("%s: issued", name)
		}
	}
}

func TestSaveLoadCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	ca, _ := NewCA(t0)
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, CAKeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v", st.Mode().Perm(), err)
	}
	if err := ca.Save(dir); err == nil {
		t.Fatal("Save overwrote a CA")
	}
	back, err := LoadCA(dir)
	if err != nil || back.Fingerprint() != ca.Fingerprint() {
		t.Fatalf("LoadCA: %v", err)
	}
	if err := os.Chmod(filepath.Join(dir, CAKeyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(dir); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Fatalf("LoadCA of a world-readable key: %v", err)
	}
	if _, err := LoadCA(t.TempDir()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("LoadCA of an empty dir: %v", err)
	}
	otherKey, _ := NewKey()
	otherPEM, _ := KeyPEM(otherKey)
	if _, err := ParseCA(ca.CertPEM, otherPEM); err == nil {
		t.Fatal("ParseCA took a key of another certificate")
	}
}

func TestJoinToken(t *testing.T) {
	ca, _ := NewCA(t0)
	tok, err := NewJoinToken(ca.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseJoinToken(tok.String())
	if err != nil || back != tok {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	if !back.MatchesDigest(tok.Digest()) {
		t.Fatal("digest does not match")
	}
	wrong := back
	wrong.Secret = strings.Repeat("0", tokenSecretLen)
	if wrong.MatchesDigest(tok.Digest()) {
		t.Fatal("wrong secret matches")
	}
	for _, bad := range []string{"", "herdjoin1", tok.String() + ".x", strings.ToUpper(tok.String()), strings.Replace(tok.String(), "herdjoin1", "herdjoin2", 1), tok.String()[:len(tok.String())-1]} {
		if _, err := ParseJoinToken(bad); !errors.Is(err, ErrBadToken) {
			t.Errorf("ParseJoinToken(%q) = %v", bad, err)
		}
	}
}

func TestSeal(t *testing.T) {
	secret := "correct horse battery staple"
	sealed, err := Seal([]byte("the key"), secret)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(sealed), "the key") {
		t.Fatal("sealed blob holds the plain text")
	}
	plain, err := Open(sealed, secret)
	if err != nil || string(plain) != "the key" {
		t.Fatalf("Open = %q, %v", plain, err)
	}
	if _, err := Open(sealed, secret+"!"); !errors.Is(err, ErrWrongSecret) {
		t.Fatalf("Open with a wrong secret: %v", err)
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := Open(sealed, secret); !errors.Is(err, ErrWrongSecret) {
		t.Fatalf("Open of an altered blob: %v", err)
	}
	if _, err := Seal([]byte("x"), "short"); err == nil {
		t.Fatal("Seal took a short secret")
	}
}

func TestFileCertReloads(t *testing.T) {
	ca, _ := NewCA(t0)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	write := func(name string) {
		c, k, err := ca.IssueTLS(Identity{RoleGateway, name}, []string{"localhost"}, x509.ExtKeyUsageServerAuth, t0, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(certFile, c, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyFile, k, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("one")
	now := t0
	fc, err := NewFileCert(certFile, keyFile, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	name := func() string {
		c, err := fc.GetCertificate(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := x509.ParseCertificate(c.Certificate[0])
		return leaf.Subject.CommonName
	}
	if got := name(); got != "one" {
		t.Fatalf("first = %q", got)
	}
	write("two")
	// Make sure the stamp differs even on a coarse-mtime file system.
	_ = os.Chtimes(certFile, t0.Add(time.Hour), t0.Add(time.Hour))
	if got := name(); got != "one" {
		t.Fatalf("reloaded before the check interval: %q", got)
	}
	now = now.Add(2 * time.Second)
	if got := name(); got != "two" {
		t.Fatalf("after change = %q", got)
	}
	// A broken file keeps the pair in service and reports the error.
	if err := os.WriteFile(keyFile, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := fc.Check(); err == nil {
		t.Fatal("Check of a broken key: no error")
	}
	now = now.Add(2 * time.Second)
	if got := name(); got != "two" {
		t.Fatalf("after a broken write = %q", got)
	}
}

func TestRenewAt(t *testing.T) {
	if got := RenewAt(t0, t0.Add(3*time.Hour)); !got.Equal(t0.Add(2 * time.Hour)) {
		t.Fatal(got)
	}
}

// FuzzParseJoinToken: whatever it is given, ParseJoinToken never panics, and what it accepts
// writes back to the same text.
func FuzzParseJoinToken(f *testing.F) {
	ca, _ := NewCA(t0)
	tok, _ := NewJoinToken(ca.Fingerprint())
	f.Add(tok.String())
	f.Add("herdjoin1...")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseJoinToken(s)
		if err != nil {
			return
		}
		if tok.String() != strings.TrimSpace(s) {
			t.Fatalf("%q parsed to %q", s, tok.String())
		}
	})
}

// FuzzParseCSR: the gateway's parser of joining agents' requests never panics and accepts only
// self-signed requests with a key herd issues for.
func FuzzParseCSR(f *testing.F) {
	key, _ := NewKey()
	good, _ := NewCSR(key, "gpu-a")
	f.Add(good)
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		csr, err := ParseCSR(data)
		if err != nil {
			return
		}
		if csr.CheckSignature() != nil || checkPublicKey(csr.PublicKey) != nil {
			t.Fatal("accepted a CSR that fails its checks")
		}
	})
}

// FuzzCertificate: certificate parsing and identity reading never panic; a certificate with an
// identity has exactly one herd URI.
func FuzzCertificate(f *testing.F) {
	ca, _ := NewCA(t0)
	key, _ := NewKey()
	c, _ := ca.Issue(key.Public(), Identity{RoleNode, "gpu-a"}, []string{"10.0.0.1"}, x509.ExtKeyUsageClientAuth, t0, time.Hour)
	f.Add(c)
	f.Add(ca.CertPEM)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cert, err := ParseCertificate(data)
		if err != nil {
			return
		}
		id, err := IdentityOf(cert)
		if err != nil {
			return
		}
		if id.Name == "" || strings.Contains(id.Name, "/") || (id.Role != RoleNode && id.Role != RoleGateway) {
			t.Fatalf("identity %+v", id)
		}
		_, _ = ca.Verify(cert, x509.ExtKeyUsageClientAuth, t0)
	})
}

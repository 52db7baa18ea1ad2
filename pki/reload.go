package pki

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// reloadCheckEvery bounds how often FileCert looks at its files: a handshake costs a stat at
// most once per interval.
const reloadCheckEvery = time.Second

// FileCert serves a certificate and key read from files, and reads them again when either file
// changes (size or modification time), so an operator (or certbot) replaces them without a
// restart. A pair that fails to load keeps the previous one in service; the error is returned by
// Check.
type FileCert struct {
	certFile, keyFile string
	now               func() time.Time

	mu        sync.Mutex
	cert      *tls.Certificate
	stamp     [2]fileStamp
	checkedAt time.Time
	lastErr   error
}

type fileStamp struct {
	size int64
	mod  time.Time
}

// NewFileCert loads the pair once; an error here is a configuration error.
func NewFileCert(certFile, keyFile string, now func() time.Time) (*FileCert, error) {
	if now == nil {
		now = time.Now
	}
	f := &FileCert{certFile: certFile, keyFile: keyFile, now: now}
	if err := f.load(); err != nil {
		return nil, err
	}
	f.checkedAt = now()
	return f, nil
}

func stampOf(path string) (fileStamp, error) {
	st, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{size: st.Size(), mod: st.ModTime()}, nil
}

// load reads both files; the caller holds f.mu (or owns f).
func (f *FileCert) load() error {
	cs, err := stampOf(f.certFile)
	if err != nil {
		return fmt.Errorf("pki: --tls-cert: %w", err)
	}
	ks, err := stampOf(f.keyFile)
	if err != nil {
		return fmt.Errorf("pki: --tls-key: %w", err)
	}
	pair, err := tls.LoadX509KeyPair(f.certFile, f.keyFile)
	if err != nil {
		return fmt.Errorf("pki: %s and %s: %w", f.certFile, f.keyFile, err)
	}
	f.cert, f.stamp = &pair, [2]fileStamp{cs, ks}
	return nil
}

// Check reloads the pair if a file changed since the last look, and returns the error of the
// last load that failed (nil when the pair in service is the files' current content).
func (f *FileCert) Check() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.checkedAt = f.now()
	cs, err1 := stampOf(f.certFile)
	ks, err2 := stampOf(f.keyFile)
	if err1 == nil && err2 == nil && [2]fileStamp{cs, ks} == f.stamp {
		return f.lastErr
	}
	f.lastErr = f.load()
	return f.lastErr
}

// GetCertificate is for tls.Config.GetCertificate.
func (f *FileCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	f.mu.Lock()
	due := f.now().Sub(f.checkedAt) >= reloadCheckEvery
	f.mu.Unlock()
	if due {
		_ = f.Check()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cert, nil
}

// Holder holds a certificate that is swapped while in use (renewals): handshakes read the
// current one.
type Holder struct {
	p atomic.Pointer[tls.Certificate]
}

// Set puts c in service.
func (h *Holder) Set(c *tls.Certificate) { h.p.Store(c) }

// Get returns the certificate in service (nil before the first Set).
func (h *Holder) Get() *tls.Certificate { return h.p.Load() }

// GetCertificate is for tls.Config.GetCertificate.
func (h *Holder) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := h.p.Load(); c != nil {
		return c, nil
	}
	return nil, fmt.Errorf("pki: no certificate yet")
}

// GetClientCertificate is for tls.Config.GetClientCertificate.
func (h *Holder) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if c := h.p.Load(); c != nil {
		return c, nil
	}
	return &tls.Certificate{}, nil
}

// KeyPair builds a tls.Certificate from PEM, with Leaf parsed.
func KeyPair(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("pki: %w", err)
		}
	}
	return &pair, nil
}

// RenewAt is when a certificate valid from notBefore to notAfter should be renewed: two thirds
// of the way through its life.
func RenewAt(notBefore, notAfter time.Time) time.Time {
	return notBefore.Add(notAfter.Sub(notBefore) * 2 / 3)
}

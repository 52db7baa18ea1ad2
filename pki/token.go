package pki

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// tokenPrefix starts every join token, so a token pasted into the wrong place is recognised.
const tokenPrefix = "herdjoin1"

// Join token parts, in hex characters.
const (
	tokenIDLen     = 12
	tokenSecretLen = 32
	fingerprintLen = 64
)

// JoinToken lets one agent (or a few, until it expires) join the cluster: the gateway knows ID
// and a digest of Secret; the agent learns from CAFingerprint which CA to trust before it trusts
// the gateway, as kubeadm's discovery-token-ca-cert-hash does. The written form is
// herdjoin1.<id>.<secret>.<fingerprint hex>.
type JoinToken struct {
	// ID names the token in the gateway's store (not secret).
	ID string
	// Secret is 128 random bits in hex.
	Secret string
	// CAFingerprint is the cluster CA's Fingerprint ("sha256:<hex>").
	CAFingerprint string
}

// NewJoinToken returns a fresh token pinning the CA with fingerprint caFP.
func NewJoinToken(caFP string) (JoinToken, error) {
	if _, err := fingerprintHex(caFP); err != nil {
		return JoinToken{}, err
	}
	var b [tokenIDLen/2 + tokenSecretLen/2]byte
	if _, err := rand.Read(b[:]); err != nil {
		return JoinToken{}, fmt.Errorf("pki: token: %w", err)
	}
	h := hex.EncodeToString(b[:])
	return JoinToken{ID: h[:tokenIDLen], Secret: h[tokenIDLen:], CAFingerprint: caFP}, nil
}

// String is the token's written form.
func (t JoinToken) String() string {
	fp, _ := fingerprintHex(t.CAFingerprint)
	return tokenPrefix + "." + t.ID + "." + t.Secret + "." + fp
}

// Digest is what the gateway stores in place of the secret: hex SHA-256 of it.
func (t JoinToken) Digest() string {
	sum := sha256.Sum256([]byte(t.Secret))
	return hex.EncodeToString(sum[:])
}

// MatchesDigest reports, in constant time, whether the token's secret has the stored digest.
func (t JoinToken) MatchesDigest(digest string) bool {
	return subtle.ConstantTimeCompare([]byte(t.Digest()), []byte(digest)) == 1
}

// ErrBadToken is wrapped by ParseJoinToken's errors.
var ErrBadToken = errors.New("not a herd join token (want herdjoin1.<id>.<secret>.<ca fingerprint>, from herd nodes join-token)")

// ParseJoinToken reads a token's written form. Its input comes from outside (a flag, a request
// body), so it checks every part's length and alphabet.
func ParseJoinToken(s string) (JoinToken, error) {
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) != 4 || parts[0] != tokenPrefix {
		return JoinToken{}, ErrBadToken
	}
	for i, want := range []int{tokenIDLen, tokenSecretLen, fingerprintLen} {
		p := parts[i+1]
		if len(p) != want || !isLowerHex(p) {
			return JoinToken{}, ErrBadToken
		}
	}
	return JoinToken{ID: parts[1], Secret: parts[2], CAFingerprint: "sha256:" + parts[3]}, nil
}

// fingerprintHex returns the hex part of a "sha256:<hex>" fingerprint.
func fingerprintHex(fp string) (string, error) {
	h, ok := strings.CutPrefix(fp, "sha256:")
	if !ok || len(h) != fingerprintLen || !isLowerHex(h) {
		return "", fmt.Errorf("pki: %q is not a sha256:<64 hex> fingerprint", fp)
	}
	return h, nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

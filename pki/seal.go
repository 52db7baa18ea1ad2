package pki

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
)

// sealMagic starts a sealed blob; its version names the KDF and cipher below.
var sealMagic = []byte("herd-sealed-v1\n")

// sealIterations is PBKDF2-SHA256's work factor: the secret may be a passphrase, and a sealed
// CA key sits in Redis where whoever reads Redis can try guesses offline. It costs about a
// tenth of a second, once per gateway start.
const sealIterations = 300_000

const saltLen = 16

// MinSecretLen is the shortest secret Seal accepts.
const MinSecretLen = 16

// Seal encrypts plain (the CA key's PEM) with AES-256-GCM under a key derived from secret by
// PBKDF2-SHA256 with a random salt. Several gateways sharing Redis keep the CA key there sealed
// this way; the secret stays in each gateway's configuration.
func Seal(plain []byte, secret string) ([]byte, error) {
	if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("pki: the CA secret must be at least %d characters", MinSecretLen)
	}
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	aead, err := sealAEAD(secret, salt)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	out := append(append(append([]byte{}, sealMagic...), salt...), nonce...)
	return aead.Seal(out, nonce, plain, sealMagic), nil
}

// ErrWrongSecret is returned by Open when the secret does not open the blob (or it was altered).
var ErrWrongSecret = errors.New("pki: the CA secret does not open the sealed CA key (wrong --ca-secret?)")

// Open decrypts what Seal made.
func Open(sealed []byte, secret string) ([]byte, error) {
	rest, ok := bytes.CutPrefix(sealed, sealMagic)
	if !ok || len(rest) < saltLen {
		return nil, errors.New("pki: not a sealed herd key")
	}
	salt, rest := rest[:saltLen], rest[saltLen:]
	aead, err := sealAEAD(secret, salt)
	if err != nil {
		return nil, err
	}
	if len(rest) < aead.NonceSize() {
		return nil, errors.New("pki: sealed key is truncated")
	}
	plain, err := aead.Open(nil, rest[:aead.NonceSize()], rest[aead.NonceSize():], sealMagic)
	if err != nil {
		return nil, ErrWrongSecret
	}
	return plain, nil
}

func sealAEAD(secret string, salt []byte) (cipher.AEAD, error) {
	key, err := pbkdf2.Key(sha256.New, secret, salt, sealIterations, 32)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return cipher.NewGCM(block)
}

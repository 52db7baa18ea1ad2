package clusterpki

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herd-llm/herd/atomicfile"
	"github.com/herd-llm/herd/pki"
)

// store keeps what every gateway of a cluster must agree on: the CA, the join tokens' digests
// and the revocations.
type store interface {
	// loadCA returns the stored CA, or nil when there is none yet.
	loadCA(ctx context.Context) (*pki.CA, error)
	// createCA stores ca unless a CA is stored already, and returns the one that is stored.
	createCA(ctx context.Context, ca *pki.CA) (*pki.CA, error)
	putToken(ctx context.Context, id, digest string, expires time.Time) error
	// tokenDigest returns the digest of token id, "" when it is unknown or expired at now.
	tokenDigest(ctx context.Context, id string, now time.Time) (string, error)
	revoke(ctx context.Context, node string, at time.Time) error
	revocations(ctx context.Context) (map[string]time.Time, error)
	close() error
}

// fileStore keeps everything in the data dir's pki folder: one gateway.
type fileStore struct {
	dir string
	mu  sync.Mutex
}

var _ store = (*fileStore)(nil)

type tokenRecord struct {
	Digest  string    `json:"digest"`
	Expires time.Time `json:"expires"`
}

func (f *fileStore) loadCA(context.Context) (*pki.CA, error) {
	ca, err := pki.LoadCA(f.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return ca, err
}

func (f *fileStore) createCA(ctx context.Context, ca *pki.CA) (*pki.CA, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if old, err := f.loadCA(ctx); err != nil || old != nil {
		return old, err
	}
	if err := ca.Save(f.dir); err != nil {
		return nil, err
	}
	return ca, nil
}

func (f *fileStore) readJSON(name string, v any) error {
	data, err := os.ReadFile(filepath.Join(f.dir, name))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("clusterpki: %w", err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("clusterpki: %s: %w", name, err)
	}
	return nil
}

func (f *fileStore) writeJSON(name string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(f.dir, 0o700); err != nil {
		return fmt.Errorf("clusterpki: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(f.dir, name), data, 0o600); err != nil {
		return fmt.Errorf("clusterpki: %w", err)
	}
	return nil
}

func (f *fileStore) putToken(_ context.Context, id, digest string, expires time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	toks := map[string]tokenRecord{}
	if err := f.readJSON("join-tokens.json", &toks); err != nil {
		return err
	}
	for k, t := range toks {
		if time.Now().After(t.Expires) {
			delete(toks, k) // keep the file bounded by the live tokens
		}
	}
	toks[id] = tokenRecord{Digest: digest, Expires: expires}
	return f.writeJSON("join-tokens.json", toks)
}

func (f *fileStore) tokenDigest(_ context.Context, id string, now time.Time) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	toks := map[string]tokenRecord{}
	if err := f.readJSON("join-tokens.json", &toks); err != nil {
		return "", err
	}
	t, ok := toks[id]
	if !ok || !now.Before(t.Expires) {
		return "", nil
	}
	return t.Digest, nil
}

func (f *fileStore) revoke(_ context.Context, node string, at time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	rev := map[string]time.Time{}
	if err := f.readJSON("revoked.json", &rev); err != nil {
		return err
	}
	rev[node] = at
	return f.writeJSON("revoked.json", rev)
}

func (f *fileStore) revocations(context.Context) (map[string]time.Time, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	rev := map[string]time.Time{}
	return rev, f.readJSON("revoked.json", &rev)
}

func (f *fileStore) close() error { return nil }

// redisStore keeps the CA (its key sealed with the CA secret), tokens and revocations in Redis,
// shared by every gateway.
type redisStore struct {
	c      *redis.Client
	secret string
}

var _ store = (*redisStore)(nil)

const (
	keyCA      = "herd:pki:ca"
	keyRevoked = "herd:pki:revoked"
	keyToken   = "herd:pki:join:"
)

type sharedCA struct {
	Cert      string `json:"cert"`
	SealedKey []byte `json:"sealed_key"`
}

func openRedisStore(ctx context.Context, url, secret string) (*redisStore, error) {
	o, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("clusterpki: redis url: %w", err)
	}
	o.ReadTimeout, o.WriteTimeout = time.Second, time.Second
	c := redis.NewClient(o)
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("clusterpki: redis: %w", err)
	}
	return &redisStore{c: c, secret: secret}, nil
}

func (r *redisStore) loadCA(ctx context.Context) (*pki.CA, error) {
	data, err := r.c.Get(ctx, keyCA).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("clusterpki: redis: %w", err)
	}
	var s sharedCA
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("clusterpki: stored CA: %w", err)
	}
	keyPEM, err := pki.Open(s.SealedKey, r.secret)
	if err != nil {
		return nil, err
	}
	return pki.ParseCA([]byte(s.Cert), keyPEM)
}

func (r *redisStore) createCA(ctx context.Context, ca *pki.CA) (*pki.CA, error) {
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		return nil, err
	}
	sealed, err := pki.Seal(keyPEM, r.secret)
	if err != nil {
		return nil, err
	}
	data, err := json.Marshal(sharedCA{Cert: string(ca.CertPEM), SealedKey: sealed})
	if err != nil {
		return nil, err
	}
	// Two gateways starting at once: one CA wins, both use it.
	if err := r.c.SetNX(ctx, keyCA, data, 0).Err(); err != nil {
		return nil, fmt.Errorf("clusterpki: redis: %w", err)
	}
	return r.loadCA(ctx)
}

func (r *redisStore) putToken(ctx context.Context, id, digest string, expires time.Time) error {
	if err := r.c.Set(ctx, keyToken+id, digest, time.Until(expires)).Err(); err != nil {
		return fmt.Errorf("clusterpki: redis: %w", err)
	}
	return nil
}

func (r *redisStore) tokenDigest(ctx context.Context, id string, _ time.Time) (string, error) {
	d, err := r.c.Get(ctx, keyToken+id).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("clusterpki: redis: %w", err)
	}
	return d, nil
}

func (r *redisStore) revoke(ctx context.Context, node string, at time.Time) error {
	if err := r.c.HSet(ctx, keyRevoked, node, at.UnixNano()).Err(); err != nil {
		return fmt.Errorf("clusterpki: redis: %w", err)
	}
	return nil
}

func (r *redisStore) revocations(ctx context.Context) (map[string]time.Time, error) {
	m, err := r.c.HGetAll(ctx, keyRevoked).Result()
	if err != nil {
		return nil, fmt.Errorf("clusterpki: redis: %w", err)
	}
	out := make(map[string]time.Time, len(m))
	for node, v := range m {
		var ns int64
		if _, err := fmt.Sscan(v, &ns); err == nil {
			out[node] = time.Unix(0, ns)
		}
	}
	return out, nil
}

func (r *redisStore) close() error { return r.c.Close() }

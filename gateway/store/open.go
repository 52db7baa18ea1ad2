package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// BoltFile is the name of the embedded store's file in the data dir.
const BoltFile = "herd.db"

// Config says which store Open opens.
type Config struct {
	// RedisURL ("redis://host:6379/0"), when set, selects Redis.
	RedisURL string
	// Dir is the data dir; without RedisURL the embedded store is its BoltFile (Dir is created).
	Dir string
}

// Open opens the store cfg asks for: Redis when cfg.RedisURL is set, else the embedded bbolt file
// in cfg.Dir. The caller closes it.
func Open(ctx context.Context, cfg Config) (Store, error) {
	if cfg.RedisURL != "" {
		r, err := OpenRedis(ctx, cfg.RedisURL)
		if err != nil {
			return nil, err // not a typed nil inside the interface
		}
		return r, nil
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	b, err := OpenBolt(filepath.Join(cfg.Dir, BoltFile))
	if err != nil {
		return nil, err
	}
	return b, nil
}

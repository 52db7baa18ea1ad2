package store_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/herd-llm/herd/gateway/store"
	"github.com/herd-llm/herd/gateway/store/storetest"
)

func TestOpen(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data", "nested")
	s, err := store.Open(ctx, store.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.(*store.Bolt); !ok {
		t.Fatalf("no Redis URL opened %T, want the embedded store", s)
	}
	if _, err := os.Stat(filepath.Join(dir, store.BoltFile)); err != nil {
		t.Fatalf("embedded store not in the data dir: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// A data dir that cannot be created is an error, and no typed nil hides in the interface.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if s, err := store.Open(ctx, store.Config{Dir: filepath.Join(file, "sub")}); err == nil || s != nil {
		t.Fatalf("Open under a file = %v, %v; want an error and a nil store", s, err)
	}

	url := storetest.StartRedis(t)
	r, err := store.Open(ctx, store.Config{RedisURL: url, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r.(*store.Redis); !ok {
		t.Fatalf("Redis URL opened %T", r)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err := store.Open(ctx, store.Config{RedisURL: "redis://127.0.0.1:1/0", Dir: dir}); err == nil || s != nil {
		t.Fatalf("unreachable Redis = %v, %v; want an error and a nil store", s, err)
	}
}

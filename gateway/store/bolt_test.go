package store_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/herd-llm/herd/gateway/store"
	"github.com/herd-llm/herd/gateway/store/storetest"
)

func TestBoltConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := store.OpenBolt(filepath.Join(t.TempDir(), "herd.db"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestBoltReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "herd.db")
	storetest.RunReopen(t, func(t *testing.T) store.Store {
		s, err := store.OpenBolt(path)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// A bbolt file is held by one process at a time, so claims found at open are a dead process's
// and must be claimable at once, whatever minIdle.
func TestBoltOpenReleasesClaims(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "herd.db")
	s, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	id := store.NewID("batch_", time.Now())
	if err := s.Enqueue(ctx, id); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Claim(ctx, "old", time.Hour); err != nil || got != id {
		t.Fatalf("Claim = %q, %v", got, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, err := s.Claim(ctx, "new", time.Hour); err != nil || got != id {
		t.Fatalf("Claim after reopen = %q, %v; want %q", got, err, id)
	}
}

func TestNewIDSortsByTime(t *testing.T) {
	base := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	prev := ""
	for i := range 100 {
		id := store.NewID("file-", base.Add(time.Duration(i)*time.Nanosecond))
		if id <= prev {
			t.Fatalf("%s sorts before %s", id, prev)
		}
		prev = id
	}
	if a, b := store.NewID("x", base), store.NewID("x", base); a == b {
		t.Fatal("two IDs at the same instant collide")
	}
}

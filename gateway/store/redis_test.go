package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herd-llm/herd/gateway/store"
	"github.com/herd-llm/herd/gateway/store/storetest"
)

func TestRedisConformance(t *testing.T) {
	url := storetest.StartRedis(t)
	n := 0
	storetest.Run(t, func(t *testing.T) store.Store {
		n++ // one server, a key prefix per subtest
		s, err := store.OpenRedis(context.Background(), url, store.WithRedisPrefix(fmt.Sprintf("t%d:", n)))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestRedisReopen(t *testing.T) {
	url := storetest.StartRedis(t)
	storetest.RunReopen(t, func(t *testing.T) store.Store {
		s, err := store.OpenRedis(context.Background(), url, store.WithRedisPrefix("reopen:"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestRedisBadURL(t *testing.T) {
	if _, err := store.OpenRedis(context.Background(), "not a url"); err == nil {
		t.Fatal("OpenRedis accepted a bad URL")
	}
}

// A Redis server that went away is ErrUnavailable (the gateway answers 503 and Retry-After), not
// a plain error (500); a missing object is still ErrNotFound while it is up.
func TestRedisUnavailable(t *testing.T) {
	ctx := context.Background()
	url := storetest.StartRedis(t)
	s, err := store.OpenRedis(ctx, url, store.WithRedisPrefix("down:"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.GetFile(ctx, "file-00"); !errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("GetFile while up: %v", err)
	}
	o, _ := redis.ParseURL(url)
	admin := redis.NewClient(o)
	_ = admin.Shutdown(ctx).Err() // answers with a closed connection
	admin.Close()
	for _, call := range []struct {
		name string
		fn   func() error
	}{
		{"GetFile", func() error { _, err := s.GetFile(ctx, "file-00"); return err }},
		{"ListBatches", func() error { _, _, err := s.ListBatches(ctx, store.ListOptions{}); return err }},
		{"CreateKey", func() error { return s.CreateKey(ctx, store.APIKey{ID: "key_1", Name: "n"}) }},
		{"Claim", func() error { _, err := s.Claim(ctx, "c", time.Second); return err }},
	} {
		if err := call.fn(); !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s with Redis down: err = %v, want ErrUnavailable", call.name, err)
		}
	}
}

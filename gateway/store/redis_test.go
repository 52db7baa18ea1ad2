package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
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

// TestRedisRestartedEmpty kills Redis and starts an empty one on the same port: the consumer
// group is gone, and Claim must re-create it instead of failing with NOGROUP forever.
func TestRedisRestartedEmpty(t *testing.T) {
	srv := storetest.StartRedisServer(t)
	ctx := context.Background()
	s, err := store.OpenRedis(ctx, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.CreateBatch(ctx, store.Batch{ID: "batch_old", Status: store.StatusValidating}); err != nil {
		t.Fatal(err)
	}
	if err := s.Enqueue(ctx, "batch_old"); err != nil {
		t.Fatal(err)
	}
	srv.Restart()
	// The client reconnects by itself; the first command may still see the old connection fail.
	var claimed string
	for range 10 {
		if claimed, err = s.Claim(ctx, "gw", time.Minute); err == nil {
			break
		}
	}
	if err != nil || claimed != "" {
		t.Fatalf("Claim on an empty Redis = %q, %v; want nothing and no error", claimed, err)
	}
	if err := s.CreateBatch(ctx, store.Batch{ID: "batch_new", Status: store.StatusValidating}); err != nil {
		t.Fatal(err)
	}
	if err := s.Enqueue(ctx, "batch_new"); err != nil {
		t.Fatal(err)
	}
	// Enqueue re-created the stream without the group: Claim re-creates the group and gets it.
	if claimed, err = s.Claim(ctx, "gw", time.Minute); err != nil || claimed != "batch_new" {
		t.Fatalf("Claim after restart = %q, %v; want batch_new", claimed, err)
	}
	if err := s.Renew(ctx, "gw", "batch_new"); err != nil {
		t.Fatalf("Renew after restart: %v", err)
	}
}

// TestRedisHeld lists the claims a consumer holds, which a restarted gateway resumes at once.
func TestRedisHeld(t *testing.T) {
	url := storetest.StartRedis(t)
	ctx := context.Background()
	s, err := store.OpenRedis(ctx, url, store.WithRedisPrefix("held:"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, id := range []string{"b1", "b2", "b3"} {
		if err := s.CreateBatch(ctx, store.Batch{ID: id, Status: store.StatusValidating}); err != nil {
			t.Fatal(err)
		}
		if err := s.Enqueue(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []string{"gw-a", "gw-a", "gw-b"} {
		if _, err := s.Claim(ctx, c, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		consumer string
		want     []string
	}{{"gw-a", []string{"b1", "b2"}}, {"gw-b", []string{"b3"}}, {"gw-c", nil}} {
		got, err := s.Held(ctx, tc.consumer)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("Held(%s) = %v, %v; want %v", tc.consumer, got, err, tc.want)
		}
	}
	if err := s.Ack(ctx, "b1"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Held(ctx, "gw-a"); !slices.Equal(got, []string{"b2"}) {
		t.Errorf("Held(gw-a) after ack = %v", got)
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

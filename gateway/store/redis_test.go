package store_test

import (
	"context"
	"fmt"
	"testing"

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

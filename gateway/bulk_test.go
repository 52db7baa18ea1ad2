package gateway

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/herd-llm/herd/gateway/store/storetest"
	"github.com/herd-llm/herd/models"
)

// TestInitBulk opens the bulk engine the way New does, from a Config, and closes it.
func TestInitBulk(t *testing.T) {
	dir := t.TempDir()
	presetsFile := filepath.Join(dir, "presets.yaml")
	if err := os.WriteFile(presetsFile, []byte("presets:\n  - name: poet\n    model: llama3.1:8b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &Server{cfg: Config{DataDir: filepath.Join(dir, "data"), PresetsFile: presetsFile}, log: slog.New(slog.DiscardHandler)}
	if err := s.initBulk(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.presets.Lookup("poet"); !ok {
		t.Fatal("file preset not loaded")
	}
	if err := s.closeBulk(); err != nil {
		t.Fatal(err)
	}
	s.cfg.PresetsFile = filepath.Join(dir, "nope.yaml")
	if err := s.initBulk(context.Background()); err == nil {
		t.Fatal("missing presets file accepted")
	}
	// The failed start closed the store it had opened: the bbolt file can be opened again.
	s.cfg.PresetsFile = ""
	if err := s.initBulk(context.Background()); err != nil {
		t.Fatalf("store left locked by a failed start: %v", err)
	}
	if err := s.closeBulk(); err != nil {
		t.Fatal(err)
	}
}

// TestInitBulkRedis shares presets between two gateways through Redis.
func TestInitBulkRedis(t *testing.T) {
	url := storetest.StartRedis(t)
	ctx := context.Background()
	dir := t.TempDir()
	open := func() *Server {
		s := &Server{cfg: Config{DataDir: dir, RedisURL: url}, log: slog.New(slog.DiscardHandler)}
		if err := s.initBulk(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.closeBulk() })
		return s
	}
	a, b := open(), open()
	if _, err := a.presets.Put(ctx, models.Preset{Name: "shared", Model: "m"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := b.presets.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.presets.Lookup("shared"); !ok {
		t.Fatal("preset stored through one gateway is not seen by the other")
	}
	bad := &Server{cfg: Config{DataDir: dir, RedisURL: "redis://127.0.0.1:1/0"}, log: slog.New(slog.DiscardHandler)}
	if err := bad.initBulk(ctx); err == nil {
		bad.closeBulk()
		t.Fatal("unreachable Redis accepted")
	}
}

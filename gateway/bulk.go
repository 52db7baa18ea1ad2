package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/herd-llm/herd/gateway/batch"
	"github.com/herd-llm/herd/gateway/presets"
	"github.com/herd-llm/herd/gateway/s3files"
	"github.com/herd-llm/herd/gateway/store"
	"github.com/herd-llm/herd/models"
)

// gatewayID is Config.GatewayID, else the host name and the listen port: unique per gateway of a
// cluster and stable across restarts (it names the gateway's claims on the batch queue).
func (s *Server) gatewayID() string {
	if s.cfg.GatewayID != "" {
		return s.cfg.GatewayID
	}
	host, _ := os.Hostname()
	if host == "" {
		host = "gateway"
	}
	_, port, err := net.SplitHostPort(s.cfg.Listen)
	if err != nil || port == "" || port == "0" {
		// No stable port: a name of its own per process, so that two gateways never share one.
		return fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	return host + ":" + port
}

// initBulk wires the bulk engine: it opens the store Config asks for, the presets over it and
// the batch service. It must run before the routes are served; closeBulk undoes it.
func (s *Server) initBulk(ctx context.Context) error {
	st, err := store.Open(ctx, store.Config{RedisURL: s.cfg.RedisURL, Dir: s.cfg.DataDir})
	if err != nil {
		return fmt.Errorf("gateway: store: %w", err)
	}
	book, err := presets.Open(ctx, s.cfg.PresetsFile, st)
	if err != nil {
		_ = st.Close()
		return fmt.Errorf("gateway: %w", err)
	}
	var contents batch.Contents
	if s.cfg.FilesURL != "" {
		// Downloads are staged in the data dir's files/, which batch.New makes.
		s3, err := s3files.Open(ctx, s.cfg.FilesURL, filepath.Join(s.cfg.DataDir, "files"))
		if err != nil {
			_ = st.Close()
			return fmt.Errorf("gateway: %w", err)
		}
		contents = s3
	}
	bcfg := s.cfg.Batch
	if bcfg.ModelGrace == 0 {
		bcfg.ModelGrace = max(10*time.Second, 3*s.cfg.HeartbeatInterval)
	}
	svc, err := batch.New(batch.Options{
		Contents:   contents,
		Store:      st,
		Dir:        s.cfg.DataDir,
		Dispatcher: s.dispatcher(),
		Config:     bcfg,
		Models:     batchModels{s},
		Logger:     s.log.With("component", "batch"),
		Observer:   batchObserver{s.metrics},
		SharedDir:  s.cfg.RedisURL != "",
		Consumer:   s.gatewayID(),
		Tracer:     s.core.tracer,
	})
	if err != nil {
		_ = st.Close()
		return fmt.Errorf("gateway: %w", err)
	}
	s.bulkStore, s.presets, s.batches = st, book, svc
	return nil
}

// batchModels tells the batch validator whether a line's model can run: the request path's own
// resolution (a model some node, fresh or stale, serves or has on disk, under its name or its
// Ollama spelling; else a preset whose base model is such a model), without a request.
type batchModels struct{ s *Server }

var _ batch.Models = batchModels{}

// CheckModel implements batch.Models.
func (m batchModels) CheckModel(model string) string {
	snap := m.s.registry.Snapshot()
	known := func(name string) bool {
		if _, _, ok := findModel(snap, []byte(name), false); ok {
			return true
		}
		_, _, ok := findModel(snap, []byte(models.NormalizeName(name)), true)
		return ok
	}
	if known(model) {
		return ""
	}
	if p, ok := m.s.presets.Lookup(model); ok {
		if known(p.Model) {
			return ""
		}
		return fmt.Sprintf("preset `%s` runs on model `%s`, which no node serves or has on disk", p.Name, p.Model)
	}
	return fmt.Sprintf("The model `%s` does not exist: no node serves it or has it on disk, and no preset has that name.", model)
}

// runBulk runs the batch runner (which first resumes batches a crash left unfinished) and keeps
// the presets fresh, until ctx is done.
func (s *Server) runBulk(ctx context.Context) {
	if s.batches == nil {
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { s.presets.Refresh(ctx, presets.RefreshInterval, s.log) })
	if err := s.batches.Run(ctx); err != nil && ctx.Err() == nil {
		s.log.Error("batch runner stopped", "err", err)
	}
	wg.Wait()
}

// closeBulk closes the rate limiter's connection and the store. Call it after runBulk returned.
func (s *Server) closeBulk() error {
	var err error
	if s.limiterClose != nil {
		err = s.limiterClose()
		s.limiterClose = nil
	}
	if s.bulkStore == nil {
		return err
	}
	err = errors.Join(err, s.bulkStore.Close())
	s.bulkStore = nil
	return err
}

package gateway

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

// initBulk opens the store, loads the presets and builds the batch service. It must run before
// the routes are served; closeBulk undoes it.
func (s *Server) initBulk(ctx context.Context) error {
	var filePresets []models.Preset
	if s.cfg.PresetsFile != "" {
		data, err := os.ReadFile(s.cfg.PresetsFile)
		if err != nil {
			return fmt.Errorf("presets file: %w", err)
		}
		if filePresets, err = models.ParsePresets(data); err != nil {
			return fmt.Errorf("presets file %s: %w", s.cfg.PresetsFile, err)
		}
	}
	st, err := s.openBulkStore(ctx)
	if err != nil {
		return fmt.Errorf("gateway: store: %w", err)
	}
	book := newPresetBook(filePresets, st)
	if err := book.reload(ctx); err != nil {
		_ = st.Close()
		return fmt.Errorf("gateway: %w", err)
	}
	svc, err := batch.New(batch.Options{
		Store:      st,
		Dir:        s.cfg.DataDir,
		Dispatcher: s.dispatcher(),
		Config:     s.cfg.Batch,
		Logger:     s.log.With("component", "batch"),
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

// runBulk runs the batch runner (which first resumes batches a crash left unfinished) and keeps
// the presets fresh, until ctx is done.
func (s *Server) runBulk(ctx context.Context) {
	if s.batches == nil {
		return
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(presetRefreshInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := s.presets.reload(ctx); err != nil && ctx.Err() == nil {
					s.log.Warn("presets refresh failed", "err", err)
				}
			}
		}
	}()
	if err := s.batches.Run(ctx); err != nil && ctx.Err() == nil {
		s.log.Error("batch runner stopped", "err", err)
	}
	wg.Wait()
}

// closeBulk closes the store. Call it after runBulk returned.
func (s *Server) closeBulk() error {
	if s.bulkStore == nil {
		return nil
	}
	err := s.bulkStore.Close()
	s.bulkStore = nil
	return err
}


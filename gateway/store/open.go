package store

// openBulkStore opens the store Config asks for.
func (s *Server) openBulkStore(ctx context.Context) (store.Store, error) {
	if s.cfg.RedisURL != "" {
		r, err := store.OpenRedis(ctx, s.cfg.RedisURL)
		if err != nil {
			return nil, err // not a typed nil inside the interface
		}
		return r, nil
	}
	if err := os.MkdirAll(s.cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	return store.OpenBolt(filepath.Join(s.cfg.DataDir, "herd.db"))
}


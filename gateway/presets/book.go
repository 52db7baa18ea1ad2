package presets

// presetRefreshInterval bounds how long a preset stored through another gateway (Redis) takes to
// be seen here.
const presetRefreshInterval = 5 * time.Second

// presetBook holds the presets the gateway resolves model names against: those of
// Config.PresetsFile, read at start, and those stored through the admin API, which override a
// file preset of the same name. Lookups read an immutable map swapped under a lock, so the
// request path never waits on the store.
type presetBook struct {
	st   store.Presets
	file map[string]models.Preset

	mu     sync.RWMutex
	merged map[string]models.Preset
	stored map[string]bool
}

func newPresetBook(file []models.Preset, st store.Presets) *presetBook {
	b := &presetBook{st: st, file: make(map[string]models.Preset, len(file))}
	for _, p := range file {
		b.file[p.Name] = p
	}
	b.merged = b.file
	return b
}

// Lookup returns the preset called name. A nil book has none.
func (b *presetBook) Lookup(name string) (*models.Preset, bool) {
	if b == nil {
		return nil, false
	}
	b.mu.RLock()
	p, ok := b.merged[name]
	b.mu.RUnlock()
	if !ok {
		return nil, false
	}
	return &p, true
}

// List returns every preset, by name. A nil book has none.
func (b *presetBook) List() []models.Preset {
	if b == nil {
		return nil
	}
	b.mu.RLock()
	out := make([]models.Preset, 0, len(b.merged))
	for _, p := range b.merged {
		out = append(out, p)
	}
	b.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// isStored reports whether name is a stored preset (as opposed to one of the file's only).
func (b *presetBook) isStored(name string) bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.stored[name]
}

// reload rebuilds the merged view from the file's presets and the store's.
func (b *presetBook) reload(ctx context.Context) error {
	stored, err := b.st.ListPresets(ctx)
	if err != nil {
		return fmt.Errorf("presets: %w", err)
	}
	merged := make(map[string]models.Preset, len(b.file)+len(stored))
	for name, p := range b.file {
		merged[name] = p
	}
	names := make(map[string]bool, len(stored))
	for _, p := range stored {
		merged[p.Name] = p
		names[p.Name] = true
	}
	b.mu.Lock()
	b.merged, b.stored = merged, names
	b.mu.Unlock()
	return nil
}

// put stores p, a new version of the preset of that name, and returns it as stored.
func (b *presetBook) put(ctx context.Context, p models.Preset, now time.Time) (models.Preset, error) {
	prev, err := b.st.GetPreset(ctx, p.Name)
	switch {
	case err == nil:
		p.Version = prev.Version + 1
		p.CreatedAt = prev.CreatedAt
	case errors.Is(err, store.ErrNotFound):
		p.Version = 1
		if fp, ok := b.file[p.Name]; ok {
			p.Version = max(fp.Version, 1) + 1
		}
		p.CreatedAt = now.UTC()
	default:
		return models.Preset{}, fmt.Errorf("presets: %w", err)
	}
	p.UpdatedAt = now.UTC()
	if err := b.st.PutPreset(ctx, p); err != nil {
		return models.Preset{}, fmt.Errorf("presets: %w", err)
	}
	return p, b.reload(ctx)
}

// remove deletes a stored preset; a file preset of the same name shows through again.
func (b *presetBook) remove(ctx context.Context, name string) error {
	if err := b.st.DeletePreset(ctx, name); err != nil {
		return fmt.Errorf("presets: %w", err)
	}
	return b.reload(ctx)
}


// Package presets keeps the presets ("offline custom GPTs": a base model, a system prompt and
// default parameters) the gateway resolves model names against, and serves their admin routes
// (/admin/v1/presets). Its Book merges the presets of the presets file, read at start, with those
// stored through the admin API (in the gateway's store, so several gateways on one Redis share
// them); the gateway's request path only calls Lookup and applies what it finds.
//
// Decisions made here:
//   - A stored preset overrides a file preset of the same name; deleting it shows the file's
//     again. A file preset cannot be deleted through the API, only overridden.
//   - Versions are the operator's when given, else numbered here (see Book.Put); a PUT that
//     changes nothing stores nothing, so applying the same presets file twice is a no-op.
//   - Presets stored through another gateway are seen after at most RefreshInterval (Refresh).
package presets

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/herd-llm/herd/gateway/store"
	"github.com/herd-llm/herd/models"
)

// Store keeps the presets stored through the admin API: the gateway's store. GetPreset and
// DeletePreset return an error wrapping store.ErrNotFound for an unknown name.
type Store interface {
	PutPreset(ctx context.Context, p models.Preset) error
	GetPreset(ctx context.Context, name string) (models.Preset, error)
	DeletePreset(ctx context.Context, name string) error
	ListPresets(ctx context.Context) ([]models.Preset, error)
}

var (
	_ Store = (*store.Bolt)(nil)
	_ Store = (*store.Redis)(nil)
)

// RefreshInterval bounds how long a preset stored through another gateway (Redis) takes to be
// seen here, when Refresh runs at it.
const RefreshInterval = 5 * time.Second

// Book holds the presets the gateway resolves model names against: those of the presets file,
// read at start, and those stored through the admin API, which override a
// file preset of the same name. Lookups read an immutable map swapped under a lock, so the
// request path never waits on the store.
type Book struct {
	st   Store
	file map[string]models.Preset

	mu     sync.RWMutex
	merged map[string]models.Preset
	stored map[string]bool
}

// New returns a book of the file's presets over st; Reload reads the stored ones.
func New(file []models.Preset, st Store) *Book {
	b := &Book{st: st, file: make(map[string]models.Preset, len(file))}
	for _, p := range file {
		p.Version = max(p.Version, 1) // a file preset without a version is at version 1
		b.file[p.Name] = p
	}
	b.merged = b.file
	return b
}

// Lookup returns the preset called name. A nil book has none.
func (b *Book) Lookup(name string) (*models.Preset, bool) {
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
func (b *Book) List() []models.Preset {
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

// IsStored reports whether name is a stored preset (as opposed to one of the file's only).
func (b *Book) IsStored(name string) bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.stored[name]
}

// Reload rebuilds the merged view from the file's presets and the store's.
func (b *Book) Reload(ctx context.Context) error {
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

// Put stores p and returns the preset as it now is. Versions (decisions):
//   - p's content equal to the current preset's (the stored one, else the file's) changes
//     nothing: the current preset is returned as it is, its version not bumped, so applying the
//     same file twice is a no-op.
//   - Without a version, p becomes the current version + 1 (1 for a new preset).
//   - An explicit version is kept as given (the YAML's `version:` is the operator's): it may not be
//     lower than the current version, nor equal to it with other content (*VersionConflictError).
func (b *Book) Put(ctx context.Context, p models.Preset, now time.Time) (models.Preset, error) {
	cur, found := models.Preset{}, false
	prev, err := b.st.GetPreset(ctx, p.Name)
	switch {
	case err == nil:
		cur, found = prev, true
	case errors.Is(err, store.ErrNotFound):
		if fp, ok := b.file[p.Name]; ok {
			cur, found = fp, true
			cur.Version = max(cur.Version, 1)
		}
	default:
		return models.Preset{}, fmt.Errorf("presets: %w", err)
	}
	if found && p.SameContent(cur) && (p.Version == 0 || p.Version == cur.Version) {
		return cur, nil
	}
	switch {
	case p.Version == 0 && found:
		p.Version = cur.Version + 1
	case p.Version == 0:
		p.Version = 1
	case found && p.Version <= cur.Version:
		return models.Preset{}, &VersionConflictError{Name: p.Name, Current: cur.Version}
	}
	p.CreatedAt = now.UTC()
	if err == nil {
		p.CreatedAt = prev.CreatedAt
	}
	p.UpdatedAt = now.UTC()
	if err := b.st.PutPreset(ctx, p); err != nil {
		return models.Preset{}, fmt.Errorf("presets: %w", err)
	}
	return p, b.Reload(ctx)
}

// VersionConflictError is Put's refusal of a changed preset at a version not above the current
// one (the handlers answer 409 preset_version_conflict).
type VersionConflictError struct {
	Name    string
	Current int
}

func (e *VersionConflictError) Error() string {
	return fmt.Sprintf("preset %q is at version %d: a changed preset needs a higher version (or none, to have it numbered)", e.Name, e.Current)
}

// Remove deletes a stored preset; a file preset of the same name shows through again.
func (b *Book) Remove(ctx context.Context, name string) error {
	if err := b.st.DeletePreset(ctx, name); err != nil {
		return fmt.Errorf("presets: %w", err)
	}
	return b.Reload(ctx)
}

// LoadFile reads a presets file (YAML, "presets: [...]"); an empty path has none.
func LoadFile(path string) ([]models.Preset, error) {
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("presets file: %w", err)
	}
	ps, err := models.ParsePresets(data)
	if err != nil {
		return nil, fmt.Errorf("presets file %s: %w", path, err)
	}
	return ps, nil
}

// Open loads the presets file at path (none when empty), builds the book over st and reads the
// stored presets.
func Open(ctx context.Context, path string, st Store) (*Book, error) {
	file, err := LoadFile(path)
	if err != nil {
		return nil, err
	}
	b := New(file, st)
	if err := b.Reload(ctx); err != nil {
		return nil, err
	}
	return b, nil
}

// Refresh reloads the stored presets every interval until ctx is done, so that presets stored
// through another gateway are seen here; a failed reload is logged and the last view kept.
func (b *Book) Refresh(ctx context.Context, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := b.Reload(ctx); err != nil && ctx.Err() == nil {
				log.Warn("presets refresh failed", "err", err)
			}
		}
	}
}

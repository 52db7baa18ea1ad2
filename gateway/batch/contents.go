package batch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/herd-llm/herd/atomicfile"
)

// Contents keeps the files' contents (uploads, batch outputs): a directory by default, or an
// object store (gateway/s3files) so that several gateways need no shared filesystem. Contents
// are written once, whole, and never changed; metadata stays in the store.
type Contents interface {
	// Commit makes the finished local file tmp the content of id. tmp is consumed: renamed in
	// place or uploaded and removed. After Commit returns nil the content is durable.
	Commit(ctx context.Context, id, tmp string) error
	// Open returns id's content as a local file positioned at its start (close it); an error
	// wrapping fs.ErrNotExist when there is none.
	Open(ctx context.Context, id string) (*os.File, error)
	// Remove deletes id's content; a missing one is not an error.
	Remove(ctx context.Context, id string) error
}

// dirContents keeps contents as files named by their ID in one directory (the data dir's files/).
type dirContents struct{ dir string }

var _ Contents = dirContents{}

func (d dirContents) path(id string) string { return filepath.Join(d.dir, id) }

func (d dirContents) Commit(_ context.Context, id, tmp string) error {
	if err := os.Rename(tmp, d.path(id)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("batch: store %s: %w", id, err)
	}
	// The rename is durable only once the directory is synced.
	if err := atomicfile.SyncDir(d.dir); err != nil {
		return fmt.Errorf("batch: store %s: %w", id, err)
	}
	return nil
}

func (d dirContents) Open(_ context.Context, id string) (*os.File, error) {
	return os.Open(d.path(id))
}

func (d dirContents) Remove(_ context.Context, id string) error {
	if err := os.Remove(d.path(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("batch: remove %s: %w", id, err)
	}
	return nil
}

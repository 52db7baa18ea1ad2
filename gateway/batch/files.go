package batch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/herd-llm/herd/gateway/store"
)

// StagedFile is an upload written to a temporary file whose purpose is not known yet (multipart
// forms may send the purpose after the file). Commit or Discard it.
type StagedFile struct {
	s     *Service
	tmp   string
	bytes int64
	lines int
	// Owner becomes the file's owner (the uploading tenant's name) when it is committed.
	Owner string
}

// Bytes is the size of the staged upload.
func (f *StagedFile) Bytes() int64 { return f.bytes }

// Lines is the number of non-blank lines of the staged upload.
func (f *StagedFile) Lines() int { return f.lines }

// lineCounter counts non-blank lines of what is written through it.
type lineCounter struct {
	lines    int
	nonBlank bool
}

func (c *lineCounter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		seg := p
		if i >= 0 {
			seg = p[:i]
		}
		if !c.nonBlank && len(bytes.TrimSpace(seg)) > 0 {
			c.nonBlank = true
		}
		if i < 0 {
			break
		}
		if c.nonBlank {
			c.lines++
		}
		c.nonBlank = false
		p = p[i+1:]
	}
	return n, nil
}

func (c *lineCounter) total() int {
	if c.nonBlank {
		return c.lines + 1
	}
	return c.lines
}

// TempFile is a temporary file the service writes an upload or an output to (an *os.File).
type TempFile interface {
	io.Writer
	Name() string
	Sync() error
	Close() error
}

var _ TempFile = (*os.File)(nil)

// createTemp makes a temporary file through Options.CreateTemp, os.CreateTemp by default.
func (s *Service) createTemp(pattern string) (TempFile, error) {
	if s.mkTemp != nil {
		return s.mkTemp(s.filesDir, pattern)
	}
	return os.CreateTemp(s.filesDir, pattern)
}

// UploadError says an upload could not be read to its end: the client's body broke off (a
// truncated multipart body, a connection closed or too slow). It is the client's problem (400),
// not the gateway's.
type UploadError struct{ Err error }

// Error implements error.
func (e *UploadError) Error() string { return "batch: upload broke off: " + e.Err.Error() }

// Unwrap returns the read error.
func (e *UploadError) Unwrap() error { return e.Err }

// readErrors remembers the error its reader returned, so a failed copy can tell a broken upload
// from a failed write.
type readErrors struct {
	r   io.Reader
	err error
}

func (r *readErrors) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		r.err = err
	}
	return n, err
}

// StageFile copies r to a temporary file in the data dir, enforcing MaxFileBytes. A too-large
// upload is an *Error of KindTooLarge; one that breaks off an *UploadError; a full disk an error
// that wraps syscall.ENOSPC. Nothing is left behind on error.
func (s *Service) StageFile(r io.Reader) (*StagedFile, error) {
	tmp, err := s.createTemp(".upload-*")
	if err != nil {
		return nil, fmt.Errorf("batch: stage upload: %w", err)
	}
	discard := func() { tmp.Close(); os.Remove(tmp.Name()) }
	var lc lineCounter
	rr := &readErrors{r: io.LimitReader(r, s.cfg.MaxFileBytes+1)}
	n, err := io.Copy(io.MultiWriter(tmp, &lc), rr)
	if err != nil {
		discard()
		if rr.err != nil {
			return nil, &UploadError{Err: rr.err}
		}
		return nil, fmt.Errorf("batch: stage upload: %w", err)
	}
	if n > s.cfg.MaxFileBytes {
		discard()
		return nil, &Error{Kind: KindTooLarge, Code: "file_too_large", Param: "file",
			Message: fmt.Sprintf("file is larger than the %d bytes allowed", s.cfg.MaxFileBytes)}
	}
	if err := tmp.Sync(); err != nil {
		discard()
		return nil, fmt.Errorf("batch: stage upload: %w", err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return nil, fmt.Errorf("batch: stage upload: %w", err)
	}
	return &StagedFile{s: s, tmp: tmp.Name(), bytes: n, lines: lc.total()}, nil
}

// Temporary files are named with these prefixes; a crash can leave them behind.
var tempPrefixes = []string{".upload-", ".out-", ".tmp-"} // .tmp-: atomicfile

// removeStaleTemps removes temporary files a crash left in the files dir: those not modified for
// olderThan (0: all of them, when this process is the only one using the dir).
func removeStaleTemps(dir string, olderThan time.Duration, now time.Time, log *slog.Logger) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		log.Warn("listing the files dir for leftover temporary files failed", "err", err)
		return
	}
	removed := 0
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !slices.ContainsFunc(tempPrefixes, func(p string) bool { return strings.HasPrefix(name, p) }) {
			continue
		}
		if olderThan > 0 {
			info, err := e.Info()
			if err != nil || now.Sub(info.ModTime()) < olderThan {
				continue
			}
		}
		if err := os.Remove(filepath.Join(dir, name)); err == nil {
			removed++
		}
	}
	if removed > 0 {
		log.Info("removed temporary files left by an earlier run", "count", removed, "dir", dir)
	}
}

// Discard removes the staged upload.
func (f *StagedFile) Discard() { os.Remove(f.tmp) }

// Commit checks the purpose and line limit, moves the upload in place and records it. On error
// the staged file is discarded.
func (f *StagedFile) Commit(ctx context.Context, filename, purpose string) (store.File, error) {
	s := f.s
	switch purpose {
	case "":
		f.Discard()
		return store.File{}, invalid("missing_required_parameter", "purpose", "purpose is required")
	case PurposeBatch, PurposeUserData:
	default:
		f.Discard()
		return store.File{}, invalid("invalid_value", "purpose", "purpose %q is not supported here: use %q or %q", purpose, PurposeBatch, PurposeUserData)
	}
	if purpose == PurposeBatch && f.lines > s.cfg.MaxFileLines {
		f.Discard()
		return store.File{}, &Error{Kind: KindTooLarge, Code: "too_many_lines", Param: "file",
			Message: fmt.Sprintf("file has %d lines; a batch input file may have at most %d", f.lines, s.cfg.MaxFileLines)}
	}
	meta := store.File{
		ID: store.NewID("file-", s.now()), Bytes: f.bytes, CreatedAt: s.now().Unix(),
		Filename: cleanFilename(filename), Purpose: purpose, Status: "processed", Lines: f.lines, Owner: f.Owner,
	}
	if err := s.contents.Commit(ctx, meta.ID, f.tmp); err != nil {
		return store.File{}, fmt.Errorf("batch: store upload: %w", err)
	}
	if err := s.st.PutFile(ctx, meta); err != nil {
		s.contents.Remove(ctx, meta.ID)
		return store.File{}, fmt.Errorf("batch: %w", err)
	}
	return meta, nil
}

// CreateFile stores r as a new file.
func (s *Service) CreateFile(ctx context.Context, filename, purpose string, r io.Reader) (store.File, error) {
	f, err := s.StageFile(r)
	if err != nil {
		return store.File{}, err
	}
	return f.Commit(ctx, filename, purpose)
}

// cleanFilename keeps the base name a client sent, as valid UTF-8 of reasonable length: it is
// only ever echoed back, never used as a path.
func cleanFilename(name string) string {
	name = strings.ToValidUTF8(filepath.Base(strings.ReplaceAll(name, `\`, "/")), "_")
	if name == "." || name == "/" || name == "" {
		name = "upload"
	}
	for len(name) > 255 {
		_, size := utf8.DecodeLastRuneInString(name)
		name = name[:len(name)-size]
	}
	return name
}

// validID reports whether id could be one of ours: a prefix and hex digits, nothing path-like.
func validID(id, prefix string) bool {
	rest, ok := strings.CutPrefix(id, prefix)
	if !ok || len(rest) == 0 || len(rest) > 64 {
		return false
	}
	for _, c := range rest {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// GetFile returns a file's metadata.
func (s *Service) GetFile(ctx context.Context, id string) (store.File, error) {
	if !validID(id, "file-") {
		return store.File{}, notFound("file_id", "no such file: %s", id)
	}
	f, err := s.st.GetFile(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.File{}, notFound("file_id", "no such file: %s", id)
	}
	return f, err
}

// OpenFile returns a file's metadata and its content, for reading; close it.
func (s *Service) OpenFile(ctx context.Context, id string) (store.File, *os.File, error) {
	meta, err := s.GetFile(ctx, id)
	if err != nil {
		return store.File{}, nil, err
	}
	f, err := s.contents.Open(ctx, id)
	if errors.Is(err, os.ErrNotExist) {
		return store.File{}, nil, notFound("file_id", "the content of file %s is gone", id)
	}
	if err != nil {
		return store.File{}, nil, fmt.Errorf("batch: %w", err)
	}
	return meta, f, nil
}

// ListFiles lists files newest first.
func (s *Service) ListFiles(ctx context.Context, opts store.ListOptions) ([]store.File, bool, error) {
	return s.st.ListFiles(ctx, opts)
}

// DeleteFile removes a file's metadata and content.
func (s *Service) DeleteFile(ctx context.Context, id string) error {
	if !validID(id, "file-") {
		return notFound("file_id", "no such file: %s", id)
	}
	if err := s.st.DeleteFile(ctx, id); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return notFound("file_id", "no such file: %s", id)
		}
		return fmt.Errorf("batch: %w", err)
	}
	return s.contents.Remove(ctx, id)
}

// writeFileAtomic writes a file's content through write to a temporary file, synced, then
// commits it to the contents, so readers see the whole file or none of it. Stored files are
// private to the gateway (0600, os.CreateTemp's mode).
func (s *Service) writeFileAtomic(ctx context.Context, id string, write func(w io.Writer) error) (int64, error) {
	tmp, err := s.createTemp(".out-*")
	if err != nil {
		return 0, fmt.Errorf("batch: write %s: %w", id, err)
	}
	cw := &countingWriter{w: tmp}
	err = write(cw)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp.Name())
		return 0, fmt.Errorf("batch: write %s: %w", id, err)
	}
	if err := s.contents.Commit(ctx, id, tmp.Name()); err != nil {
		return 0, fmt.Errorf("batch: write %s: %w", id, err)
	}
	return cw.n, nil
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

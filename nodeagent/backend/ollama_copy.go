package backend

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/ollama/ollama/api"

	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// Ollama's layer media types (its manifest is an OCI-style image manifest).
const (
	mediaModel     = "application/vnd.ollama.image.model"
	mediaProjector = "application/vnd.ollama.image.projector"
	mediaTemplate  = "application/vnd.ollama.image.template"
	mediaSystem    = "application/vnd.ollama.image.system"
	mediaParams    = "application/vnd.ollama.image.params"
	mediaLicense   = "application/vnd.ollama.image.license"
)

// File names a ModelManifest uses for its blobs; Ollama's create API recognises GGUF files by the
// .gguf suffix and tells model from projector by the file's own metadata.
const (
	fileModel     = "model.gguf"
	fileProjector = "projector.gguf"
)

// Bounds on what Export reads into memory, against a corrupt models directory.
const (
	maxManifestBytes = 1 << 20
	maxTextLayer     = 4 << 20
)

// ollamaManifest is the JSON Ollama writes under manifests/.
type ollamaManifest struct {
	SchemaVersion int             `json:"schemaVersion"`
	MediaType     string          `json:"mediaType"`
	Config        manifestLayer   `json:"config"`
	Layers        []manifestLayer `json:"layers"`
}

type manifestLayer struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

// ollamaConfig holds the fields of Ollama's config blob that a copy must carry.
type ollamaConfig struct {
	Renderer   string `json:"renderer"`
	Parser     string `json:"parser"`
	Requires   string `json:"requires"`
	RemoteHost string `json:"remote_host"`
}

// parseManifest decodes an Ollama manifest and checks every digest is well formed, so nothing
// read from it can name a path outside blobs/.
func parseManifest(data []byte) (ollamaManifest, error) {
	var m ollamaManifest
	if err := json.Unmarshal(data, &m); err != nil {
		return m, fmt.Errorf("decode manifest: %w: %w", ErrInvalid, err)
	}
	if m.Config.Digest != "" {
		if _, err := blobPath(m.Config.Digest); err != nil {
			return m, fmt.Errorf("manifest config: %w", err)
		}
	}
	for _, l := range m.Layers {
		if _, err := blobPath(l.Digest); err != nil {
			return m, fmt.Errorf("manifest layer %s: %w", l.MediaType, err)
		}
		if l.Size < 0 {
			return m, fmt.Errorf("manifest layer %s: %w: negative size", l.MediaType, ErrInvalid)
		}
	}
	return m, nil
}

// Export describes model as the blobs and settings a peer needs to rebuild it, read from the
// models directory. Models with adapters, embedded messages or safetensors layouts are
// ErrUnsupported.
func (o *Ollama) Export(ctx context.Context, model string) (agentapi.ModelManifest, error) {
	name := NormalizeModelName(model)
	op := fmt.Sprintf("ollama export %q", name)
	rel, err := manifestPath(name)
	if err != nil {
		return agentapi.ModelManifest{}, fmt.Errorf("%s: %w", op, err)
	}
	data, err := o.readFile(rel, maxManifestBytes)
	if errors.Is(err, fs.ErrNotExist) {
		return agentapi.ModelManifest{}, fmt.Errorf("%s: %w in %s", op, ErrModelNotFound, o.modelsDir)
	}
	if err != nil {
		return agentapi.ModelManifest{}, fmt.Errorf("%s: %w", op, err)
	}
	mf, err := parseManifest(data)
	if err != nil {
		return agentapi.ModelManifest{}, fmt.Errorf("%s: %w", op, err)
	}

	out := agentapi.ModelManifest{Model: name, Files: map[string]string{}}
	addFile := func(file string, l manifestLayer) error {
		if _, dup := out.Files[file]; dup {
			return fmt.Errorf("%w: more than one %s layer", ErrUnsupported, l.MediaType)
		}
		out.Files[file] = l.Digest
		out.Blobs = append(out.Blobs, agentapi.Blob{Digest: l.Digest, Size: l.Size})
		return nil
	}
	for _, l := range mf.Layers {
		if err := ctx.Err(); err != nil {
			return agentapi.ModelManifest{}, err
		}
		switch l.MediaType {
		case mediaModel:
			err = addFile(fileModel, l)
		case mediaProjector:
			err = addFile(fileProjector, l)
		case mediaTemplate:
			out.Template, err = o.readLayerText(l)
		case mediaSystem:
			out.System, err = o.readLayerText(l)
		case mediaLicense:
			var text string
			if text, err = o.readLayerText(l); err == nil {
				out.License = append(out.License, text)
			}
		case mediaParams:
			var text string
			if text, err = o.readLayerText(l); err == nil {
				err = json.Unmarshal([]byte(text), &out.Parameters)
			}
		default:
			err = fmt.Errorf("%w: layer type %s", ErrUnsupported, l.MediaType)
		}
		if err != nil {
			return agentapi.ModelManifest{}, fmt.Errorf("%s: %w", op, err)
		}
	}
	if mf.Config.Digest != "" {
		text, err := o.readLayerText(mf.Config)
		if err != nil {
			return agentapi.ModelManifest{}, fmt.Errorf("%s: config: %w", op, err)
		}
		var cfg ollamaConfig
		if err := json.Unmarshal([]byte(text), &cfg); err != nil {
			return agentapi.ModelManifest{}, fmt.Errorf("%s: config: %w: %w", op, ErrInvalid, err)
		}
		if cfg.RemoteHost != "" {
			return agentapi.ModelManifest{}, fmt.Errorf("%s: %w: a remote model has no weights to copy", op, ErrUnsupported)
		}
		out.Renderer, out.Parser, out.Requires = cfg.Renderer, cfg.Parser, cfg.Requires
	}
	if _, ok := out.Files[fileModel]; !ok {
		return agentapi.ModelManifest{}, fmt.Errorf("%s: %w: no GGUF model layer", op, ErrUnsupported)
	}
	return out, nil
}

// readFile reads a file under the models directory, at most limit bytes.
func (o *Ollama) readFile(rel string, limit int64) ([]byte, error) {
	f, err := os.Open(filepath.Join(o.modelsDir, rel))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: %w: larger than %d bytes", rel, ErrInvalid, limit)
	}
	return data, nil
}

func (o *Ollama) readLayerText(l manifestLayer) (string, error) {
	rel, err := blobPath(l.Digest)
	if err != nil {
		return "", err
	}
	data, err := o.readFile(rel, maxTextLayer)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%s layer %s: %w", l.MediaType, l.Digest, ErrBlobNotFound)
	}
	return string(data), err
}

// OpenBlob opens the blob with digest in the models directory and returns its size.
func (o *Ollama) OpenBlob(ctx context.Context, digest string) (io.ReadCloser, int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	rel, err := blobPath(digest)
	if err != nil {
		return nil, 0, fmt.Errorf("open blob: %w", err)
	}
	f, err := os.Open(filepath.Join(o.modelsDir, rel))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("open blob %s: %w", digest, ErrBlobNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("open blob %s: %w", digest, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("open blob %s: %w", digest, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("open blob %s: %w: not a regular file", digest, ErrBlobNotFound)
	}
	return f, fi.Size(), nil
}

// validateImport checks a manifest from a peer before anything is fetched.
func validateImport(m agentapi.ModelManifest) (map[string]int64, error) {
	if _, err := manifestPath(m.Model); err != nil {
		return nil, err
	}
	sizes := map[string]int64{}
	for _, b := range m.Blobs {
		if _, err := blobPath(b.Digest); err != nil {
			return nil, err
		}
		if b.Size < 0 {
			return nil, fmt.Errorf("blob %s: %w: negative size", b.Digest, ErrInvalid)
		}
		if s, dup := sizes[b.Digest]; dup && s != b.Size {
			return nil, fmt.Errorf("blob %s: %w: listed with two sizes", b.Digest, ErrInvalid)
		}
		sizes[b.Digest] = b.Size
	}
	if len(m.Files) == 0 {
		return nil, fmt.Errorf("%w: manifest names no files", ErrInvalid)
	}
	for file, digest := range m.Files {
		if !fs.ValidPath(file) || strings.Contains(file, "/") || !strings.HasSuffix(file, ".gguf") {
			return nil, fmt.Errorf("file %q: %w: want a plain NAME.gguf", file, ErrInvalid)
		}
		if _, ok := sizes[digest]; !ok {
			return nil, fmt.Errorf("file %q: %w: digest %s not among the blobs", file, ErrInvalid, digest)
		}
	}
	return sizes, nil
}

// Import rebuilds the model m describes: every blob Ollama lacks is streamed from fetch into
// Ollama while it is hashed; a blob whose sha256 or size differs from the manifest stops the
// import with ErrDigestMismatch before any model is created. Then Ollama's create API assembles
// the model from the blobs and settings.
func (o *Ollama) Import(ctx context.Context, m agentapi.ModelManifest, fetch func(ctx context.Context, digest string) (io.ReadCloser, error), progress func(agentapi.Progress)) error {
	name := NormalizeModelName(m.Model)
	op := fmt.Sprintf("ollama import %q", name)
	if progress == nil {
		progress = func(agentapi.Progress) {}
	}
	sizes, err := validateImport(m)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	done := map[string]bool{}
	for _, b := range m.Blobs {
		if done[b.Digest] {
			continue
		}
		done[b.Digest] = true
		if err := o.importBlob(ctx, b.Digest, sizes[b.Digest], fetch, progress); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
	}

	req := &api.CreateRequest{
		Model:      name,
		Files:      m.Files,
		Template:   m.Template,
		System:     m.System,
		Parameters: m.Parameters,
		Renderer:   m.Renderer,
		Parser:     m.Parser,
		Requires:   m.Requires,
	}
	if len(m.License) > 0 {
		req.License = m.License
	}
	err = o.api.Create(ctx, req, func(p api.ProgressResponse) error {
		progress(agentapi.Progress{Status: p.Status, Digest: p.Digest, Total: p.Total, Completed: p.Completed})
		return nil
	})
	return classify(op, err)
}

func (o *Ollama) importBlob(ctx context.Context, digest string, size int64, fetch func(context.Context, string) (io.ReadCloser, error), progress func(agentapi.Progress)) error {
	has, err := o.hasBlob(ctx, digest)
	if err != nil {
		return err
	}
	if has {
		progress(agentapi.Progress{Status: "using existing blob " + shortDigest(digest), Digest: digest, Total: size, Completed: size})
		return nil
	}
	rc, err := fetch(ctx, digest)
	if err != nil {
		return fmt.Errorf("fetch blob %s: %w", digest, err)
	}
	defer rc.Close()

	status := "copying " + shortDigest(digest)
	progress(agentapi.Progress{Status: status, Digest: digest, Total: size})
	hr := &hashingReader{
		// One byte past the expected size is enough to know the peer sent too much.
		r: io.LimitReader(rc, size+1), h: sha256.New(),
		step: progressStep(size),
		report: func(n int64) {
			progress(agentapi.Progress{Status: status, Digest: digest, Total: size, Completed: min(n, size)})
		},
	}
	uploadErr := o.api.CreateBlob(ctx, digest, hr)
	if hr.err != nil && !errors.Is(hr.err, io.EOF) {
		return fmt.Errorf("fetch blob %s: %w", digest, hr.err)
	}
	if uploadErr != nil && hr.err == nil {
		// Ollama stopped before the stream ended: its error, no verdict on the bytes.
		return classify("upload blob "+digest, uploadErr)
	}
	// The whole stream went through the hash. Our check comes before Ollama's answer: it is the
	// one that names the culprit (the peer's bytes).
	if got := "sha256:" + hex.EncodeToString(hr.h.Sum(nil)); got != digest || hr.n != size {
		return fmt.Errorf("blob %s: %w: got %s, %d bytes (want %d)", digest, ErrDigestMismatch, got, hr.n, size)
	}
	if uploadErr != nil {
		return classify("upload blob "+digest, uploadErr)
	}
	progress(agentapi.Progress{Status: status, Digest: digest, Total: size, Completed: size})
	return nil
}

// hasBlob asks Ollama (HEAD /api/blobs/:digest) whether it has the blob; its Go client has no call
// for it.
func (o *Ollama) hasBlob(ctx context.Context, digest string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, endpointURL(o.base, "/api/blobs/"+digest).String(), nil)
	if err != nil {
		return false, err
	}
	resp, err := o.http.Do(req)
	if err != nil {
		return false, classify("ollama head blob", err)
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound:
		return false, nil
	default:
		return false, fmt.Errorf("ollama head blob %s: unexpected status %d", digest, resp.StatusCode)
	}
}

func shortDigest(d string) string {
	d = strings.TrimPrefix(d, "sha256:")
	if len(d) > 12 {
		d = d[:12]
	}
	return d
}

// progressStep is how many bytes pass between progress reports: about 1% of the blob, at least
// 1 MiB, so a multi-gigabyte copy reports a hundred times rather than a hundred thousand.
func progressStep(size int64) int64 {
	return max(size/100, 1<<20)
}

// hashingReader hashes and counts what passes through it and reports progress every step bytes.
type hashingReader struct {
	r        io.Reader
	h        hash.Hash
	n        int64
	err      error
	step     int64
	reported int64
	report   func(int64)
}

func (hr *hashingReader) Read(p []byte) (int, error) {
	n, err := hr.r.Read(p)
	if n > 0 {
		hr.h.Write(p[:n])
		hr.n += int64(n)
		if hr.n-hr.reported >= hr.step {
			hr.reported = hr.n
			hr.report(hr.n)
		}
	}
	if err != nil {
		hr.err = err
	}
	return n, err
}

package backend

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/ollama/ollama/types/model"
)

// NormalizeModelName returns an Ollama model name in its canonical short form: "tiny" and
// "tiny:latest" are both "tiny:latest", "registry.ollama.ai/library/tiny" too; a name from another
// host or namespace keeps them ("user/m:tag"). A name Ollama would reject is returned unchanged.
func NormalizeModelName(name string) string {
	n := model.ParseName(strings.TrimSpace(name))
	if !n.IsValid() {
		return name
	}
	return n.DisplayShortest()
}

// manifestPath is where Ollama keeps the manifest of name, relative to the models directory
// ("manifests/registry.ollama.ai/library/tiny/latest"). The name's parts are validated by
// Ollama's own rules, so the path cannot leave the directory.
func manifestPath(name string) (string, error) {
	n := model.ParseName(strings.TrimSpace(name))
	if !n.IsValid() {
		return "", fmt.Errorf("model name %q: %w", name, ErrInvalid)
	}
	rel := filepath.Join("manifests", n.Filepath())
	if !filepath.IsLocal(rel) {
		return "", fmt.Errorf("model name %q: %w", name, ErrInvalid)
	}
	return rel, nil
}

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// blobPath is where Ollama keeps the blob with digest ("sha256:<hex>"), relative to the models
// directory ("blobs/sha256-<hex>"). Only well-formed lower-case sha256 digests are accepted.
func blobPath(digest string) (string, error) {
	if !digestRE.MatchString(digest) {
		return "", fmt.Errorf("digest %q: %w: want sha256:<64 lower-case hex>", digest, ErrInvalid)
	}
	return filepath.Join("blobs", "sha256-"+digest[len("sha256:"):]), nil
}

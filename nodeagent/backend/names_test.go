package backend

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestNormalizeModelName(t *testing.T) {
	tests := map[string]string{
		"tiny":                              "tiny:latest",
		"tiny:latest":                       "tiny:latest",
		" tiny ":                            "tiny:latest",
		"registry.ollama.ai/library/tiny":   "tiny:latest",
		"llama3.2:1b":                       "llama3.2:1b",
		"user/model:q4":                     "user/model:q4",
		"hf.co/bartowski/Llama-3.2-1B:Q4_K": "hf.co/bartowski/Llama-3.2-1B:Q4_K",
		"../etc":                            "../etc", // invalid: unchanged
		"":                                  "",
	}
	for in, want := range tests {
		if got := NormalizeModelName(in); got != want {
			t.Errorf("NormalizeModelName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestManifestPath(t *testing.T) {
	tests := map[string]string{
		"tiny":          "manifests/registry.ollama.ai/library/tiny/latest",
		"user/m:v1":     "manifests/registry.ollama.ai/user/m/v1",
		"host:5000/n/m": "manifests/host:5000/n/m/latest",
	}
	for in, want := range tests {
		got, err := manifestPath(in)
		if err != nil || filepath.ToSlash(got) != want {
			t.Errorf("manifestPath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "..", "../x", "a/../../b", "a b", "/abs", "x:..", "a/b/c/d"} {
		if _, err := manifestPath(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("manifestPath(%q) accepted: %v", bad, err)
		}
	}
}

func FuzzManifestPath(f *testing.F) {
	for _, s := range []string{"tiny", "user/m:v1", "host:5000/n/m:t", "../x", "a/..", "h/n/m:..", "x:../../y", "."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		p, err := manifestPath(name)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("%q: %v", name, err)
			}
			return
		}
		if !filepath.IsLocal(p) || !strings.HasPrefix(filepath.ToSlash(p), "manifests/") {
			t.Fatalf("%q maps outside the manifests directory: %q", name, p)
		}
		for _, el := range strings.Split(filepath.ToSlash(p), "/") {
			if el == "." || el == ".." || el == "" {
				t.Fatalf("%q: path %q has element %q", name, p, el)
			}
		}
		if strings.Count(filepath.ToSlash(p), "/") != 4 {
			t.Fatalf("%q: %q is not manifests/host/namespace/model/tag", name, p)
		}
	})
}

func FuzzBlobPath(f *testing.F) {
	f.Add("sha256:" + strings.Repeat("a", 64))
	f.Add("sha256:../../../etc/passwd")
	f.Add("sha256-" + strings.Repeat("0", 64))
	f.Fuzz(func(t *testing.T, digest string) {
		p, err := blobPath(digest)
		if err != nil {
			return
		}
		want := "blobs/sha256-" + strings.TrimPrefix(digest, "sha256:")
		if filepath.ToSlash(p) != want || len(p) != len("blobs/sha256-")+64 || !filepath.IsLocal(p) {
			t.Fatalf("%q -> %q", digest, p)
		}
	})
}

func FuzzNormalizeModelName(f *testing.F) {
	for _, s := range []string{"tiny", "tiny:latest", "a/b:c", "h.io/a/b:c", "../x", "", "UPPER:Case"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		once := NormalizeModelName(name)
		if twice := NormalizeModelName(once); twice != once {
			t.Fatalf("not idempotent: %q -> %q -> %q", name, once, twice)
		}
	})
}

func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"config":{"digest":"sha256:` + strings.Repeat("a", 64) + `"},"layers":[{"mediaType":"application/vnd.ollama.image.model","digest":"sha256:` + strings.Repeat("b", 64) + `","size":5}]}`))
	f.Add([]byte(`{"layers":[{"digest":"sha256:../x"}]}`))
	f.Add([]byte(`{"layers":[{"digest":"sha256:` + strings.Repeat("b", 64) + `","size":-1}]}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseManifest(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error without ErrInvalid: %v", err)
			}
			return
		}
		for _, l := range m.Layers {
			if _, err := blobPath(l.Digest); err != nil || l.Size < 0 {
				t.Fatalf("accepted layer %+v", l)
			}
		}
	})
}

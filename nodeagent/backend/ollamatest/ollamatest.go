// Package ollamatest is test tooling for code that talks to Ollama: it writes a tiny deterministic
// GGUF model, starts a real `ollama serve` with that model for integration tests, and offers a
// fake Ollama (NewFake) that speaks Ollama's wire format, recorded from the real server, for unit
// tests. It is imported from _test.go files only.
//
// The real server is the binary scripts/build-ollama.sh builds (or HERD_OLLAMA_BIN). Without it,
// Start skips the test with a message saying how to build it, except where CI or
// HERD_REQUIRE_OLLAMA is set: there a missing binary fails the test, so CI cannot go green by
// skipping the real thing.
package ollamatest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Version is the Ollama release the harness and the recorded responses are for.
const Version = "0.17.4"

// TinyModelfile is the Modelfile Start creates the tiny model with, FROM ./tiny.gguf. The template
// mentions .Tools so the model gets Ollama's tools capability; num_thread 1 because two threads on
// two shared cores ran a hundred times slower.
const TinyModelfile = `FROM ./tiny.gguf
TEMPLATE """{{- if .System }}<|system|>{{ .System }}
{{ end }}{{- if .Tools }}<|tools|>{{ range .Tools }}{{ .Function.Name }} {{ end }}
{{ end }}{{- range .Messages }}<|{{ .Role }}|>{{ .Content }}
{{ end }}<|assistant|>"""
PARAMETER num_predict 64
PARAMETER num_ctx 2048
PARAMETER num_thread 1
`

// ContinuableModelfile is TinyModelfile with a template that leaves the last assistant turn open
// when the conversation ends with one (as the library's llama3.x templates do with $last), so that
// Ollama continues a trailing assistant message instead of starting a new turn: what a stream
// continued on this node needs. TinyModelfile, recorded as it is, closes every message.
const ContinuableModelfile = `FROM ./tiny.gguf
TEMPLATE """{{- if .System }}<|system|>{{ .System }}
{{ end }}{{- range $i, $_ := .Messages }}{{- $last := eq (len (slice $.Messages $i)) 1 }}<|{{ .Role }}|>{{ .Content }}{{ if or (ne .Role "assistant") (not $last) }}
{{ end }}{{- if and (ne .Role "assistant") $last }}<|assistant|>{{ end }}{{ end }}"""
PARAMETER num_predict 64
PARAMETER num_ctx 2048
PARAMETER num_thread 1
`

// EndlessModelfile is ContinuableModelfile for WriteEndlessModel's model (Options.Endless): its
// answers never end by themselves, so num_predict (here a default of 4096, which a request may
// change) ends them, and num_ctx is the model's EndlessContext.
const EndlessModelfile = `FROM ./tiny.gguf
TEMPLATE """{{- if .System }}<|system|>{{ .System }}
{{ end }}{{- range $i, $_ := .Messages }}{{- $last := eq (len (slice $.Messages $i)) 1 }}<|{{ .Role }}|>{{ .Content }}{{ if or (ne .Role "assistant") (not $last) }}
{{ end }}{{- if and (ne .Role "assistant") $last }}<|assistant|>{{ end }}{{ end }}"""
PARAMETER num_predict 4096
PARAMETER num_ctx 8192
PARAMETER num_thread 1
`

// Bounds on the harness's waits, generous for a slow shared machine; none is a timed assertion.
const (
	startTimeout  = 60 * time.Second
	createTimeout = 120 * time.Second
	stopTimeout   = 15 * time.Second
	startAttempts = 3
)

// Options configure Start.
type Options struct {
	// Model is the name the tiny model is created under; empty means "tiny".
	Model string
	// Seed is passed to WriteTinyModel.
	Seed int64
	// NoModel starts the server with no model at all (an empty node, e.g. a copy target).
	NoModel bool
	// Env adds KEY=VALUE settings to the environment of `ollama serve`.
	Env []string
	// Modelfile is the Modelfile the model is created with; empty means TinyModelfile.
	Modelfile string
	// Endless creates the model from WriteEndlessModel (answers that run until num_predict)
	// instead of WriteTinyModel; use it with EndlessModelfile.
	Endless bool
}

// Server is a running `ollama serve` owned by one test.
type Server struct {
	// URL is the server's base URL, http://127.0.0.1:PORT.
	URL string
	// Host is 127.0.0.1:PORT, as OLLAMA_HOST takes it.
	Host string
	// ModelsDir is the server's OLLAMA_MODELS (blobs/ and manifests/).
	ModelsDir string
	// Model is the tiny model's name, or empty with Options.NoModel.
	Model string
	// Bin is the ollama binary that runs.
	Bin string
	// PID is the serve process's id; it leads its own process group, which holds its runners.
	PID int

	dir       string
	home      string
	logPath   string
	modelfile string
	endless   bool
}

// Kill ends serve and its runners at once (SIGKILL to the process group), as a crash of the
// machine would.
func (s *Server) Kill() error { return signalGroup(s.PID, sigKill) }

// Binary returns the ollama binary the harness uses: $HERD_OLLAMA_BIN, or the path
// scripts/build-ollama.sh builds to. The second result says whether that file exists and can run.
func Binary() (string, bool) {
	if b := os.Getenv("HERD_OLLAMA_BIN"); b != "" {
		return b, isExecutable(b)
	}
	cache := os.Getenv("HERD_CACHE_DIR")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", false
			}
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "herd")
	}
	version := os.Getenv("HERD_OLLAMA_VERSION")
	if version == "" {
		version = Version
	}
	b := filepath.Join(cache, "ollama-"+version, "ollama")
	return b, isExecutable(b)
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// Required reports whether the environment demands the real server (CI or HERD_REQUIRE_OLLAMA).
func Required() bool {
	return os.Getenv("CI") != "" || os.Getenv("HERD_REQUIRE_OLLAMA") != ""
}

// Start runs a real `ollama serve` on a free loopback port with its own HOME and models directory
// under t.TempDir(), waits until it answers, and (unless opts.NoModel) creates the tiny model with
// `ollama create`. Cleanup stops the server and its runners. Without a binary it skips the test,
// or fails it where Required.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	if !processGroups {
		t.Skip("ollamatest: starting Ollama needs unix process groups")
	}
	bin, ok := Binary()
	if !ok {
		msg := fmt.Sprintf("real Ollama not found at %q: build it with scripts/build-ollama.sh (or set HERD_OLLAMA_BIN)", bin)
		if Required() {
			t.Fatal(msg + "; CI/HERD_REQUIRE_OLLAMA is set, so this test may not skip")
		}
		t.Skip(msg)
	}

	dir := t.TempDir()
	s := &Server{
		Bin:       bin,
		ModelsDir: filepath.Join(dir, "models"),
		dir:       dir,
		home:      filepath.Join(dir, "home"),
		logPath:   filepath.Join(dir, "serve.log"),
	}
	for _, d := range []string{s.ModelsDir, s.home} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}

	var lastErr error
	for attempt := 0; attempt < startAttempts; attempt++ {
		lastErr = s.start(t, opts.Env)
		if lastErr == nil {
			break
		}
		// Another process may take the port between our probe and ollama's bind; try a new one.
		t.Logf("ollamatest: start attempt %d: %v", attempt+1, lastErr)
	}
	if lastErr != nil {
		t.Fatalf("ollamatest: ollama serve did not start: %v\n%s", lastErr, s.Log())
	}

	if !opts.NoModel {
		name := opts.Model
		if name == "" {
			name = "tiny"
		}
		s.modelfile, s.endless = opts.Modelfile, opts.Endless
		s.Create(t, name, opts.Seed)
		s.Model = name
	}
	return s
}

// start launches serve once and waits for /api/version. On failure the process is gone.
func (s *Server) start(t testing.TB, extraEnv []string) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	s.Host = fmt.Sprintf("127.0.0.1:%d", port)
	s.URL = "http://" + s.Host

	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(s.Bin, "serve")
	cmd.Env = append(s.env(), extraEnv...)
	cmd.Dir = s.dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	setProcessGroup(cmd)
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", s.Bin, err)
	}
	s.PID = cmd.Process.Pid
	exited := make(chan error, 1)
	go func() {
		exited <- cmd.Wait()
		logf.Close()
	}()

	stop := func() {
		// The whole group: serve and every runner it started.
		_ = signalGroup(s.PID, sigTerm)
		select {
		case <-exited:
		case <-time.After(stopTimeout):
			_ = signalGroup(s.PID, sigKill)
			<-exited
		}
		// Runners may outlive serve for a moment; the group kill reaches them too.
		_ = signalGroup(s.PID, sigKill)
	}

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("ollama serve exited: %v", err)
		case <-ctx.Done():
			stop()
			return fmt.Errorf("ollama serve did not answer /api/version within %s", startTimeout)
		case <-tick.C:
		}
		resp, err := client.Get(s.URL + "/api/version")
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			break
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("ollamatest: ollama serve log (%s):\n%s", s.Host, tail(s.Log(), 4000))
		}
	})
	return nil
}

// env is the environment for serve and for the CLI: ours, minus anything that would point them at
// another Ollama or another models directory.
func (s *Server) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "OLLAMA_") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"HOME="+s.home,
		"OLLAMA_MODELS="+s.ModelsDir,
		"OLLAMA_HOST="+s.Host,
	)
}

// Create writes the tiny model for seed (the endless one with Options.Endless) and a Modelfile
// (Options.Modelfile, else TinyModelfile) and runs
// `ollama create NAME -f Modelfile` against this server.
func (s *Server) Create(t testing.TB, name string, seed int64) {
	t.Helper()
	dir, err := os.MkdirTemp(s.dir, "create-")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "tiny.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	write := WriteTinyModel
	if s.endless {
		write = WriteEndlessModel
	}
	if err := write(f, seed); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	mf := TinyModelfile
	if s.modelfile != "" {
		mf = s.modelfile
	}
	if err := os.WriteFile(filepath.Join(dir, "Modelfile"), []byte(mf), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), createTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.Bin, "create", name, "-f", "Modelfile")
	cmd.Dir = dir
	cmd.Env = s.env()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ollamatest: ollama create %s: %v\n%s\nserve log:\n%s", name, err, out, tail(s.Log(), 4000))
	}
}

// Log returns what `ollama serve` has written so far.
func (s *Server) Log() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		return 0, fmt.Errorf("unexpected listener address %v", l.Addr())
	}
	return addr.Port, nil
}

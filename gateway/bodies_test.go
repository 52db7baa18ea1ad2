package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"
	openai "github.com/sashabaranov/go-openai"

	"github.com/herd-llm/herd/gateway/batch"
	"github.com/herd-llm/herd/gateway/store"
	"github.com/herd-llm/herd/gateway/store/storetest"
)

// serveGW serves a gateway built by New on a real listener (Serve, with its http.Server
// timeouts), until the test ends.
func serveGW(t *testing.T, edit func(*Config)) (*Server, string) {
	t.Helper()
	return serveGWWith(t, edit, nil)
}

// serveGWWith is serveGW with a hook that adjusts the built server before it serves.
func serveGWWith(t *testing.T, edit func(*Config), adjust func(*Server)) (*Server, string) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.DataDir, cfg.ClusterToken = t.TempDir(), testClusterToken
	if edit != nil {
		edit(&cfg)
	}
	s, err := New(cfg, WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	if adjust != nil {
		adjust(s)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = s.Close()
	})
	return s, ln.Addr().String()
}

// The server closes a keep-alive connection that stays idle past IdleTimeout.
func TestIdleConnectionClosed(t *testing.T) {
	_, addr := serveGW(t, func(c *Config) { c.IdleTimeout = 100 * time.Millisecond })
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Close {
		t.Fatalf("first request: %d close=%v, want a kept-alive 200", resp.StatusCode, resp.Close)
	}
	// Now send nothing: the server must end the connection (the bound is only a safety net).
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	if n, err := br.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("idle connection: read %d bytes, err %v; want EOF (closed by the server)", n, err)
	}
}

// A client that stops sending its body is answered 400 once BodyReadTimeout passes, and a
// streamed answer that lasts longer than BodyReadTimeout is not cut by it.
func TestBodyReadDeadline(t *testing.T) {
	s, addr := serveGW(t, func(c *Config) { c.BodyReadTimeout = 100 * time.Millisecond })
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\":")
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 400 || !strings.Contains(string(body), "incomplete_request_body") || !strings.Contains(string(body), "in time") {
		t.Fatalf("stalled body: %d %s", resp.StatusCode, body)
	}

	agent := newWireAgent(t, "a", wireSlowEachStep)
	beat(t, s, "a", agent.srv.URL)
	go func() {
		for range len(wireWords) + 2 {
			time.Sleep(150 * time.Millisecond) // each gap longer than BodyReadTimeout
			select {
			case agent.step <- struct{}{}:
			case <-time.After(10 * time.Second):
				return
			}
		}
	}()
	resp, err = http.Post("http://"+addr+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"llama3.1:8b","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil || !strings.Contains(string(out), "data: [DONE]") {
		t.Fatalf("slow stream: %v\n%s", err, out)
	}
}

// beat registers a node with s through the heartbeat route.
func beat(t *testing.T, s *Server, id, address string) {
	t.Helper()
	hb := fmt.Sprintf(`{"node_id":%q,"address":%q,"backend":"openai","slots":4,"version":"test","models":[{"name":%q,"resident":true}]}`, id, address, testModel)
	req := httptest.NewRequest(http.MethodPost, "/internal/v1/heartbeat", strings.NewReader(hb))
	req.Header.Set("Authorization", "Bearer "+testClusterToken)
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("heartbeat: %d %s", rec.Code, rec.Body)
	}
}

// 200 clients announce 1 MiB bodies, send 1 KiB and stall: the gateway's heap must not grow by
// what they announced (it once allocated each announced body up front: 200 MiB here).
func TestSlowBodiesHeapBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 200 connections")
	}
	_, addr := serveGW(t, func(c *Config) { c.BodyReadTimeout = time.Minute })
	const clients = 200
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	baseG := runtime.NumGoroutine()
	conns := make([]net.Conn, 0, clients)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	head := "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n"
	chunk := `{"model":"llama3.1:8b","messages":[{"role":"user","content":"` + strings.Repeat("x", 1024)
	for range clients {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if _, err := io.WriteString(c, head+chunk); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until the server has a goroutine per connection (each then blocks reading its body).
	deadline := time.Now().Add(30 * time.Second)
	for runtime.NumGoroutine() < baseG+clients && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // let the handlers reach their body reads
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("heap grew by %.1f MiB with %d stalled 1 MiB bodies (%d goroutines)", float64(grown)/(1<<20), clients, runtime.NumGoroutine()-baseG)
	if limit := int64(40 << 20); grown > limit {
		t.Fatalf("heap grew by %d bytes with %d slow clients; want under %d", grown, clients, limit)
	}
}

func TestReadGrowing(t *testing.T) {
	for _, tt := range []struct {
		name  string
		in    string
		limit int64
		err   bool
	}{
		{"empty", "", 10, false},
		{"small", "hello", 10, false},
		{"exactly the limit", strings.Repeat("a", 100000), 100000, false},
		{"one over", strings.Repeat("a", 100001), 100000, true},
	} {
		b, err := readGrowing(strings.NewReader(tt.in), tt.limit)
		var mbe *http.MaxBytesError
		if tt.err != errors.As(err, &mbe) || (!tt.err && string(b) != tt.in) {
			t.Errorf("%s: %d bytes, err %v", tt.name, len(b), err)
		}
		if !tt.err && len(tt.in) < bodyChunk && cap(b) > bodyChunk {
			t.Errorf("%s: buffer of %d for %d bytes", tt.name, cap(b), len(tt.in))
		}
	}
	// A read that breaks off is an error, not a short body.
	if _, err := readGrowing(io.MultiReader(strings.NewReader("abc"), errReader{io.ErrUnexpectedEOF}), 100); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("broken read: %v", err)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// fullDisk is a temporary file whose writes fail as on a full disk after a few bytes.
type fullDisk struct {
	f    *os.File
	left int
}

func (d *fullDisk) Write(p []byte) (int, error) {
	if len(p) > d.left {
		n, _ := d.f.Write(p[:d.left])
		d.left = 0
		return n, &os.PathError{Op: "write", Path: d.f.Name(), Err: syscall.ENOSPC}
	}
	d.left -= len(p)
	return d.f.Write(p)
}
func (d *fullDisk) Name() string { return d.f.Name() }
func (d *fullDisk) Sync() error  { return d.f.Sync() }
func (d *fullDisk) Close() error { return d.f.Close() }

// bulkServerWith is bulkServer with batch options of the test's choosing.
func bulkServerWith(t *testing.T, opts batch.Options) (*Server, *httptest.Server, string) {
	t.Helper()
	dir := t.TempDir()
	st, err := store.OpenBolt(filepath.Join(dir, "herd.db"))
	if err != nil {
		t.Fatal(err)
	}
	opts.Store, opts.Dir, opts.Logger = st, dir, slog.New(slog.DiscardHandler)
	svc, err := batch.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{cfg: Config{DataDir: dir}, log: slog.New(slog.DiscardHandler), bulkStore: st, batches: svc}
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	s.registerBatchRoutes(e.Group("/v1"))
	srv := httptest.NewServer(e)
	t.Cleanup(func() { srv.Close(); _ = s.closeBulk() })
	return s, srv, filepath.Join(dir, "files")
}

func multipartBody(t *testing.T, content string) (*bytes.Buffer, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.WriteField("purpose", "batch")
	fw, _ := mw.CreateFormFile("file", "in.jsonl")
	_, _ = io.WriteString(fw, content)
	_ = mw.Close()
	return &buf, mw.FormDataContentType()
}

// Upload failures are the client's 400 or the disk's 507, never a 500; nothing is left behind.
func TestUploadErrors(t *testing.T) {
	_, srv, filesDir := bulkServerWith(t, batch.Options{CreateTemp: func(dir, pattern string) (batch.TempFile, error) {
		f, err := os.CreateTemp(dir, pattern)
		if err != nil {
			return nil, err
		}
		return &fullDisk{f: f, left: 100}, nil
	}})
	line := `{"custom_id":"c1","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[]}}` + "\n"
	full, ctype := multipartBody(t, strings.Repeat(line, 20))
	whole := full.Bytes()
	smallFull, smallType := multipartBody(t, line[:50]) // fits in the 100 bytes the disk has
	small := smallFull.Bytes()
	truncated := small[:len(small)-60] // inside the file part: no closing boundary
	for _, tt := range []struct {
		name, ctype string
		body        []byte
		status      int
		code        string
	}{
		{"disk full", ctype, whole, 507, "insufficient_storage"},
		{"truncated multipart", smallType, truncated, 400, "incomplete_request_body"},
		{"fits", smallType, small, 200, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := http.Post(srv.URL+"/v1/files", tt.ctype, bytes.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			data, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status {
				t.Fatalf("%d %s, want %d", resp.StatusCode, data, tt.status)
			}
			if tt.code != "" {
				var e clientError
				if json.Unmarshal(data, &e) != nil || nullable(e.Error.Code) != tt.code {
					t.Fatalf("error %s, want code %s", data, tt.code)
				}
			}
			if tt.status == 507 && resp.Header.Get("Retry-After") == "" {
				t.Error("507 without Retry-After")
			}
			entries, _ := os.ReadDir(filesDir)
			for _, e := range entries {
				if strings.HasPrefix(e.Name(), ".upload-") {
					t.Errorf("temporary file %s left behind", e.Name())
				}
			}
		})
	}
}

// With the Redis store down, bulk routes answer 503 store_unavailable with Retry-After.
func TestStoreDownIs503(t *testing.T) {
	url := storetest.StartRedis(t)
	g := newCoreGW(t, func(c *Config) { c.RedisURL = url })
	if status, _, data := g.do(t, "GET", "/v1/files", testAPIKey, "", nil); status != 200 {
		t.Fatalf("with Redis up: %d %s", status, data)
	}
	o, _ := redis.ParseURL(url)
	admin := redis.NewClient(o)
	_ = admin.Shutdown(context.Background()).Err()
	admin.Close()
	for _, path := range []string{"/v1/files", "/v1/batches", "/v1/files/file-0123456789abcdef0123456789abcdef"} {
		status, h, data := g.do(t, "GET", path, testAPIKey, "", nil)
		var e clientError
		_ = json.Unmarshal(data, &e)
		if status != 503 || h.Get("Retry-After") == "" || nullable(e.Error.Code) != "store_unavailable" {
			t.Errorf("GET %s with Redis down: %d %v %s", path, status, h, data)
		}
	}
}

func TestBOMStripped(t *testing.T) {
	if got := string(stripBOM([]byte("\xef\xbb\xbf{}"))); got != "{}" {
		t.Errorf("stripBOM = %q", got)
	}
	// A preset PUT with a BOM (Windows tools write one) is JSON like any other.
	_, srv := bulkServer(t, bulkDispatch(bulkEcho), batch.Config{}, nil)
	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/admin/v1/presets/p", strings.NewReader("\xef\xbb\xbf"+`{"model":"m"}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("preset with a BOM: %d %s", resp.StatusCode, data)
	}
	// A batch input file with a BOM validates and runs.
	c := bulkClient(srv)
	body, ctype := multipartBody(t, "\xef\xbb\xbf"+string(bulkLines("m1", "m2")))
	resp, err = http.Post(srv.URL+"/v1/files", ctype, body)
	if err != nil {
		t.Fatal(err)
	}
	var f struct{ ID string }
	_ = json.NewDecoder(resp.Body).Decode(&f)
	resp.Body.Close()
	b, err := c.CreateBatch(context.Background(), openai.CreateBatchRequest{InputFileID: f.ID, Endpoint: openai.BatchEndpointChatCompletions})
	if err != nil {
		t.Fatal(err)
	}
	done := bulkWait(t, c, b.ID)
	if done.Status != "completed" || done.RequestCounts.Completed != 2 {
		t.Fatalf("batch from a file with a BOM: %+v", done)
	}
}

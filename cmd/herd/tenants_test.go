package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/herd-llm/herd/gateway/store/storetest"
)

const (
	itAlice = "sk-it-alice-0123456789abcdef"
	itBob   = "sk-it-bob-0123456789abcdef00"
	itAdmin = "sk-it-admin-0123456789abcdef"
)

// tenantsConfig writes a config file declaring two tenants (alice limited to 2 requests a
// minute, bob's key given by its SHA-256) and returns its path.
func tenantsConfig(t *testing.T) string {
	t.Helper()
	// The hex SHA-256 of bob's key, as `printf %s KEY | sha256sum` prints it.
	sum := sha256.Sum256([]byte(itBob))
	bobSum := hex.EncodeToString(sum[:])
	cfg := "gateway:\n  tenants:\n" +
		"    - {name: alice, key: " + itAlice + ", scopes: [inference, batch], requests_per_minute: 2}\n" +
		"    - {name: bob, key_sha256: " + bobSum + ", scopes: [batch]}\n"
	path := filepath.Join(t.TempDir(), "herd.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func itDo(t *testing.T, method, url, key, ctype string, body io.Reader) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, body)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := httpClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(data)
}

// The real binary: tenants from the config file, the shorthand admin key, scopes, ownership,
// a key created through the admin API, and a 429 with Retry-After past a key's limit.
func TestTenantsAndRateLimit(t *testing.T) {
	c := startGateway(t, "--config", tenantsConfig(t), "--admin-keys", itAdmin)
	c.addSimAgent("tenant-node", "t4")
	waitFor(t, 60*time.Second, "node registered", func() bool {
		status, _, body := itDo(t, "GET", c.url+"/admin/v1/nodes", itAdmin, "", nil)
		return status == 200 && strings.Contains(body, "tenant-node")
	})

	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.WriteField("purpose", "batch")
	fw, _ := mw.CreateFormFile("file", "in.jsonl")
	io.WriteString(fw, `{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"llama3.2:1b","messages":[]}}`+"\n")
	mw.Close()
	status, _, body := itDo(t, "POST", c.url+"/v1/files", itAlice, mw.FormDataContentType(), &buf)
	if status != 200 {
		t.Fatalf("alice uploads: %d %s", status, body)
	}
	var f struct{ ID string }
	_ = json.Unmarshal([]byte(body), &f)

	for _, tt := range []struct {
		name, method, path, key string
		status                  int
	}{
		{"bob does not see alice's file", "GET", "/v1/files/" + f.ID, itBob, 404},
		{"admin sees alice's file", "GET", "/v1/files/" + f.ID, itAdmin, 200},
		{"alice is no admin", "GET", "/admin/v1/nodes", itAlice, 403},
		{"bob may not infer", "POST", "/v1/chat/completions", itBob, 403},
		{"no key", "GET", "/v1/models", "", 401},
	} {
		if status, _, body := itDo(t, tt.method, c.url+tt.path, tt.key, "application/json", strings.NewReader(`{}`)); status != tt.status {
			t.Errorf("%s: %d %s, want %d", tt.name, status, body, tt.status)
		}
	}

	chat := `{"model":"llama3.2:1b","max_tokens":4,"messages":[{"role":"user","content":"hi"}]}`
	for i := range 2 {
		if status, h, body := itDo(t, "POST", c.url+"/v1/chat/completions", itAlice, "application/json", strings.NewReader(chat)); status != 200 || h.Get("X-Ratelimit-Limit-Requests") != "2" {
			t.Fatalf("request %d: %d %v %s", i+1, status, h, body)
		}
	}
	status, h, body := itDo(t, "POST", c.url+"/v1/chat/completions", itAlice, "application/json", strings.NewReader(chat))
	if status != 429 || h.Get("Retry-After") == "" || h.Get("Retry-After") == "0" || !strings.Contains(body, `"rate_limit_exceeded"`) ||
		h.Get("X-Ratelimit-Remaining-Requests") != "0" {
		t.Fatalf("third request: %d %v %s", status, h, body)
	}

	// A key created at run time works at once; its secret is shown once.
	status, _, body = itDo(t, "POST", c.url+"/admin/v1/keys", itAdmin, "application/json", strings.NewReader(`{"name":"carol","scopes":["inference"]}`))
	var k struct{ ID, Value string }
	if err := json.Unmarshal([]byte(body), &k); status != 201 || err != nil || k.Value == "" {
		t.Fatalf("create key: %d %s", status, body)
	}
	if status, _, body := itDo(t, "POST", c.url+"/v1/chat/completions", k.Value, "application/json", strings.NewReader(chat)); status != 200 {
		t.Fatalf("created key: %d %s", status, body)
	}
	if _, _, list := itDo(t, "GET", c.url+"/admin/v1/keys", itAdmin, "", nil); strings.Contains(list, k.Value) || !strings.Contains(list, `"carol"`) {
		t.Fatalf("key list: %s", list)
	}

	// The same through the CLI.
	secret, err := runCLI(t, "keys", "create", "dave", "--scopes", "batch", "--rpm", "5", "--url", c.url, "--api-key", itAdmin)
	if err != nil || !strings.HasPrefix(strings.TrimSpace(secret), "sk-herd-") {
		t.Fatalf("herd keys create: %q %v", secret, err)
	}
	if status, _, body := itDo(t, "GET", c.url+"/v1/files", strings.TrimSpace(secret), "", nil); status != 200 {
		t.Fatalf("CLI-created key: %d %s", status, body)
	}
	out, err := runCLI(t, "keys", "--url", c.url, "--api-key", itAdmin)
	if err != nil || !strings.Contains(out, "dave") || !strings.Contains(out, "alice") || strings.Contains(out, strings.TrimSpace(secret)) {
		t.Fatalf("herd keys: %s %v", out, err)
	}
	if _, err := runCLI(t, "keys", "--url", c.url, "--api-key", itAlice); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("herd keys with a client key: %v, want a 403", err)
	}
}

// Two gateways on one real redis-server charge the same rate-limit counters.
func TestRateLimitSharedInRedis(t *testing.T) {
	herdBinary(t)
	url := storetest.StartRedis(t)
	cfg := tenantsConfig(t)
	a := startGateway(t, "--config", cfg, "--redis-url", url)
	b := startGateway(t, "--config", cfg, "--redis-url", url)
	chat := `{"model":"llama3.2:1b","messages":[{"role":"user","content":"hi"}]}`
	// No node is needed: the request is charged before its model is looked up.
	for i, gw := range []*cluster{a, b} {
		if status, _, body := itDo(t, "POST", gw.url+"/v1/chat/completions", itAlice, "application/json", strings.NewReader(chat)); status == 429 {
			t.Fatalf("request %d: %d %s", i+1, status, body)
		}
	}
	status, h, body := itDo(t, "POST", a.url+"/v1/chat/completions", itAlice, "application/json", strings.NewReader(chat))
	if status != 429 || h.Get("Retry-After") == "" {
		t.Fatalf("third request over two gateways: %d %v %s", status, h, body)
	}
}

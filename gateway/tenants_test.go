package gateway

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
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	aliceKey = "sk-alice-0123456789abcdef"
	bobKey   = "sk-bob-0123456789abcdef00"
	inferKey = "sk-infer-0123456789abcdef"
)

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// tenantGW is a gateway with three client tenants and an admin key.
func tenantGW(t *testing.T, edit func(*Config)) *coreGW {
	return newCoreGW(t, func(c *Config) {
		c.APIKeys = nil
		c.AdminKeys = []string{testAdminKey}
		c.Tenants = []TenantConfig{
			{Name: "alice", Key: aliceKey, Scopes: []string{ScopeInference, ScopeBatch}},
			{Name: "bob", KeySHA256: sha256Hex(bobKey), Scopes: []string{ScopeBatch}},
			{Name: "infer-only", Key: inferKey, Scopes: []string{ScopeInference}},
		}
		if edit != nil {
			edit(c)
		}
	})
}

// do sends a request with key and returns the status and body.
func (g *coreGW) do(t *testing.T, method, path, key, contentType string, body io.Reader) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, g.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := g.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, data
}

// upload sends a file through POST /v1/files and returns its ID.
func (g *coreGW) upload(t *testing.T, key, name string, content []byte) string {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.WriteField("purpose", "batch")
	fw, _ := mw.CreateFormFile("file", name)
	_, _ = fw.Write(content)
	_ = mw.Close()
	status, _, body := g.do(t, http.MethodPost, "/v1/files", key, mw.FormDataContentType(), &buf)
	if status != http.StatusOK {
		t.Fatalf("upload as %s: %d %s", key, status, body)
	}
	var f struct{ ID string }
	if err := json.Unmarshal(body, &f); err != nil || f.ID == "" {
		t.Fatalf("upload answer %s: %v", body, err)
	}
	return f.ID
}

func listIDs(t *testing.T, body []byte) []string {
	t.Helper()
	var page struct {
		Data []struct{ ID string } `json:"data"`
	}
	if err := json.Unmarshal(body, &page); err != nil {
		t.Fatalf("list %s: %v", body, err)
	}
	var ids []string
	for _, d := range page.Data {
		ids = append(ids, d.ID)
	}
	return ids
}

func TestTenantIsolationAndScopes(t *testing.T) {
	g := tenantGW(t, nil)
	agent := newWireAgent(t, "a", wireOK)
	g.beat("a", agent.srv.URL, 2, testModel)
	line := `{"custom_id":"c1","method":"POST","url":"/v1/chat/completions","body":{"model":"llama3.1:8b","messages":[{"role":"user","content":"hi"}]}}` + "\n"
	fileA := g.upload(t, aliceKey, "a.jsonl", []byte(line))
	fileB := g.upload(t, bobKey, "b.jsonl", []byte(line))

	status, _, body := g.do(t, http.MethodPost, "/v1/batches", aliceKey, "application/json",
		strings.NewReader(`{"input_file_id":"`+fileA+`","endpoint":"/v1/chat/completions","completion_window":"24h"}`))
	if status != http.StatusOK {
		t.Fatalf("alice creates a batch: %d %s", status, body)
	}
	var batchA struct{ ID string }
	_ = json.Unmarshal(body, &batchA)

	chat := `{"model":"llama3.1:8b","messages":[{"role":"user","content":"hi"}]}`
	createFromA := `{"input_file_id":"` + fileA + `","endpoint":"/v1/chat/completions","completion_window":"24h"}`
	tests := []struct {
		name, key, method, path, body string
		status                        int
		code                          string
	}{
		{"no key", "", "GET", "/v1/files", "", 401, "invalid_api_key"},
		{"wrong key", "sk-nobody-0123456789abcd", "GET", "/v1/files", "", 401, "invalid_api_key"},
		{"owner reads own file", aliceKey, "GET", "/v1/files/" + fileA, "", 200, ""},
		{"owner reads own content", aliceKey, "GET", "/v1/files/" + fileA + "/content", "", 200, ""},
		{"other reads file", bobKey, "GET", "/v1/files/" + fileA, "", 404, "not_found"},
		{"other reads content", bobKey, "GET", "/v1/files/" + fileA + "/content", "", 404, "not_found"},
		{"other deletes file", bobKey, "DELETE", "/v1/files/" + fileA, "", 404, "not_found"},
		{"other batches from file", bobKey, "POST", "/v1/batches", createFromA, 404, "not_found"},
		{"other reads batch", bobKey, "GET", "/v1/batches/" + batchA.ID, "", 404, "not_found"},
		{"other cancels batch", bobKey, "POST", "/v1/batches/" + batchA.ID + "/cancel", "", 404, "not_found"},
		{"other reads manifest", bobKey, "GET", "/v1/batches/" + batchA.ID + "/manifest", "", 404, "not_found"},
		{"owner reads batch", aliceKey, "GET", "/v1/batches/" + batchA.ID, "", 200, ""},
		{"admin reads any file", testAdminKey, "GET", "/v1/files/" + fileB, "", 200, ""},
		{"admin reads any batch", testAdminKey, "GET", "/v1/batches/" + batchA.ID, "", 200, ""},
		{"batch scope may not infer", bobKey, "POST", "/v1/chat/completions", chat, 403, "insufficient_permissions"},
		{"inference scope may not upload", inferKey, "GET", "/v1/files", "", 403, "insufficient_permissions"},
		{"inference scope infers", inferKey, "POST", "/v1/chat/completions", chat, 200, ""},
		{"models with inference scope", inferKey, "GET", "/v1/models", "", 200, ""},
		{"models with batch scope", bobKey, "GET", "/v1/models", "", 200, ""},
		{"api key is not admin", aliceKey, "GET", "/admin/v1/nodes", "", 403, "insufficient_permissions"},
		{"api key lists no keys", aliceKey, "GET", "/admin/v1/keys", "", 403, "insufficient_permissions"},
		{"admin key is admin", testAdminKey, "GET", "/admin/v1/nodes", "", 200, ""},
		{"admin key infers", testAdminKey, "POST", "/v1/chat/completions", chat, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			status, _, data := g.do(t, tt.method, tt.path, tt.key, "application/json", body)
			if status != tt.status {
				t.Fatalf("%s %s as %q = %d %s, want %d", tt.method, tt.path, tt.key, status, data, tt.status)
			}
			if tt.code != "" {
				var e clientError
				if err := json.Unmarshal(data, &e); err != nil || nullable(e.Error.Code) != tt.code {
					t.Fatalf("error = %s, want code %s", data, tt.code)
				}
			}
		})
	}
	// The 404 for another's object is the one for an object that does not exist.
	_, _, other := g.do(t, "GET", "/v1/files/"+fileA, bobKey, "", nil)
	_, _, missing := g.do(t, "GET", "/v1/files/file-00000000000000000000000000000000", bobKey, "", nil)
	if strings.ReplaceAll(string(other), fileA, "X") != strings.ReplaceAll(string(missing), "file-00000000000000000000000000000000", "X") {
		t.Errorf("another's file: %s; a missing file: %s", other, missing)
	}

	for _, tt := range []struct {
		key, path string
		want      []string
	}{
		{aliceKey, "/v1/files", []string{fileA}},
		{bobKey, "/v1/files", []string{fileB}},
		{testAdminKey, "/v1/files", []string{fileB, fileA}},
		{aliceKey, "/v1/batches", []string{batchA.ID}},
		{bobKey, "/v1/batches", nil},
		{testAdminKey, "/v1/batches", []string{batchA.ID}},
	} {
		_, _, data := g.do(t, "GET", tt.path, tt.key, "", nil)
		if got := listIDs(t, data); strings.Join(got, ",") != strings.Join(tt.want, ",") {
			t.Errorf("GET %s as %.8s… = %v, want %v", tt.path, tt.key, got, tt.want)
		}
	}
	// Bob's failed delete left the file; alice may delete it.
	if status, _, data := g.do(t, "DELETE", "/v1/files/"+fileA, aliceKey, "", nil); status != 200 {
		t.Fatalf("owner deletes: %d %s", status, data)
	}
}

func TestAdminKeysAPI(t *testing.T) {
	g := tenantGW(t, nil)
	status, _, body := g.do(t, "POST", "/admin/v1/keys", testAdminKey, "application/json",
		strings.NewReader(`{"name":"carol","scopes":["batch","inference"],"requests_per_minute":100}`))
	if status != http.StatusCreated {
		t.Fatalf("create: %d %s", status, body)
	}
	var created keyObject
	if err := json.Unmarshal(body, &created); err != nil || !strings.HasPrefix(created.Value, "sk-herd-") || created.ID == "" ||
		created.RequestsPerMinute != 100 || created.Source != sourceAPI || strings.Join(created.Scopes, ",") != "inference,batch" {
		t.Fatalf("created key = %s (%v)", body, err)
	}
	// The new key works at once, with its scopes.
	if status, _, data := g.do(t, "GET", "/v1/files", created.Value, "", nil); status != 200 {
		t.Fatalf("new key on /v1/files: %d %s", status, data)
	}
	if status, _, _ := g.do(t, "GET", "/admin/v1/nodes", created.Value, "", nil); status != 403 {
		t.Fatalf("new client key on admin: %d, want 403", status)
	}
	// The secret is shown once: neither the list nor the key's own page has it.
	for _, path := range []string{"/admin/v1/keys", "/admin/v1/keys/" + created.ID} {
		status, _, data := g.do(t, "GET", path, testAdminKey, "", nil)
		if status != 200 || strings.Contains(string(data), created.Value) || strings.Contains(string(data), `"value"`) {
			t.Fatalf("GET %s = %d %s: must not show the secret", path, status, data)
		}
		if !strings.Contains(string(data), created.RedactedValue) {
			t.Fatalf("GET %s = %s: want the redacted value %s", path, data, created.RedactedValue)
		}
	}
	_, _, data := g.do(t, "GET", "/admin/v1/keys", testAdminKey, "", nil)
	var list struct{ Data []keyObject }
	_ = json.Unmarshal(data, &list)
	var names []string
	for _, k := range list.Data {
		names = append(names, k.Name+"/"+k.Source)
	}
	if got := strings.Join(names, " "); got != "admin-"+shortSum(sha256.Sum256([]byte(testAdminKey)))+"/config alice/config bob/config carol/api infer-only/config" {
		t.Fatalf("keys = %s", got)
	}
	for _, tt := range []struct {
		name, body string
		status     int
	}{
		{"name taken by config", `{"name":"alice","scopes":["batch"]}`, 409},
		{"name taken by stored", `{"name":"carol","scopes":["batch"]}`, 409},
		{"bad name", `{"name":"a b","scopes":["batch"]}`, 400},
		{"no scopes", `{"name":"dave"}`, 400},
		{"bad scope", `{"name":"dave","scopes":["root"]}`, 400},
		{"negative limit", `{"name":"dave","scopes":["batch"],"tokens_per_minute":-1}`, 400},
		{"bad json", `{"name":`, 400},
	} {
		if status, _, data := g.do(t, "POST", "/admin/v1/keys", testAdminKey, "application/json", strings.NewReader(tt.body)); status != tt.status {
			t.Errorf("%s: %d %s, want %d", tt.name, status, data, tt.status)
		}
	}
	if status, _, _ := g.do(t, "DELETE", "/admin/v1/keys/config:alice", testAdminKey, "", nil); status != 400 {
		t.Errorf("deleting a configured key: %d, want 400", status)
	}
	if status, _, data := g.do(t, "DELETE", "/admin/v1/keys/"+created.ID, testAdminKey, "", nil); status != 200 {
		t.Fatalf("delete: %d %s", status, data)
	}
	if status, _, _ := g.do(t, "GET", "/v1/files", created.Value, "", nil); status != 401 {
		t.Fatalf("deleted key: %d, want 401", status)
	}
	if status, _, _ := g.do(t, "DELETE", "/admin/v1/keys/"+created.ID, testAdminKey, "", nil); status != 404 {
		t.Fatalf("deleting again: %d, want 404", status)
	}
}

// On loopback with no key configured the gateway is open; the first key created closes it.
func TestOpenGatewayClosesWithFirstKey(t *testing.T) {
	g := newCoreGW(t, func(c *Config) { c.APIKeys = nil })
	status, _, body := g.do(t, "POST", "/admin/v1/keys", "", "application/json", strings.NewReader(`{"name":"ops","scopes":["admin"]}`))
	if status != http.StatusCreated {
		t.Fatalf("create on an open gateway: %d %s", status, body)
	}
	var k keyObject
	_ = json.Unmarshal(body, &k)
	if status, _, _ := g.do(t, "GET", "/admin/v1/keys", "", "", nil); status != 401 {
		t.Fatalf("no key after the first key exists: %d, want 401", status)
	}
	if status, _, _ := g.do(t, "GET", "/admin/v1/keys", k.Value, "", nil); status != 200 {
		t.Fatalf("with the new admin key: %d", status)
	}
}

func TestTenantConfigValidate(t *testing.T) {
	good := TenantConfig{Name: "a", Key: "k"}
	for _, tt := range []struct {
		name string
		tc   TenantConfig
		ok   bool
	}{
		{"key", good, true},
		{"sha256", TenantConfig{Name: "a", KeySHA256: sha256Hex("k"), Scopes: []string{"admin"}}, true},
		{"both", TenantConfig{Name: "a", Key: "k", KeySHA256: sha256Hex("k")}, false},
		{"neither", TenantConfig{Name: "a"}, false},
		{"short sha", TenantConfig{Name: "a", KeySHA256: "abcd"}, false},
		{"bad name", TenantConfig{Name: "a/b", Key: "k"}, false},
		{"bad scope", TenantConfig{Name: "a", Key: "k", Scopes: []string{"everything"}}, false},
		{"negative", TenantConfig{Name: "a", Key: "k", TokensPerMinute: -5}, false},
	} {
		if err := tt.tc.validate(); (err == nil) != tt.ok {
			t.Errorf("%s: validate = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
	cfg := DefaultConfig()
	cfg.ClusterToken, cfg.DataDir = "x", t.TempDir()
	cfg.Tenants = []TenantConfig{good, good}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("two tenants named alike: %v", err)
	}
	// Keys of any kind allow a non-loopback listener.
	cfg.Tenants, cfg.Listen = []TenantConfig{good}, "0.0.0.0:8080"
	if err := cfg.Validate(); err != nil {
		t.Errorf("tenant on 0.0.0.0: %v", err)
	}
}

func TestAuthAllocatesNothing(t *testing.T) {
	r, err := newKeyring(Config{Tenants: []TenantConfig{{Name: "a", Key: "sk-proj-" + strings.Repeat("x", 120)}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tab := r.table()
	header := "Bearer sk-proj-" + strings.Repeat("x", 120)
	if n := testing.AllocsPerRun(100, func() {
		tok, _ := bearer(header)
		if tab.lookup(tok) == nil {
			t.Fatal("key not found")
		}
	}); n != 0 {
		t.Errorf("key lookup allocates %v times", n)
	}
}

func TestRateLimits(t *testing.T) {
	g := tenantGW(t, func(c *Config) {
		c.Tenants = append(c.Tenants,
			TenantConfig{Name: "rpm", Key: "sk-rpm-0123456789abcdef", Scopes: []string{ScopeInference}, RequestsPerMinute: 2},
			TenantConfig{Name: "tpm", Key: "sk-tpm-0123456789abcdef", Scopes: []string{ScopeInference}, TokensPerMinute: 100})
	})
	agent := newWireAgent(t, "a", wireOK)
	g.beat("a", agent.srv.URL, 4, testModel)
	chat := `{"model":"llama3.1:8b","messages":[{"role":"user","content":"hi"}]}`
	send := func(key, body string) (int, http.Header, []byte) {
		return g.do(t, "POST", "/v1/chat/completions", key, "application/json", strings.NewReader(body))
	}
	for i, want := range []string{"1", "0"} {
		status, h, data := send("sk-rpm-0123456789abcdef", chat)
		if status != 200 || h.Get("X-Ratelimit-Limit-Requests") != "2" || h.Get("X-Ratelimit-Remaining-Requests") != want {
			t.Fatalf("request %d: %d %v %s", i+1, status, h, data)
		}
		if h.Get("X-Ratelimit-Limit-Tokens") != "" {
			t.Errorf("a key without a token limit got token headers: %v", h)
		}
	}
	status, h, data := send("sk-rpm-0123456789abcdef", chat)
	var e clientError
	_ = json.Unmarshal(data, &e)
	if status != 429 || h.Get("Retry-After") != "30" || h.Get("X-Ratelimit-Remaining-Requests") != "0" || h.Get("X-Ratelimit-Reset-Requests") != "1m0s" ||
		nullable(e.Error.Code) != "rate_limit_exceeded" || e.Error.Type != "requests" || !strings.Contains(e.Error.Message, "Limit 2, Used 2, Requested 1") {
		t.Fatalf("third request: %d %v %s", status, h, data)
	}
	if h.Get("Retry-After-Ms") != "30000" {
		t.Errorf("Retry-After-Ms = %q, want 30000", h.Get("Retry-After-Ms"))
	}
	// Other tenants are not affected.
	if status, _, _ := send(aliceKey, chat); status != 200 {
		t.Fatalf("another tenant: %d", status)
	}
	g.clock.Advance(30 * time.Second)
	if status, h, _ := send("sk-rpm-0123456789abcdef", chat); status != 200 || h.Get("X-Ratelimit-Remaining-Requests") != "0" {
		t.Fatalf("30 s later: %d %v", status, h)
	}

	// Tokens: the estimate is reserved, then settled with the usage the agent reported (8).
	prompt := `{"model":"llama3.1:8b","messages":[{"role":"user","content":"` + strings.Repeat("z", 100) + `"}]}`
	status, h, _ = send("sk-tpm-0123456789abcdef", prompt)
	left, _ := strconv.Atoi(h.Get("X-Ratelimit-Remaining-Tokens"))
	est := 100 - left
	if status != 200 || est <= 20 || est >= 40 {
		t.Fatalf("first: %d remaining %s; want the prompt's estimate (some 25 tokens) reserved", status, h.Get("X-Ratelimit-Remaining-Tokens"))
	}
	status, h, _ = send("sk-tpm-0123456789abcdef", prompt)
	if status != 200 || h.Get("X-Ratelimit-Remaining-Tokens") != strconv.Itoa(100-8-est) {
		t.Fatalf("second: %d remaining %s, want %d (usage 8 settled)", status, h.Get("X-Ratelimit-Remaining-Tokens"), 100-8-est)
	}
	_, _, metricsText := g.do(t, "GET", "/metrics", testAdminKey, "", nil)
	for _, want := range []string{`herd_rate_limited_total{limit="requests",tenant="rpm"} 1`, `herd_tenant_tokens_total{tenant="tpm"} 16`} {
		if !strings.Contains(string(metricsText), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	big := `{"model":"llama3.1:8b","messages":[{"role":"user","content":"` + strings.Repeat("w", 360) + `"}]}`
	status, h, data = send("sk-tpm-0123456789abcdef", big)
	_ = json.Unmarshal(data, &e)
	if status != 429 || e.Error.Type != "tokens" || h.Get("Retry-After") == "" || !strings.Contains(e.Error.Message, "tokens per min (TPM)") {
		t.Fatalf("over the token limit: %d %v %s", status, h, data)
	}
}

// The Ollama routes take the same keys, scopes and limits, and answer in Ollama's error shape.
func TestOllamaRoutesTenants(t *testing.T) {
	g := tenantGW(t, func(c *Config) {
		c.Tenants = append(c.Tenants, TenantConfig{Name: "one", Key: "sk-one-0123456789abcdef", Scopes: []string{ScopeInference}, RequestsPerMinute: 1})
	})
	chat := `{"model":"llama3.1:8b","messages":[{"role":"user","content":"hi"}],"stream":false}`
	for _, tt := range []struct {
		name, method, path, key, body string
		status                        int
	}{
		{"no key", "POST", "/api/chat", "", chat, 401},
		{"batch scope may not chat", "POST", "/api/chat", bobKey, chat, 403},
		{"batch scope lists models", "GET", "/api/tags", bobKey, "", 200},
		{"first request of the minute", "POST", "/api/chat", "sk-one-0123456789abcdef", chat, 503}, // charged; no node yet
		{"second request of the minute", "POST", "/api/chat", "sk-one-0123456789abcdef", chat, 429},
	} {
		var body io.Reader
		if tt.body != "" {
			body = strings.NewReader(tt.body)
		}
		status, h, data := g.do(t, tt.method, tt.path, tt.key, "application/json", body)
		if status != tt.status {
			t.Errorf("%s: %d %s, want %d", tt.name, status, data, tt.status)
			continue
		}
		if status >= 400 {
			var e struct {
				Error string `json:"error"`
			}
			if json.Unmarshal(data, &e) != nil || e.Error == "" {
				t.Errorf("%s: %s is not Ollama's error shape", tt.name, data)
			}
		}
		if status == 429 && (h.Get("Retry-After") == "" || h.Get("X-Ratelimit-Remaining-Requests") != "0") {
			t.Errorf("429 headers: %v", h)
		}
	}
}

// TestScopeTableMatchesREADME reads the scope table of the README and checks it against the
// routes: a key holding only one scope is let through (neither 401 nor 403) on every route its
// row lists, and refused (403) on every route listed only in other rows. So the table a batch
// user reads (the model listings, /api/tags included, next to files and batches) is what the
// gateway does.
func TestScopeTableMatchesREADME(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string][]string{}
	for line := range strings.Lines(string(readme)) {
		for _, scope := range []string{ScopeInference, ScopeBatch, ScopeAdmin} {
			prefix := "| `" + scope + "` |"
			if !strings.HasPrefix(line, prefix) {
				continue
			}
			for _, m := range regexp.MustCompile("`(/[^`]*)`").FindAllStringSubmatch(line[len(prefix):], -1) {
				path := strings.Replace(m[1], "/*", "/nodes", 1) // /admin/v1/* → one admin route
				rows[scope] = append(rows[scope], path)
			}
		}
	}
	if len(rows[ScopeInference]) < 8 || len(rows[ScopeBatch]) < 3 || len(rows[ScopeAdmin]) < 1 {
		t.Fatalf("the README's scope table was not found or is short: %v", rows)
	}
	const adminOnly = "sk-adminonly-0123456789ab"
	g := tenantGW(t, func(c *Config) {
		c.Tenants = append(c.Tenants, TenantConfig{Name: "admin-only", Key: adminOnly, Scopes: []string{ScopeAdmin}})
	})
	keys := map[string]string{ScopeInference: inferKey, ScopeBatch: bobKey, ScopeAdmin: adminOnly}
	gets := []string{"/v1/models", "/api/tags", "/api/ps", "/v1/files", "/v1/batches", "/admin/v1/nodes"}
	call := func(key, path string) int {
		method, body := http.MethodPost, io.Reader(strings.NewReader("{}"))
		if slices.Contains(gets, path) {
			method, body = http.MethodGet, nil
		}
		status, _, _ := g.do(t, method, path, key, "application/json", body)
		return status
	}
	for scope, paths := range rows {
		for _, path := range paths {
			if status := call(keys[scope], path); status == http.StatusUnauthorized || status == http.StatusForbidden {
				t.Errorf("a %s key on %s (its row in the README): %d", scope, path, status)
			}
		}
		for other, otherPaths := range rows {
			if other == scope {
				continue
			}
			for _, path := range otherPaths {
				if slices.Contains(paths, path) {
					continue
				}
				if status := call(keys[scope], path); status != http.StatusForbidden {
					t.Errorf("a %s key on %s (listed only for %s): %d, want 403", scope, path, other, status)
				}
			}
		}
	}
}

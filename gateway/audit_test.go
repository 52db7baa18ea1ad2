package gateway

import (
	"bufio"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// openGW is a gateway with no key at all (open, on loopback) whose audit records also go to a
// file; it returns the file's path.
func openGW(t *testing.T) (*coreGW, string) {
	t.Helper()
	audit := filepath.Join(t.TempDir(), "audit.jsonl")
	g := newCoreGW(t, func(c *Config) {
		c.APIKeys, c.AdminKeys, c.Tenants, c.MetricsToken = nil, nil, nil, ""
		c.AuditLog = audit
	})
	return g, audit
}

// createKey posts a key and returns the status and the decoded answer.
func createKey(t *testing.T, g *coreGW, key, body string) (int, keyObject, []byte) {
	t.Helper()
	status, _, data := g.do(t, http.MethodPost, "/admin/v1/keys", key, "application/json", strings.NewReader(body))
	var k keyObject
	_ = json.Unmarshal(data, &k)
	return status, k, data
}

// auditRecords reads the audit file's JSON lines.
func auditRecords(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// TestFirstKeyAndLastAdminKey is the lockout of issue 17 and its cure: on a keyless gateway the
// README's `herd keys create carol --scopes inference` is refused with a reason (it would close
// the gateway with no admin key left); an admin key first, then carol, works, and the admin
// keeps the admin API; the only admin key cannot be deleted, a second one lets it go. Every
// admin action and refusal is in the audit log (and file), with who, what and the outcome, and
// no secret is ever logged.
func TestFirstKeyAndLastAdminKey(t *testing.T) {
	g, auditFile := openGW(t)

	status, _, data := createKey(t, g, "", `{"name":"carol","scopes":["inference"]}`)
	if status != http.StatusConflict || !strings.Contains(string(data), `"code":"first_key_not_admin"`) ||
		!strings.Contains(string(data), "herd keys create ops --scopes admin,inference,batch") {
		t.Fatalf("first non-admin key: %d %s, want 409 first_key_not_admin saying what to do", status, data)
	}
	if status, _, _ := g.do(t, http.MethodGet, "/admin/v1/nodes", "", "", nil); status != http.StatusOK {
		t.Fatalf("the refused first key closed the gateway: /admin/v1/nodes = %d", status)
	}

	status, ops, data := createKey(t, g, "", `{"name":"ops","scopes":["admin","inference","batch"]}`)
	if status != http.StatusCreated || ops.Value == "" {
		t.Fatalf("first admin key: %d %s", status, data)
	}
	if status, _, _ := g.do(t, http.MethodGet, "/admin/v1/nodes", "", "", nil); status != http.StatusUnauthorized {
		t.Fatalf("after the first key, a call without a key = %d, want 401", status)
	}
	status, carol, data := createKey(t, g, ops.Value, `{"name":"carol","scopes":["inference"]}`)
	if status != http.StatusCreated {
		t.Fatalf("carol with the admin key: %d %s", status, data)
	}
	if status, _, _ := g.do(t, http.MethodGet, "/admin/v1/nodes", ops.Value, "", nil); status != http.StatusOK {
		t.Fatalf("the admin key cannot read /admin/v1/nodes: %d", status)
	}
	if status, _, _ := g.do(t, http.MethodPost, "/admin/v1/keys", carol.Value, "application/json",
		strings.NewReader(`{"name":"mallory","scopes":["admin"]}`)); status != http.StatusForbidden {
		t.Fatalf("carol (inference) creating a key = %d, want 403", status)
	}

	status, _, data = g.do(t, http.MethodDelete, "/admin/v1/keys/"+ops.ID, ops.Value, "", nil)
	if status != http.StatusConflict || !strings.Contains(string(data), `"code":"last_admin_key"`) {
		t.Fatalf("deleting the only admin key: %d %s, want 409 last_admin_key", status, data)
	}
	status, ops2, data := createKey(t, g, ops.Value, `{"name":"ops2","scopes":["admin"]}`)
	if status != http.StatusCreated {
		t.Fatalf("second admin key: %d %s", status, data)
	}
	if status, _, data := g.do(t, http.MethodDelete, "/admin/v1/keys/"+ops.ID, ops2.Value, "", nil); status != http.StatusOK {
		t.Fatalf("deleting an admin key while another exists: %d %s", status, data)
	}

	// The audit trail: the main log and the file hold the same records.
	logText := g.log.String()
	recs := auditRecords(t, auditFile)
	type want struct{ event, actor, outcome, keyName string }
	wants := []want{
		{"key.create", "anonymous", "failed", ""},
		{"key.create", "anonymous", "ok", "ops"},
		{"admin.denied", "", "refused", ""}, // no key at all
		{"key.create", "ops", "ok", "carol"},
		{"admin.denied", "carol", "refused", ""},
		{"key.delete", "ops", "failed", "ops"},
		{"key.create", "ops", "ok", "ops2"},
		{"key.delete", "ops2", "ok", "ops"},
	}
	if len(recs) != len(wants) {
		t.Fatalf("audit file has %d records, want %d:\n%v", len(recs), len(wants), recs)
	}
	for i, w := range wants {
		r := recs[i]
		if r["msg"] != auditMsg || r["event"] != w.event || r["actor"] != w.actor || r["outcome"] != w.outcome || r["time"] == nil ||
			r["client"] != "127.0.0.1" || (w.keyName != "" && r["key_name"] != w.keyName) {
			t.Errorf("audit record %d = %v, want %+v from 127.0.0.1", i, r, w)
		}
	}
	if n := strings.Count(logText, "msg=audit"); n != len(wants) {
		t.Errorf("the gateway log has %d audit records, want %d", n, len(wants))
	}
	file, _ := os.ReadFile(auditFile)
	for _, secret := range []string{ops.Value, carol.Value, ops2.Value} {
		if strings.Contains(logText, secret) || strings.Contains(string(file), secret) {
			t.Errorf("a key's secret is in the logs")
		}
	}
	if fi, err := os.Stat(auditFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("audit file mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
}

// TestStartupAuthLog: what the gateway says about authentication when it starts serving is
// true: open without keys; keys required with the counts when there are; and a warning naming
// HERD_ADMIN_KEYS when no key can administer.
func TestStartupAuthLog(t *testing.T) {
	for _, tc := range []struct {
		name       string
		edit       func(*Config)
		want, not  []string
		createdKey string
	}{
		{"open", func(c *Config) { c.APIKeys, c.MetricsToken = nil, "" },
			[]string{"serving without authentication", "the first must be an admin key"}, []string{"API keys required"}, ""},
		{"admin key configured", func(c *Config) { c.AdminKeys = []string{testAdminKey} },
			[]string{"API keys required", "configured_keys=2", "admin_keys=1", `metrics_readable_with="admin keys or the metrics token"`},
			[]string{"without authentication", "no key has the admin scope"}, ""},
		{"client keys only", nil,
			[]string{"API keys required", "admin_keys=0", "no key has the admin scope", "HERD_ADMIN_KEYS"},
			[]string{"without authentication"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newCoreGW(t, tc.edit)
			g.s.logAuth("127.0.0.1:8080")
			out := g.log.String()
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("start-up log lacks %q:\n%s", w, out)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(out, n) {
					t.Errorf("start-up log says %q:\n%s", n, out)
				}
			}
		})
	}

	// Keys that exist only in the store count as keys: a restart says so, not "without
	// authentication".
	g, _ := openGW(t)
	if status, _, data := createKey(t, g, "", `{"name":"ops","scopes":["admin"]}`); status != http.StatusCreated {
		t.Fatalf("%d %s", status, data)
	}
	g.s.logAuth("127.0.0.1:8080")
	out := g.log.String()
	if !strings.Contains(out, "API keys required") || !strings.Contains(out, "stored_keys=1") {
		t.Fatalf("with a stored admin key the log says:\n%s", out)
	}
}

// TestMetricsAuth: /metrics is open only while the gateway is (no key at all); with keys it
// needs the metrics token or an admin key (a client key is 403, none or a wrong one 401).
func TestMetricsAuth(t *testing.T) {
	g := tenantGW(t, nil) // admin key, client keys and newCoreGW's metrics token
	for _, tc := range []struct {
		name, key string
		status    int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"wrong token", "sk-nope-0123456789abcdef", http.StatusUnauthorized},
		{"client key", aliceKey, http.StatusForbidden},
		{"admin key", testAdminKey, http.StatusOK},
		{"metrics token", testMetricsToken, http.StatusOK},
	} {
		status, _, body := g.do(t, http.MethodGet, "/metrics", tc.key, "", nil)
		if status != tc.status {
			t.Errorf("%s: /metrics = %d %s, want %d", tc.name, status, body, tc.status)
		}
		if status == http.StatusOK && !strings.Contains(string(body), "herd_connections_open") {
			t.Errorf("%s: /metrics lacks herd_connections_open", tc.name)
		}
	}
	open, _ := openGW(t)
	if status, _, _ := open.do(t, http.MethodGet, "/metrics", "", "", nil); status != http.StatusOK {
		t.Errorf("an open gateway's /metrics = %d, want 200", status)
	}
	// The dashboard page itself holds no cluster data (it reads /admin/v1 with the key typed
	// into it), so it is served to anyone; what it shows is behind the admin key.
	status, _, page := g.do(t, http.MethodGet, "/dashboard", "", "", nil)
	if status != http.StatusOK || strings.Contains(string(page), testModel) {
		t.Errorf("/dashboard = %d; it must be the static page, without cluster data", status)
	}
	if status, _, _ := g.do(t, http.MethodGet, "/admin/v1/nodes", "", "", nil); status != http.StatusUnauthorized {
		t.Errorf("the dashboard's data (/admin/v1/nodes) without a key = %d, want 401", status)
	}
}

// TestStoredKeysAllowALANListener: keys created through the admin API count as keys: a gateway
// restarted on a non-loopback address with only stored keys starts and requires them, and a
// gateway on such an address whose store has no key (Redis emptied) refuses every request
// rather than opening.
func TestStoredKeysAllowALANListener(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.ClusterToken, cfg.DataDir = testClusterToken, dir
	s, err := New(cfg, WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	resp, err := http.Post(srv.URL+"/admin/v1/keys", "application/json", strings.NewReader(`{"name":"ops","scopes":["admin"]}`))
	if err != nil {
		t.Fatal(err)
	}
	var ops keyObject
	json.NewDecoder(resp.Body).Decode(&ops)
	resp.Body.Close()
	srv.Close()
	s.Close()
	if ops.Value == "" {
		t.Fatalf("no admin key created: %d", resp.StatusCode)
	}

	cfg.Listen = "0.0.0.0:8080"
	s, err = New(cfg, WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatalf("a LAN listener with a stored admin key: %v", err)
	}
	defer s.Close()
	srv = httptest.NewServer(s.Handler())
	defer srv.Close()
	for key, want := range map[string]int{"": http.StatusUnauthorized, ops.Value: http.StatusOK} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/admin/v1/nodes", nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("key %q: %d, want %d", key, resp.StatusCode, want)
		}
	}

	// The store emptied under a LAN gateway: closed, not open.
	s.core.keys.static = nil
	s.core.keys.build(nil)
	if tab := s.core.keys.table(); tab.open() || !tab.noKeys() {
		t.Fatalf("an emptied key table on a LAN listener: open=%v", tab.open())
	}
	resp, err = http.Get(srv.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a LAN gateway without any key answered %d, want 401", resp.StatusCode)
	}
	if _, err := New(Config{ClusterToken: "x", DataDir: t.TempDir(), Listen: "0.0.0.0:8080"}); err == nil ||
		!strings.Contains(err.Error(), "refusing to listen on non-loopback") {
		t.Errorf("a LAN listener with no key anywhere: %v", err)
	}
}

package gateway

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/herd-llm/herd/gateway/api"
	"github.com/herd-llm/herd/gateway/store"
)

// Tenants. Every API key is a tenant: a name, scopes and rate limits. Tenants come from three
// places, merged into one table:
//   - Config.Tenants (the config file's gateway.tenants), with the key or only its SHA-256;
//   - the shorthand flags: each of Config.APIKeys is a tenant "key-<first 8 hex of its SHA-256>"
//     with scopes inference and batch; each of Config.AdminKeys is "admin-<…>" with all three
//     scopes. An API key is never an admin key unless it says so;
//   - keys created through /admin/v1/keys, kept in the store (only their SHA-256).
//
// Decisions:
//   - The table is an immutable map from a key's SHA-256 to its tenant, swapped atomically: the
//     request path hashes the bearer token (no allocation) and looks it up, with no store round
//     trip. A lookup by digest shows nothing in its timing about how close a wrong key is to a
//     right one. The table is rebuilt after every change made here and every keyRefreshInterval
//     (keys created or deleted through another gateway sharing Redis take that long to show).
//   - With no tenant at all (no key configured, none stored), the gateway is open: every request
//     is the anonymous tenant with every scope. That only ever happens on a loopback listener:
//     New refuses another address without a key, configured or stored, and a gateway on another
//     address whose store later loses its keys (an emptied Redis) refuses every request instead
//     of opening. Creating the first key through the admin API closes it, so the first key must
//     hold the admin scope: a non-admin first key is refused (409 first_key_not_admin, saying
//     why and what to run instead), since it would leave nobody able to reach /admin/v1. For
//     the same reason the last admin key cannot be deleted (409 last_admin_key) while it is the
//     only way in. What remains is a configuration that declares no admin key beside stored
//     non-admin ones; the start-up log then warns and names the way back (--admin-keys,
//     HERD_ADMIN_KEYS), which always works since configured keys need no store.
//   - Comparisons: a key is looked up by its SHA-256 digest in a map. What the lookup's timing
//     could reveal is how much of a digest matched, which says nothing usable about the key
//     (finding a key with a chosen digest prefix is a preimage search); the key itself is never
//     compared byte by byte with anything. The cluster token and the metrics token are compared
//     as digests with crypto/subtle (auth.go). Keys never reach a log: records name tenants and
//     key IDs; a wrong key is echoed to its sender only, redacted as OpenAI does.
//   - Scopes: inference for /v1/chat/completions, /v1/completions, /v1/embeddings; batch for
//     /v1/files and /v1/batches; either for /v1/models; admin for /admin/v1. A key lacking the
//     scope gets 403 permission_error, naming the missing scope.
//   - Ownership: files and batches belong to the tenant (by name) that made them, output files to
//     their batch's tenant. A tenant sees, reads, cancels and deletes only its own, and gets 404
//     for another's, as OpenAI answers for objects of another project; a tenant with the admin
//     scope sees everyone's. A key deleted and re-created under the same name gets its files back
//     (that is how a key is rotated).

// Scope names, as configured and as the admin API shows them.
const (
	ScopeInference = "inference"
	ScopeBatch     = "batch"
	ScopeAdmin     = "admin"
)

// scopeSet is a set of scopes as bits.
type scopeSet uint8

const (
	scopeInference scopeSet = 1 << iota
	scopeBatch
	scopeAdmin

	scopeAll = scopeInference | scopeBatch | scopeAdmin
)

var scopeNames = []struct {
	bit  scopeSet
	name string
}{{scopeInference, ScopeInference}, {scopeBatch, ScopeBatch}, {scopeAdmin, ScopeAdmin}}

// parseScopes reads scope names; none means inference and batch (a client key).
func parseScopes(names []string) (scopeSet, error) {
	if len(names) == 0 {
		return scopeInference | scopeBatch, nil
	}
	var s scopeSet
	for _, n := range names {
		found := false
		for _, sc := range scopeNames {
			if strings.EqualFold(strings.TrimSpace(n), sc.name) {
				s |= sc.bit
				found = true
			}
		}
		if !found {
			return 0, fmt.Errorf("unknown scope %q (want %s, %s or %s)", n, ScopeInference, ScopeBatch, ScopeAdmin)
		}
	}
	return s, nil
}

func (s scopeSet) names() []string {
	out := []string{}
	for _, sc := range scopeNames {
		if s&sc.bit != 0 {
			out = append(out, sc.name)
		}
	}
	return out
}

// TenantConfig is one API key declared in the configuration file.
type TenantConfig struct {
	// Name names the tenant: it owns files and batches by this name, and its rate-limit counters
	// are kept under it. Letters, digits, '.', '_' and '-', at most 64.
	Name string `yaml:"name"`
	// Key is the secret clients send as "Authorization: Bearer KEY"; or give KeySHA256 instead,
	// the hex SHA-256 of the key, so the file holds no secret (sha256sum of the key, no newline).
	Key       string `yaml:"key"`
	KeySHA256 string `yaml:"key_sha256"`
	// Scopes: inference, batch, admin. Empty means inference and batch.
	Scopes []string `yaml:"scopes"`
	// RequestsPerMinute and TokensPerMinute limit the key (429 past them); 0: no limit.
	RequestsPerMinute int `yaml:"requests_per_minute"`
	TokensPerMinute   int `yaml:"tokens_per_minute"`
}

// validTenantName reports whether name may name a tenant.
func validTenantName(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// sum returns the key's SHA-256, from Key or KeySHA256.
func (tc TenantConfig) sum() ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	key, hexSum := strings.TrimSpace(tc.Key), strings.TrimSpace(tc.KeySHA256)
	switch {
	case key != "" && hexSum != "":
		return sum, errors.New("set key or key_sha256, not both")
	case key != "":
		return sha256.Sum256([]byte(key)), nil
	case hexSum != "":
		b, err := hex.DecodeString(hexSum)
		if err != nil || len(b) != sha256.Size {
			return sum, errors.New("key_sha256 must be 64 hex digits")
		}
		copy(sum[:], b)
		return sum, nil
	}
	return sum, errors.New("key or key_sha256 is required")
}

// validate reports what is wrong with one configured tenant.
func (tc TenantConfig) validate() error {
	if !validTenantName(tc.Name) {
		return fmt.Errorf("tenant name %q: use 1 to 64 letters, digits, '.', '_' or '-'", tc.Name)
	}
	if _, err := tc.sum(); err != nil {
		return fmt.Errorf("tenant %s: %w", tc.Name, err)
	}
	if _, err := parseScopes(tc.Scopes); err != nil {
		return fmt.Errorf("tenant %s: %w", tc.Name, err)
	}
	if tc.RequestsPerMinute < 0 || tc.TokensPerMinute < 0 {
		return fmt.Errorf("tenant %s: rate limits must not be negative", tc.Name)
	}
	return nil
}

// Where a tenant comes from.
const (
	sourceConfig = "config"
	sourceAPI    = "api"
)

// tenant is an API key as the request path sees it.
type tenant struct {
	id       string
	name     string
	scopes   scopeSet
	rpm, tpm int
	source   string
	redacted string
	created  int64
}

// has reports whether t holds one of the scopes in need.
func (t *tenant) has(need scopeSet) bool { return t.scopes&need != 0 }

// owner is the owner filter for t's lists: "" (everyone's) for an admin.
func (t *tenant) owner() string {
	if t.has(scopeAdmin) {
		return ""
	}
	return t.name
}

// sees reports whether t may see an object owned by owner.
func (t *tenant) sees(owner string) bool { return t.has(scopeAdmin) || owner == t.name }

// anonymous is every caller of an open gateway (no key configured, on loopback).
var anonymous = &tenant{name: "", scopes: scopeAll, source: "none"}

// tenantTable is one immutable generation of the tenants.
type tenantTable struct {
	bySum  map[[sha256.Size]byte]*tenant
	byName map[string]*tenant
	// ordered lists the tenants by name, for the admin API.
	ordered []*tenant
	// mayOpen is true when the gateway listens on loopback only, where no key means open.
	mayOpen bool
}

// open reports whether the gateway serves everyone: no key at all, on a loopback listener. A
// gateway on another address with no key (its store lost the keys it started with) is not
// open: it refuses every request until a key is configured.
func (t *tenantTable) open() bool { return len(t.bySum) == 0 && t.mayOpen }

// noKeys reports whether no key exists at all.
func (t *tenantTable) noKeys() bool { return len(t.bySum) == 0 }

// lookup returns the tenant of token.
func (t *tenantTable) lookup(token string) *tenant {
	// Hashing from a stack buffer spares the allocation []byte(token) costs for keys longer than
	// 32 bytes; only a key longer than any real one takes the allocating path.
	var buf [256]byte
	var sum [sha256.Size]byte
	if len(token) <= len(buf) {
		sum = sha256.Sum256(buf[:copy(buf[:], token)])
	} else {
		sum = sha256.Sum256([]byte(token))
	}
	return t.bySum[sum]
}

// keyRefreshInterval bounds how long a key created or deleted through another gateway (Redis)
// takes to be seen here.
const keyRefreshInterval = 5 * time.Second

// keyring builds the tenant table from the configuration and the store.
type keyring struct {
	// static are the configured tenants, by digest.
	static map[[sha256.Size]byte]*tenant
	st     store.Keys
	cur    atomic.Pointer[tenantTable]
	// mayOpen: the listener is loopback-only, so an empty table means an open gateway.
	mayOpen bool
	// mu serialises reloads, so an older generation never replaces a newer one.
	mu sync.Mutex
}

// shortSum names a shorthand key's tenant by its digest, stable however the key list is ordered.
func shortSum(sum [sha256.Size]byte) string { return hex.EncodeToString(sum[:4]) }

// newKeyring reads the configured tenants; cfg has been validated.
func newKeyring(cfg Config, st store.Keys) (*keyring, error) {
	r := &keyring{static: map[[sha256.Size]byte]*tenant{}, st: st, mayOpen: isLoopbackListen(cfg.Listen)}
	names := map[string]bool{}
	add := func(sum [sha256.Size]byte, t *tenant) error {
		if prev, ok := r.static[sum]; ok {
			// The same key twice (in --api-keys and --admin-keys, say): it keeps every scope given.
			prev.scopes |= t.scopes
			return nil
		}
		if names[t.name] {
			return fmt.Errorf("tenant name %q is used twice", t.name)
		}
		names[t.name] = true
		t.id, t.source = "config:"+t.name, sourceConfig
		r.static[sum] = t
		return nil
	}
	for _, tc := range cfg.Tenants {
		sum, err := tc.sum()
		if err != nil {
			return nil, fmt.Errorf("tenant %s: %w", tc.Name, err)
		}
		scopes, err := parseScopes(tc.Scopes)
		if err != nil {
			return nil, fmt.Errorf("tenant %s: %w", tc.Name, err)
		}
		redacted := "sha256:" + hex.EncodeToString(sum[:4]) + "…"
		if tc.Key != "" {
			redacted = redactKey(strings.TrimSpace(tc.Key))
		}
		if err := add(sum, &tenant{name: tc.Name, scopes: scopes, rpm: tc.RequestsPerMinute, tpm: tc.TokensPerMinute, redacted: redacted}); err != nil {
			return nil, err
		}
	}
	for _, list := range []struct {
		keys   []string
		prefix string
		scopes scopeSet
	}{{cfg.AdminKeys, "admin-", scopeAll}, {cfg.APIKeys, "key-", scopeInference | scopeBatch}} {
		for _, key := range list.keys {
			if key = strings.TrimSpace(key); key == "" {
				continue
			}
			sum := sha256.Sum256([]byte(key))
			if err := add(sum, &tenant{name: list.prefix + shortSum(sum), scopes: list.scopes, redacted: redactKey(key)}); err != nil {
				return nil, err
			}
		}
	}
	r.build(nil)
	return r, nil
}

// build makes a new table from the static tenants and the stored keys and swaps it in. A stored
// key whose name or digest a configured tenant already has is left out (the configuration wins).
func (r *keyring) build(stored []store.APIKey) {
	t := &tenantTable{bySum: make(map[[sha256.Size]byte]*tenant, len(r.static)+len(stored)), byName: map[string]*tenant{}, mayOpen: r.mayOpen}
	for sum, tn := range r.static {
		t.bySum[sum] = tn
		t.byName[tn.name] = tn
	}
	for _, k := range stored {
		b, err := hex.DecodeString(k.SHA256)
		if err != nil || len(b) != sha256.Size {
			continue
		}
		var sum [sha256.Size]byte
		copy(sum[:], b)
		if _, taken := t.bySum[sum]; taken || t.byName[k.Name] != nil {
			continue
		}
		scopes, err := parseScopes(k.Scopes)
		if err != nil || len(k.Scopes) == 0 {
			continue
		}
		tn := &tenant{id: k.ID, name: k.Name, scopes: scopes, rpm: k.RequestsPerMinute, tpm: k.TokensPerMinute,
			source: sourceAPI, redacted: k.Redacted, created: k.CreatedAt}
		t.bySum[sum] = tn
		t.byName[tn.name] = tn
	}
	for _, tn := range t.byName {
		t.ordered = append(t.ordered, tn)
	}
	slices.SortFunc(t.ordered, func(a, b *tenant) int { return strings.Compare(a.name, b.name) })
	r.cur.Store(t)
}

// table returns the current generation.
func (r *keyring) table() *tenantTable { return r.cur.Load() }

// reload reads the stored keys and rebuilds the table.
func (r *keyring) reload(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	stored, err := r.st.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	r.build(stored)
	return nil
}

// keep refreshes the table every keyRefreshInterval until ctx is done.
func (r *keyring) keep(ctx context.Context, log interface{ Warn(string, ...any) }) {
	t := time.NewTicker(keyRefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := r.reload(ctx); err != nil && ctx.Err() == nil {
				log.Warn("API keys refresh failed; keeping the last ones read", "err", err)
			}
		}
	}
}

// newSecret makes an API key: "sk-herd-" and 32 random bytes, base64url.
func newSecret() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("keys: %w", err)
	}
	return "sk-herd-" + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// Authentication on the request path.

// authenticate returns the caller's tenant, or answers 401 and returns nil. It allocates nothing
// for a good key.
func (s *Server) authenticate(c *gin.Context) *tenant {
	tab := s.core.keys.table()
	if tab.open() {
		return anonymous
	}
	token, ok := bearer(c.GetHeader("Authorization"))
	if !ok {
		abortWithError(c, errNoKey())
		return nil
	}
	t := tab.lookup(token)
	if t == nil {
		abortWithError(c, errBadKey(token))
	}
	return t
}

// errScope is the 403 for a known key without the scope a route needs.
func errScope(need scopeSet) *APIError {
	return &APIError{Status: http.StatusForbidden, Type: errPermission, Code: "insufficient_permissions",
		Message: fmt.Sprintf("You have insufficient permissions for this operation. Missing scopes: %s.", strings.Join(need.names(), " or "))}
}

// tenantKey is where requireScope leaves the tenant in the gin context.
const tenantKey = "herd.tenant"

// requireScope authenticates the caller and admits it if it has one of the scopes in need.
func (s *Server) requireScope(need scopeSet) gin.HandlerFunc {
	return func(c *gin.Context) {
		t := s.authenticate(c)
		if t == nil {
			return
		}
		// Set before the check, so that the audit log names who was refused.
		c.Set(tenantKey, t)
		if !t.has(need) {
			abortWithError(c, errScope(need))
			return
		}
	}
}

// tenantOf returns the tenant requireScope admitted. A route mounted without it (only tests do)
// acts as an open gateway's.
func tenantOf(c *gin.Context) *tenant {
	if v, ok := c.Get(tenantKey); ok {
		if t, ok := v.(*tenant); ok {
			return t
		}
	}
	return anonymous
}

// The admin API for keys: /admin/v1/keys.

// keyObject is a key as the admin API shows it (the gateway/api wire type).
type keyObject = api.APIKey

func newKeyObject(t *tenant) keyObject {
	return keyObject{Object: "api_key", ID: t.id, Name: t.name, RedactedValue: t.redacted, Scopes: t.scopes.names(),
		RequestsPerMinute: t.rpm, TokensPerMinute: t.tpm, Source: t.source, CreatedAt: t.created}
}

// registerKeyRoutes mounts /admin/v1/keys: GET (list), POST (create), GET/DELETE /:id.
func (s *Server) registerKeyRoutes(admin *gin.RouterGroup) {
	g := admin.Group("/keys")
	g.GET("", s.handleListKeys)
	g.POST("", s.handleCreateKey)
	g.GET("/:id", s.handleGetKey)
	g.DELETE("/:id", s.handleDeleteKey)
}

func (s *Server) handleListKeys(c *gin.Context) {
	tab := s.core.keys.table()
	out := make([]keyObject, 0, len(tab.ordered))
	for _, t := range tab.ordered {
		out = append(out, newKeyObject(t))
	}
	c.JSON(http.StatusOK, gin.H{"object": "list", "data": out})
}

// findKey returns the tenant with that ID.
func (s *Server) findKey(id string) *tenant {
	for _, t := range s.core.keys.table().ordered {
		if t.id == id {
			return t
		}
	}
	return nil
}

func errKeyNotFound(id string) *APIError {
	return notFound("key_not_found", "id", "No API key with ID %q.", id)
}

func (s *Server) handleGetKey(c *gin.Context) {
	t := s.findKey(c.Param("id"))
	if t == nil {
		abortWithError(c, errKeyNotFound(c.Param("id")))
		return
	}
	c.JSON(http.StatusOK, newKeyObject(t))
}

// createKeyBody is POST /admin/v1/keys' body.
type createKeyBody = api.CreateKeyRequest

// maxKeyBody bounds POST /admin/v1/keys' body.
const maxKeyBody = 64 << 10

func (s *Server) handleCreateKey(c *gin.Context) {
	var body createKeyBody
	if err := decodeJSONBody(c, maxKeyBody, &body); err != nil {
		abortWithError(c, err)
		return
	}
	if !validTenantName(body.Name) {
		abortWithError(c, badRequest("invalid_value", "name", "name must be 1 to 64 letters, digits, '.', '_' or '-'"))
		return
	}
	if len(body.Scopes) == 0 {
		abortWithError(c, badRequest("missing_required_parameter", "scopes", "scopes is required: any of %s, %s, %s", ScopeInference, ScopeBatch, ScopeAdmin))
		return
	}
	scopes, err := parseScopes(body.Scopes)
	if err != nil {
		abortWithError(c, badRequest("invalid_value", "scopes", "%v", err))
		return
	}
	if body.RequestsPerMinute < 0 || body.TokensPerMinute < 0 {
		abortWithError(c, badRequest("invalid_value", "requests_per_minute", "rate limits must not be negative"))
		return
	}
	if s.core.keys.table().byName[body.Name] != nil {
		abortWithError(c, errKeyNameTaken(body.Name))
		return
	}
	if s.core.keys.table().noKeys() && scopes&scopeAdmin == 0 {
		abortWithError(c, errFirstKeyNotAdmin(body.Name))
		return
	}
	secret, err := newSecret()
	if err != nil {
		abortWithError(c, err)
		return
	}
	sum := sha256.Sum256([]byte(secret))
	now := s.core.clock.Now()
	k := store.APIKey{
		ID: store.NewID("key_", now), Name: body.Name, SHA256: hex.EncodeToString(sum[:]), Redacted: redactKey(secret),
		Scopes: scopes.names(), RequestsPerMinute: body.RequestsPerMinute, TokensPerMinute: body.TokensPerMinute,
		CreatedAt: now.Unix(),
	}
	if err := s.bulkStore.CreateKey(c.Request.Context(), k); err != nil {
		if errors.Is(err, store.ErrExists) {
			abortWithError(c, errKeyNameTaken(body.Name))
			return
		}
		s.log.Error("create API key failed", "err", err)
		abortWithError(c, err)
		return
	}
	if err := s.core.keys.reload(c.Request.Context()); err != nil {
		s.log.Warn("API keys reload after create failed", "err", err)
	}
	s.log.Info("API key created", "name", k.Name, "id", k.ID, "scopes", k.Scopes)
	auditDetail(c, slog.String("key_id", k.ID), slog.String("key_name", k.Name), slog.Any("key_scopes", k.Scopes))
	obj := newKeyObject(&tenant{id: k.ID, name: k.Name, scopes: scopes, rpm: k.RequestsPerMinute, tpm: k.TokensPerMinute,
		source: sourceAPI, redacted: k.Redacted, created: k.CreatedAt})
	obj.Value = secret
	c.JSON(http.StatusCreated, obj)
}

// errFirstKeyNotAdmin refuses a first key without the admin scope: it would close the open
// gateway to everyone without leaving a way to manage it.
func errFirstKeyNotAdmin(name string) *APIError {
	return &APIError{Status: http.StatusConflict, Type: errInvalidRequest, Code: "first_key_not_admin", Param: "scopes",
		Message: fmt.Sprintf("No API key exists yet, so %q would be the first: it would close the gateway to callers without a key, "+
			"and without the admin scope nobody could then manage keys, nodes or the dashboard. Create an admin key first "+
			"(herd keys create ops --scopes admin,inference,batch, and keep its secret), then %q with that key.", name, name)}
}

// errLastAdminKey refuses to delete the only admin key: that would lock every admin out.
func errLastAdminKey(name string) *APIError {
	return &APIError{Status: http.StatusConflict, Type: errInvalidRequest, Code: "last_admin_key", Param: "id",
		Message: fmt.Sprintf("API key %q is the only key with the admin scope: deleting it would leave nobody able to manage the gateway. "+
			"Create another admin key first.", name)}
}

// lastAdmin reports whether t is the only tenant with the admin scope.
func (tab *tenantTable) lastAdmin(t *tenant) bool {
	if !t.has(scopeAdmin) {
		return false
	}
	for _, o := range tab.ordered {
		if o != t && o.has(scopeAdmin) {
			return false
		}
	}
	return true
}

func errKeyNameTaken(name string) *APIError {
	return &APIError{Status: http.StatusConflict, Type: errInvalidRequest, Code: "key_name_taken", Param: "name",
		Message: fmt.Sprintf("An API key named %q already exists.", name)}
}

func (s *Server) handleDeleteKey(c *gin.Context) {
	id := c.Param("id")
	t := s.findKey(id)
	if t != nil && t.source == sourceConfig {
		abortWithError(c, badRequest("key_from_config", "id", "API key %q comes from the configuration; remove it there.", t.name))
		return
	}
	if t != nil {
		auditDetail(c, slog.String("key_id", t.id), slog.String("key_name", t.name))
		if s.core.keys.table().lastAdmin(t) {
			abortWithError(c, errLastAdminKey(t.name))
			return
		}
	}
	if err := s.bulkStore.DeleteKey(c.Request.Context(), id); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			abortWithError(c, errKeyNotFound(id))
			return
		}
		s.log.Error("delete API key failed", "err", err)
		abortWithError(c, err)
		return
	}
	if err := s.core.keys.reload(c.Request.Context()); err != nil {
		s.log.Warn("API keys reload after delete failed", "err", err)
	}
	s.log.Info("API key deleted", "id", id)
	c.JSON(http.StatusOK, gin.H{"id": id, "object": "api_key.deleted", "deleted": true})
}

// logAuth says at start, truthfully, how the gateway authenticates: open (no key anywhere), or
// keys required, with how many are configured and stored and how many can administer; and warns
// when no admin key exists, naming the way back.
func (s *Server) logAuth(listen string) {
	tab := s.core.keys.table()
	switch {
	case tab.open():
		s.log.Warn("no API key configured or stored: serving without authentication, on loopback only, until a key is created "+
			"through /admin/v1/keys (the first must be an admin key)", "listen", listen)
		return
	case tab.noKeys():
		s.log.Error("no API key configured or stored on a non-loopback listener: every request is refused (401) until one is; "+
			"restart with --admin-keys KEY (or HERD_ADMIN_KEYS=KEY)", "listen", listen)
		return
	}
	var configured, stored, admins int
	for _, t := range tab.ordered {
		if t.source == sourceConfig {
			configured++
		} else {
			stored++
		}
		if t.has(scopeAdmin) {
			admins++
		}
	}
	metricsAuth := "admin keys"
	if !s.core.metricsKeys.empty() {
		metricsAuth = "admin keys or the metrics token"
	}
	s.log.Info("API keys required", "listen", listen, "configured_keys", configured, "stored_keys", stored, "admin_keys", admins,
		"metrics_readable_with", metricsAuth)
	if admins == 0 {
		s.log.Warn("no key has the admin scope: /admin/v1 (herd nodes, herd keys, the dashboard) refuses every key; " +
			"restart the gateway with --admin-keys KEY (or HERD_ADMIN_KEYS=KEY) to get an admin key back")
	}
}

// metricsAuth guards /metrics: open while the gateway is (no key at all); otherwise the caller
// must show the metrics token (Prometheus's bearer token) or a key with the admin scope.
func (s *Server) metricsAuth() gin.HandlerFunc {
	return func(c *gin.Context) {
		tab := s.core.keys.table()
		if tab.open() {
			return
		}
		token, ok := bearer(c.GetHeader("Authorization"))
		if !ok {
			abortWithError(c, errNoKey())
			return
		}
		if !s.core.metricsKeys.empty() && s.core.metricsKeys.match(token) {
			return
		}
		t := tab.lookup(token)
		switch {
		case t == nil:
			abortWithError(c, errBadKey(token))
		case !t.has(scopeAdmin):
			abortWithError(c, errScope(scopeAdmin))
		}
	}
}

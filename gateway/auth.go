package gateway

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
)

// Authentication of agents (the cluster token; API keys are tenants, tenants.go). Keys are compared as SHA-256 digests in constant time, against every
// configured key without an early exit, so neither a key's length nor its position in the list
// nor how many of its bytes match shows in the response time. The common path allocates nothing.

// keySet is a set of secrets compared in constant time.
type keySet struct{ sums [][sha256.Size]byte }

func newKeySet(keys []string) keySet {
	var k keySet
	for _, key := range keys {
		if key = strings.TrimSpace(key); key != "" {
			k.sums = append(k.sums, sha256.Sum256([]byte(key)))
		}
	}
	return k
}

func (k keySet) empty() bool { return len(k.sums) == 0 }

// match reports whether key is in the set.
func (k keySet) match(key string) bool {
	// Hashing from a stack buffer spares the allocation []byte(key) costs for keys longer than
	// 32 bytes; only a key longer than any real one takes the allocating path.
	var buf [256]byte
	var sum [sha256.Size]byte
	if len(key) <= len(buf) {
		sum = sha256.Sum256(buf[:copy(buf[:], key)])
	} else {
		sum = sha256.Sum256([]byte(key))
	}
	ok := 0
	for i := range k.sums {
		ok |= subtle.ConstantTimeCompare(sum[:], k.sums[i][:])
	}
	return ok == 1
}

// bearer returns the token of an "Authorization: Bearer TOKEN" header value.
func bearer(h string) (string, bool) {
	const prefix = "Bearer "
	if len(h) < len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return "", false
	}
	t := strings.TrimSpace(h[len(prefix):])
	return t, t != ""
}

// msgNoKey is OpenAI's wording for a request without a key.
const msgNoKey = "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."

func errNoKey() *APIError {
	return &APIError{Status: http.StatusUnauthorized, Type: errInvalidRequest, Code: "invalid_api_key", Message: msgNoKey}
}

// errBadKey is OpenAI's 401 for a wrong key, which it echoes redacted.
func errBadKey(key string) *APIError {
	return &APIError{Status: http.StatusUnauthorized, Type: errInvalidRequest, Code: "invalid_api_key",
		Message: "Incorrect API key provided: " + redactKey(key) + "."}
}

// redactKey keeps a key's first three and last four characters, as OpenAI shows them.
func redactKey(key string) string {
	if len(key) < 12 {
		return "***"
	}
	return key[:3] + strings.Repeat("*", min(len(key)-7, 20)) + key[len(key)-4:]
}

// authorize checks the request's bearer token against keys; an empty set lets everyone in
// (Config.Validate only allows that on a loopback listener).
func authorize(c *gin.Context, keys keySet) (ok bool, token string) {
	if keys.empty() {
		return true, ""
	}
	token, present := bearer(c.GetHeader("Authorization"))
	if !present {
		abortWithError(c, errNoKey())
		return false, ""
	}
	return keys.match(token), token
}

// clusterAuth admits agents: the bearer token must be the cluster token.
func (s *Server) clusterAuth() gin.HandlerFunc {
	return func(c *gin.Context) {
		ok, _ := authorize(c, s.core.clusterKeys)
		if c.IsAborted() {
			return
		}
		if !ok {
			abortWithError(c, &APIError{Status: http.StatusUnauthorized, Type: errInvalidRequest, Code: "invalid_cluster_token",
				Message: "Incorrect cluster token provided."})
		}
	}
}

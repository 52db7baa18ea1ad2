package api

import (
	"context"
	"net/http"
	"net/url"
)

// APIKey is a tenant's API key as /admin/v1/keys shows it. Value, the secret, is set only in the
// answer to the request that created the key; the gateway keeps only its SHA-256.
type APIKey struct {
	Object            string   `json:"object"`
	ID                string   `json:"id"`
	Name              string   `json:"name"`
	RedactedValue     string   `json:"redacted_value"`
	Value             string   `json:"value,omitempty"`
	Scopes            []string `json:"scopes"`
	RequestsPerMinute int      `json:"requests_per_minute"`
	TokensPerMinute   int      `json:"tokens_per_minute"`
	// Source is "config" (the configuration file or the --api-keys/--admin-keys shorthand) or
	// "api" (created through /admin/v1/keys).
	Source    string `json:"source"`
	CreatedAt int64  `json:"created_at"`
}

// CreateKeyRequest is POST /admin/v1/keys' body.
type CreateKeyRequest struct {
	Name              string   `json:"name"`
	Scopes            []string `json:"scopes"`
	RequestsPerMinute int      `json:"requests_per_minute,omitempty"`
	TokensPerMinute   int      `json:"tokens_per_minute,omitempty"`
}

// KeyList is GET /admin/v1/keys' answer.
type KeyList struct {
	Object string   `json:"object"`
	Data   []APIKey `json:"data"`
}

// Keys lists the API keys (secrets redacted).
func (c *Client) Keys(ctx context.Context) ([]APIKey, error) {
	var l KeyList
	err := c.GetJSON(ctx, "/admin/v1/keys", &l)
	return l.Data, err
}

// CreateKey creates an API key; the answer's Value is the secret, shown this once.
func (c *Client) CreateKey(ctx context.Context, req CreateKeyRequest) (APIKey, error) {
	var k APIKey
	err := c.SendJSON(ctx, http.MethodPost, "/admin/v1/keys", req, &k)
	return k, err
}

// DeleteKey deletes a key created through the admin API.
func (c *Client) DeleteKey(ctx context.Context, id string) error {
	return c.SendJSON(ctx, http.MethodDelete, "/admin/v1/keys/"+url.PathEscape(id), nil, nil)
}

package api

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// JoinTokenRequest asks for a join token (POST /admin/v1/join-tokens).
type JoinTokenRequest struct {
	// TTL is how long the token is valid ("30m", "2h"); empty: one hour.
	TTL string `json:"ttl,omitempty"`
}

// JoinToken is a join token for `herd agent --join URL --token TOKEN`.
type JoinToken struct {
	// Token is the token's written form; it carries the cluster CA's fingerprint.
	Token string `json:"token"`
	// ExpiresAt is when the gateway stops accepting it.
	ExpiresAt time.Time `json:"expires_at"`
	// CAFingerprint is the cluster CA's fingerprint (sha256 of its public key).
	CAFingerprint string `json:"ca_fingerprint"`
}

// Revocation is the answer to POST /admin/v1/nodes/{id}/revoke.
type Revocation struct {
	// Node is the revoked node ID.
	Node string `json:"node"`
	// Revoked is true once every gateway refuses the node's certificates.
	Revoked bool `json:"revoked"`
}

// NewJoinToken asks the gateway for a join token valid for ttl (empty: the gateway's default).
func (c *Client) NewJoinToken(ctx context.Context, ttl string) (JoinToken, error) {
	var out JoinToken
	err := c.SendJSON(ctx, http.MethodPost, "/admin/v1/join-tokens", JoinTokenRequest{TTL: ttl}, &out)
	return out, err
}

// RevokeNode revokes a node's certificates on every gateway.
func (c *Client) RevokeNode(ctx context.Context, id string) (Revocation, error) {
	var out Revocation
	err := c.SendJSON(ctx, http.MethodPost, "/admin/v1/nodes/"+url.PathEscape(id)+"/revoke", nil, &out)
	return out, err
}

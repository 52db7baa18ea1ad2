package agentapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// HeartbeatLink sends one agent's heartbeats to one gateway, as deltas where it can (see
// HeartbeatDelta): the full heartbeat first, after the static part changed, after the gateway
// asked for it (412 heartbeat_base_unknown: it restarted, or forgot the node) or refused a
// delta in any other way (an older gateway answers 400 or 415), and deltas in between to a
// gateway that announced it reads them. It is not safe for concurrent use: one goroutine sends
// a node's heartbeats to a gateway.
type HeartbeatLink struct {
	// URL is the gateway's base URL; HC the client (nil: DefaultHTTPClient).
	URL string
	HC  *http.Client

	// deltas says the gateway's last reply announced DeltaVersion; held is the StaticHash of
	// the last full heartbeat it accepted, which it holds to apply deltas onto.
	deltas bool
	held   string
	buf    []byte
	// Fulls and Deltas count the heartbeats this link had accepted of each kind.
	Fulls, Deltas int64
}

// Send sends hb with token (empty when the client certificate identifies the node) and returns
// the gateway's reply. hb.StaticHash is computed when empty; callers whose static part never
// changes may set it once.
func (l *HeartbeatLink) Send(ctx context.Context, token string, hb Heartbeat) (HeartbeatReply, error) {
	if l.HC == nil {
		l.HC = DefaultHTTPClient()
	}
	if hb.StaticHash == "" {
		hb.StaticHash = StaticHash(&hb)
	}
	if l.deltas && l.held == hb.StaticHash {
		reply, err := l.sendDelta(ctx, token, &hb)
		if err == nil {
			l.Deltas++
			l.deltas = reply.DeltaVersion == DeltaVersion
			return reply, nil
		}
		if !fullAfter(err) {
			return reply, err
		}
		// The gateway holds no base for it (restarted, forgot the node, another instance held the
		// ID) or could not read it: the same heartbeat in full, now, so no interval is lost.
	}
	l.held = ""
	reply, err := SendHeartbeat(ctx, l.HC, l.URL, token, hb)
	if err != nil {
		return reply, err
	}
	l.Fulls++
	l.deltas = reply.DeltaVersion == DeltaVersion
	l.held = hb.StaticHash
	return reply, nil
}

// fullAfter says whether a refused delta should be followed by the full heartbeat: any refusal
// of the delta itself (4xx), but not of the node (401, 403, 409) or of the rate (429), and not a
// failure to reach the gateway, which the full heartbeat would meet too.
func fullAfter(err error) bool {
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status/100 != 4 {
		return false
	}
	switch ae.Status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusConflict, http.StatusTooManyRequests:
		return false
	}
	return true
}

func (l *HeartbeatLink) sendDelta(ctx context.Context, token string, hb *Heartbeat) (HeartbeatReply, error) {
	var reply HeartbeatReply
	d := DeltaOf(hb)
	b, err := d.AppendBinary(l.buf[:0])
	if err != nil {
		return reply, err
	}
	l.buf = b
	u := strings.TrimRight(l.URL, "/") + PathHeartbeat
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(b))
	if err != nil {
		return reply, fmt.Errorf("agent api: POST %s: %w", u, err)
	}
	req.Header.Set("Content-Type", ContentTypeHeartbeatDelta)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	InjectTraceContext(ctx, req.Header)
	resp, err := l.HC.Do(req)
	if err != nil {
		return reply, fmt.Errorf("agent api: POST %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return reply, readAPIError(resp)
	}
	if err := json.NewDecoder(resp.Body).Decode(&reply); err != nil {
		return reply, fmt.Errorf("agent api: decode %s: %w", PathHeartbeat, err)
	}
	// Read to the end so the connection goes back to the pool.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	return reply, nil
}

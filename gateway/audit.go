package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"

	"github.com/gin-gonic/gin"
)

// The audit log: who did what to the cluster, and when.
//
// Decisions:
//   - Every admin action (a request to /admin/v1 other than GET and HEAD) and every refused
//     request to /admin/v1 (401, 403) is one record, written when the request is answered. A
//     record is a slog record whose message is "audit" with a stable "event" attribute (the
//     action: key.create, key.delete, node.drain, node.undrain, node.fault, model.pull,
//     model.load, model.unload, model.copy, model.delete, preset.put, preset.delete; any other
//     admin write is admin.write; a refusal is admin.denied), the actor (tenant name and key
//     ID; "anonymous" on an open gateway), the client address (clientAddr: behind a trusted
//     proxy, the forwarded one), the method and route, the route's parameters, the status and
//     outcome (ok, refused, failed) — and the time, which slog records itself. Handlers add
//     what only they know (the new key's name and scopes) with auditDetail.
//   - Records go to the gateway's log (component=audit, at Info: never filtered out by the
//     default level) and, when Config.AuditLog names a file, are also appended to it as JSON
//     lines (created 0600), so the audit trail can be kept apart from the chatter.
//   - A record never holds a secret: keys appear as their ID and name only.

// auditMsg is the message of every audit record.
const auditMsg = "audit"

// auditEvents names the admin actions, by method and route.
var auditEvents = map[string]string{
	"POST /admin/v1/keys":              "key.create",
	"DELETE /admin/v1/keys/:id":        "key.delete",
	"POST /admin/v1/nodes/:id/drain":   "node.drain",
	"POST /admin/v1/nodes/:id/undrain": "node.undrain",
	"POST /admin/v1/nodes/:id/fault":   "node.fault",
	"POST /admin/v1/models/pull":       "model.pull",
	"POST /admin/v1/models/load":       "model.load",
	"POST /admin/v1/models/unload":     "model.unload",
	"POST /admin/v1/models/copy":       "model.copy",
	"DELETE /admin/v1/models/*name":    "model.delete",
	"PUT /admin/v1/presets/:name":      "preset.put",
	"DELETE /admin/v1/presets/:name":   "preset.delete",
}

// auditLog writes audit records to the gateway's log and, optionally, a file.
type auditLog struct {
	log   *slog.Logger
	file  *os.File
	jsonl *slog.Logger
	conns *connLimits
	mu    sync.Mutex
}

// openAuditLog opens path for appending (when set) and returns the audit log.
func openAuditLog(path string, log *slog.Logger, conns *connLimits) (*auditLog, error) {
	a := &auditLog{log: log.With("component", "audit"), conns: conns}
	if path == "" {
		return a, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	a.file = f
	a.jsonl = slog.New(slog.NewJSONHandler(f, nil))
	return a, nil
}

// Close closes the audit file, if any.
func (a *auditLog) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.file == nil {
		return nil
	}
	err := a.file.Close()
	a.file, a.jsonl = nil, nil
	return err
}

// record writes one audit record.
func (a *auditLog) record(ctx context.Context, attrs ...slog.Attr) {
	a.log.LogAttrs(ctx, slog.LevelInfo, auditMsg, attrs...)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.jsonl != nil {
		a.jsonl.LogAttrs(ctx, slog.LevelInfo, auditMsg, attrs...)
	}
}

// auditDetailKey is where auditDetail leaves a handler's extra attributes.
const auditDetailKey = "herd.audit"

// auditDetail adds attributes to the request's audit record.
func auditDetail(c *gin.Context, attrs ...slog.Attr) {
	prev, _ := c.Get(auditDetailKey)
	list, _ := prev.([]slog.Attr)
	c.Set(auditDetailKey, append(list, attrs...))
}

// middleware records the admin group's requests (see the decisions above). It runs before the
// scope check, so that refusals are recorded too.
func (a *auditLog) middleware() gin.HandlerFunc {
	return func(c *gin.Context) {
		c.Next()
		status := c.Writer.Status()
		read := c.Request.Method == http.MethodGet || c.Request.Method == http.MethodHead
		denied := status == http.StatusUnauthorized || status == http.StatusForbidden
		if read && !denied {
			return
		}
		route := c.Request.Method + " " + c.FullPath()
		event, ok := auditEvents[route]
		switch {
		case denied:
			event = "admin.denied"
		case !ok:
			event = "admin.write"
		}
		outcome := "ok"
		switch {
		case denied:
			outcome = "refused"
		case status >= 400:
			outcome = "failed"
		}
		actor, keyID := "", ""
		if v, ok := c.Get(tenantKey); ok {
			if t, ok := v.(*tenant); ok {
				actor, keyID = t.name, t.id
				if t == anonymous {
					actor = "anonymous"
				}
			}
		}
		attrs := []slog.Attr{
			slog.String("event", event),
			slog.String("actor", actor),
			slog.String("actor_key_id", keyID),
			slog.String("client", a.conns.clientAddr(c.Request).String()),
			slog.String("method", c.Request.Method),
			slog.String("route", c.FullPath()),
			slog.String("path", c.Request.URL.Path),
			slog.Int("status", status),
			slog.String("outcome", outcome),
		}
		for _, p := range c.Params {
			attrs = append(attrs, slog.String("param_"+p.Key, p.Value))
		}
		if extra, ok := c.Get(auditDetailKey); ok {
			if list, ok := extra.([]slog.Attr); ok {
				attrs = append(attrs, list...)
			}
		}
		a.record(c.Request.Context(), attrs...)
	}
}

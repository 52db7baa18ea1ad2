package gateway

import (
	"bytes"
	"sync"

	"errors"
	"fmt"
	jsonv2 "github.com/go-json-experiment/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"unicode"

	"github.com/gin-gonic/gin"

	"github.com/herd-llm/herd/gateway/registry"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// maxHeartbeatBytes bounds a heartbeat body. A node with 16 GPUs and a few hundred models sends
// well under 256 KiB; anything far larger is a broken or hostile sender.
const maxHeartbeatBytes = 1 << 20

// maxNodeIDLen bounds node IDs (a DNS name's limit: IDs are usually host names).
const maxNodeIDLen = 253

// registerInternalRoutes mounts the routes agents call, under /internal/v1. The caller puts the
// cluster-token check in front of g.
func (s *Server) registerInternalRoutes(g *gin.RouterGroup) {
	g.POST("/heartbeat", s.handleHeartbeat)
}

// handleHeartbeat records an agent's heartbeat and answers with the gateway's view of the node:
// a full heartbeat (JSON), or a delta (agentapi.ContentTypeHeartbeatDelta) applied onto the last
// full one (handleHeartbeatDelta).
func (s *Server) handleHeartbeat(c *gin.Context) {
	if c.ContentType() == agentapi.ContentTypeHeartbeatDelta {
		s.handleHeartbeatDelta(c)
		return
	}
	hb, err := decodeHeartbeat(http.MaxBytesReader(c.Writer, c.Request.Body, maxHeartbeatBytes))
	if err != nil {
		abortWithError(c, err)
		return
	}
	if err := s.checkClaim(c, &hb); err != nil {
		abortWithError(c, err)
		return
	}
	reply, err := s.registry.Accept(c.Request.Context(), hb)
	var conflict *registry.ConflictError
	if errors.As(err, &conflict) {
		// Logged by the registry (once a minute per claimant); the agent logs the message.
		s.metrics.refused.WithLabelValues(hb.NodeID).Inc()
		abortWithError(c, &APIError{Status: http.StatusConflict, Type: errInvalidRequest, Code: agentapi.CodeNodeIDConflict,
			Param: "node_id", Message: conflict.Error()})
		return
	}
	if err != nil {
		abortWithError(c, err)
		return
	}
	s.timing.heartbeat()
	reply.DeltaVersion = agentapi.DeltaVersion
	writeHeartbeatReply(c, reply)
}

// handleHeartbeatDelta records a delta heartbeat: the telemetry of a node whose full heartbeat
// (its static part, agentapi.StaticHash) this gateway holds. When it holds none the answer is 412
// heartbeat_base_unknown, and the agent sends the full heartbeat at once.
func (s *Server) handleHeartbeatDelta(c *gin.Context) {
	d := heartbeatDeltas.Get().(*agentapi.HeartbeatDelta)
	defer heartbeatDeltas.Put(d)
	if err := decodeHeartbeatDelta(http.MaxBytesReader(c.Writer, c.Request.Body, maxHeartbeatBytes), d); err != nil {
		abortWithError(c, err)
		return
	}
	if err := s.checkDeltaClaim(c, d.NodeID); err != nil {
		abortWithError(c, err)
		return
	}
	reply, err := s.registry.AcceptDelta(c.Request.Context(), d)
	var conflict *registry.ConflictError
	switch {
	case errors.Is(err, registry.ErrNoBase):
		abortWithError(c, &APIError{Status: http.StatusPreconditionFailed, Type: errInvalidRequest, Code: agentapi.CodeHeartbeatBaseUnknown,
			Param: "static_hash", Message: "send the full heartbeat: " + err.Error()})
		return
	case errors.As(err, &conflict):
		s.metrics.refused.WithLabelValues(d.NodeID).Inc()
		abortWithError(c, &APIError{Status: http.StatusConflict, Type: errInvalidRequest, Code: agentapi.CodeNodeIDConflict,
			Param: "node_id", Message: conflict.Error()})
		return
	case err != nil:
		abortWithError(c, err)
		return
	}
	s.timing.heartbeat()
	s.metrics.deltas.Inc()
	reply.DeltaVersion = agentapi.DeltaVersion
	writeHeartbeatReply(c, reply)
}

// writeHeartbeatReply answers 200 with reply in JSON, written by hand: every node gets one every
// second, and encoding/json's reflection was a tenth of a delta heartbeat's cost in the gateway.
// TestHeartbeatReplyJSON holds it to what encoding/json writes.
func writeHeartbeatReply(c *gin.Context, reply agentapi.HeartbeatReply) {
	b := make([]byte, 0, 96)
	b = append(b, `{"draining":`...)
	b = strconv.AppendBool(b, reply.Draining)
	if reply.Registry != "" {
		b = append(b, `,"registry":`...)
		b = strconv.AppendQuote(b, reply.Registry)
	}
	if reply.DeltaVersion != 0 {
		b = append(b, `,"delta_version":`...)
		b = strconv.AppendInt(b, int64(reply.DeltaVersion), 10)
	}
	b = append(b, '}')
	c.Data(http.StatusOK, "application/json; charset=utf-8", b)
}

// heartbeatDeltas recycles decoded deltas (their GPU and model slices): one arrives from every
// node every second.
var heartbeatDeltas = sync.Pool{New: func() any { return new(agentapi.HeartbeatDelta) }}

// decodeHeartbeatDelta reads one delta heartbeat into d. Its errors are *APIError (400, or 413
// past the size limit).
func decodeHeartbeatDelta(r io.Reader, d *agentapi.HeartbeatDelta) error {
	buf := heartbeatBufs.Get().(*bytes.Buffer)
	defer heartbeatBufs.Put(buf)
	buf.Reset()
	if _, err := buf.ReadFrom(r); err != nil {
		return heartbeatDecodeError(err)
	}
	if err := d.UnmarshalBinary(buf.Bytes()); err != nil {
		return badRequest("invalid_heartbeat", "", "delta heartbeat: %v", err)
	}
	if err := validateNodeID(d.NodeID); err != nil {
		return err
	}
	if d.StaticHash == "" {
		return badRequest("invalid_heartbeat", "static_hash", "delta heartbeat names no static_hash")
	}
	return nil
}

// checkDeltaClaim is checkClaim for a delta: the node ID must be the client certificate's, and a
// node known by its certificate cannot be claimed with the cluster token. The address is the
// base's, which was checked when its full heartbeat was accepted.
func (s *Server) checkDeltaClaim(c *gin.Context, nodeID string) error {
	node := c.GetString(ctxCertNode)
	if node == "" {
		if _, ok := s.certNodes.Load(nodeID); ok {
			return identityMismatch("Node %q is known by its certificate; a cluster token cannot claim it.", nodeID)
		}
		return nil
	}
	if nodeID != node {
		return identityMismatch("This certificate belongs to node %q, not %q.", node, nodeID)
	}
	return nil
}

// decodeHeartbeat reads one heartbeat and checks what the registry relies on. Its errors are
// *APIError (400, or 413 past the size limit).
func decodeHeartbeat(r io.Reader) (agentapi.Heartbeat, error) {
	var hb agentapi.Heartbeat
	buf := heartbeatBufs.Get().(*bytes.Buffer)
	defer heartbeatBufs.Put(buf)
	buf.Reset()
	if _, err := buf.ReadFrom(r); err != nil {
		return hb, heartbeatDecodeError(err)
	}
	// A heartbeat arrives from every node every second: at a thousand nodes encoding/json's
	// reflection was most of the gateway's heartbeat CPU, so it is decoded with the json v2
	// implementation (several times faster). Exactly one object: trailing data but white space is
	// an error; names match exactly, as agents write them; unknown ones are ignored.
	if err := jsonv2.Unmarshal(buf.Bytes(), &hb); err != nil {
		return hb, heartbeatDecodeError(err)
	}
	if err := validateHeartbeat(&hb); err != nil {
		return hb, err
	}
	return hb, nil
}

// heartbeatBufs recycles the buffers heartbeats are read into.
var heartbeatBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func heartbeatDecodeError(err error) *APIError {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return &APIError{Status: http.StatusRequestEntityTooLarge, Type: errInvalidRequest, Code: "request_too_large",
			Message: fmt.Sprintf("heartbeat larger than %d bytes", tooBig.Limit)}
	}
	return badRequest("invalid_json", "", "heartbeat is not valid JSON: %v", err)
}

func validateNodeID(id string) error {
	switch {
	case id == "":
		return badRequest("missing_node_id", "node_id", "heartbeat has no node_id")
	case len(id) > maxNodeIDLen:
		return badRequest("invalid_node_id", "node_id", "node_id is longer than %d bytes", maxNodeIDLen)
	}
	for _, r := range id {
		// IDs end up in URLs (/admin/v1/nodes/:id) and Prometheus labels: printable, no spaces or slashes.
		if !unicode.IsPrint(r) || unicode.IsSpace(r) || r == '/' || r == unicode.ReplacementChar {
			return badRequest("invalid_node_id", "node_id", "node_id %q contains a space, slash or unprintable character", id)
		}
	}
	return nil
}

func validateHeartbeat(hb *agentapi.Heartbeat) error {
	if err := validateNodeID(hb.NodeID); err != nil {
		return err
	}
	if hb.Address == "" {
		return badRequest("missing_address", "address", "heartbeat has no address")
	}
	u, err := url.Parse(hb.Address)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return badRequest("invalid_address", "address", "address %q is not an http(s) URL of the agent", hb.Address)
	}
	if hb.InFlight < 0 || hb.Queued < 0 || hb.Slots < 0 || hb.IntervalMS < 0 {
		return badRequest("invalid_heartbeat", "", "in_flight, queued, slots and interval_ms must not be negative")
	}
	seen := make(map[int]bool, len(hb.GPUs))
	for _, g := range hb.GPUs {
		// GPU indexes label the per-GPU metrics; a duplicate would break every scrape.
		if g.Index < 0 || seen[g.Index] {
			return badRequest("invalid_heartbeat", "gpus", "GPU index %d is negative or repeated", g.Index)
		}
		seen[g.Index] = true
	}
	for _, m := range hb.Models {
		if m.Name == "" {
			return badRequest("invalid_heartbeat", "models", "a model has no name")
		}
		if m.InFlight < 0 {
			return badRequest("invalid_heartbeat", "models", "model %q has negative in_flight", m.Name)
		}
	}
	return nil
}

package gateway

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/herd-llm/herd/gateway/api"
	"github.com/herd-llm/herd/gateway/clusterpki"
	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/pki"
)

// The closed cluster (docs/DESIGN.md): the client front serves HTTPS (certificate files, or one
// from the cluster CA); agents join with a join token and are known by their client
// certificates; the gateway dials agents over HTTP/2 with mutual TLS. The cluster token remains
// as the weaker lab mode.

// maxJoinBody bounds a join or renewal request (a CSR is under 1 KiB).
const maxJoinBody = 64 << 10

// ctxCertNode is the gin context key of the node a verified client certificate names.
const ctxCertNode = "herd.cert_node"

// TLSEnabled reports whether the gateway serves HTTPS: asked for (TLS, TLSCert), or listening
// beyond loopback without Insecure.
func (c Config) TLSEnabled() bool {
	return c.TLS || c.TLSCert != "" || (!isLoopbackListen(c.Listen) && !c.Insecure)
}

func (c Config) validateTLS() error {
	var errs []error
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("tls_cert and tls_key go together"))
	}
	if c.Insecure && (c.TLS || c.TLSCert != "") {
		errs = append(errs, errors.New("insecure and tls contradict each other"))
	}
	if c.ClusterToken == "" && !c.TLSEnabled() {
		errs = append(errs, errors.New("cluster token is empty: set one (lab mode), or serve TLS (--tls) and let agents join with a join token"))
	}
	if c.NodeCertTTL < 0 {
		errs = append(errs, errors.New("node cert ttl must not be negative"))
	}
	if c.TLSEnabled() && c.RedisURL != "" && len(c.CASecret) < pki.MinSecretLen {
		errs = append(errs, fmt.Errorf("with redis_url and TLS, ca_secret (--ca-secret, HERD_CA_SECRET) must be set, at least %d characters and the same on every gateway: it seals the cluster CA's key in Redis", pki.MinSecretLen))
	}
	return errors.Join(errs...)
}

// initTLS opens the cluster CA and builds the client front's TLS configuration, when TLS is on.
func (s *Server) initTLS(ctx context.Context, now func() time.Time) error {
	if !s.cfg.TLSEnabled() {
		return nil
	}
	a, err := clusterpki.Open(ctx, clusterpki.Config{
		DataDir: s.cfg.DataDir, RedisURL: s.cfg.RedisURL, Secret: s.cfg.CASecret, GatewayID: s.cfg.GatewayID,
		Hosts: gatewayHosts(s.cfg), NodeCertTTL: s.cfg.NodeCertTTL, Now: now, Log: s.log.With("component", "pki"),
		LiveNode: func(id string) bool {
			// A revoked node may join again at once with a new token; it is still fresh here
			// until its refused heartbeats make it stale.
			v, ok := s.registry.Node(id)
			return ok && !v.Stale && (s.pki == nil || !s.pki.Revoked(id))
		},
	})
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	conf := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Clients (SDKs, browsers) send no certificate; agents send theirs, checked per request.
		ClientAuth:     tls.VerifyClientCertIfGiven,
		ClientCAs:      a.Pool(),
		GetCertificate: a.GetCertificate,
	}
	if s.cfg.TLSCert != "" {
		fc, err := pki.NewFileCert(s.cfg.TLSCert, s.cfg.TLSKey, now)
		if err != nil {
			_ = a.Close()
			return fmt.Errorf("gateway: %w", err)
		}
		conf.GetCertificate = fc.GetCertificate
	}
	s.pki, s.frontTLS = a, conf
	return nil
}

// agentClientTLS is the TLS configuration for dialing agents (nil: TLS off).
func (s *Server) agentClientTLS() *tls.Config {
	if s.pki == nil {
		return nil
	}
	return s.pki.ClientTLS()
}

// gatewayHosts are the names the gateway's certificate from the cluster CA carries: the listen
// host, or every address of this machine when it listens on all; its host name; localhost; and
// TLSHosts.
func gatewayHosts(c Config) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	host, _, err := net.SplitHostPort(c.Listen)
	if err == nil && host != "" && !net.ParseIP(host).IsUnspecified() {
		hosts = append(hosts, host)
	} else if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLinkLocalUnicast() {
				hosts = append(hosts, ipn.IP.String())
			}
		}
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	return append(hosts, c.TLSHosts...)
}

// nodeAuth admits agents to /internal/v1: by a verified client certificate of a node that is not
// revoked (checked on every request, so a revocation reaches connections already open), else,
// in lab mode, by the cluster token.
func (s *Server) nodeAuth() gin.HandlerFunc {
	return func(c *gin.Context) {
		if s.pki != nil && c.Request.TLS != nil && len(c.Request.TLS.PeerCertificates) > 0 {
			node, err := s.pki.PeerNode(c.Request.TLS)
			switch {
			case errors.Is(err, clusterpki.ErrRevoked):
				if s.firstInMinute(node, time.Now()) {
					s.log.Warn("refused a revoked node (logged once a minute per node)", "node", node, "remote", c.Request.RemoteAddr, "path", c.Request.URL.Path)
				}
				abortWithError(c, &APIError{Status: http.StatusForbidden, Type: errPermission, Code: agentapi.CodeNodeRevoked,
					Message: "This node's certificate was revoked; join again with a new join token."})
			case err != nil:
				abortWithError(c, &APIError{Status: http.StatusUnauthorized, Type: errAuthentication, Code: agentapi.CodeClientCertRequired,
					Message: "A node's client certificate of this cluster is required."})
			default:
				c.Set(ctxCertNode, node)
			}
			return
		}
		if s.core.clusterKeys.empty() {
			abortWithError(c, &APIError{Status: http.StatusUnauthorized, Type: errAuthentication, Code: agentapi.CodeClientCertRequired,
				Message: "This gateway admits agents by client certificate only: join with herd agent --join URL --token TOKEN."})
			return
		}
		s.clusterAuth()(c)
	}
}

// firstInMinute reports whether key was not seen in the last minute, and notes it: refusals
// repeat every heartbeat, their log lines need not.
func (s *Server) firstInMinute(key string, now time.Time) bool {
	if v, ok := s.refusalLogged.Load(key); ok && now.Sub(v.(time.Time)) < time.Minute {
		return false
	}
	s.refusalLogged.Store(key, now)
	return true
}

// checkClaim refuses a heartbeat whose node ID (or address) is not its certificate's, and a
// token-authenticated heartbeat for a node ID that has a certificate. Refusals are logged.
func (s *Server) checkClaim(c *gin.Context, hb *agentapi.Heartbeat) error {
	s.noteH2C(hb)
	node := c.GetString(ctxCertNode)
	if node == "" {
		if _, ok := s.certNodes.Load(hb.NodeID); ok {
			s.log.Warn("refused a heartbeat: the cluster token claims a node that holds a certificate",
				"claimed", hb.NodeID, "remote", c.Request.RemoteAddr)
			return identityMismatch("Node %q is known by its certificate; a cluster token cannot claim it.", hb.NodeID)
		}
		return nil
	}
	if hb.NodeID != node {
		if s.firstInMinute("claim:"+node+">"+hb.NodeID, time.Now()) {
			s.log.Warn("refused a heartbeat: its certificate names another node",
				"claimed", hb.NodeID, "certificate", node, "remote", c.Request.RemoteAddr)
		}
		return identityMismatch("This certificate belongs to node %q, not %q.", node, hb.NodeID)
	}
	host, err := clusterpki.AdvertisedHost(hb.Address)
	if err != nil || !clusterpki.CertNamesHost(c.Request.TLS.VerifiedChains[0][0], host) {
		s.log.Warn("refused a heartbeat: its address is not one its certificate names",
			"node", node, "address", hb.Address, "remote", c.Request.RemoteAddr)
		return identityMismatch("Address %q is not an https URL naming a host of this node's certificate.", hb.Address)
	}
	s.certNodes.Store(node, struct{}{})
	return nil
}

func identityMismatch(format string, args ...any) *APIError {
	return &APIError{Status: http.StatusForbidden, Type: errPermission, Code: agentapi.CodeIdentityMismatch, Message: fmt.Sprintf(format, args...)}
}

// registerPKIRoutes mounts joining (/join/v1, open: the token is the credential), renewal (behind
// nodeAuth, under internal) and the admin routes for join tokens and revocation.
func (s *Server) registerPKIRoutes(e *gin.Engine, internal, admin *gin.RouterGroup) {
	e.GET(agentapi.PathJoinCA, s.accessLog(), s.handleJoinCA)
	e.POST(agentapi.PathJoin, s.accessLog(), s.handleJoin)
	internal.POST("/renew", s.handleRenew)
	admin.POST("/join-tokens", s.handleNewJoinToken)
	admin.POST("/nodes/:id/revoke", s.handleRevoke)
}

func (s *Server) tlsOff(c *gin.Context) bool {
	if s.pki == nil {
		abortWithError(c, notFound("tls_off", "", "This gateway serves plain HTTP and has no cluster CA: start it with --tls (or on a LAN address) to let agents join."))
		return true
	}
	return false
}

func (s *Server) handleJoinCA(c *gin.Context) {
	if s.tlsOff(c) {
		return
	}
	c.JSON(http.StatusOK, agentapi.CACertReply{CACert: string(s.pki.CACertPEM())})
}

// decodeJoinBody reads one JSON object of at most maxJoinBody bytes.
func decodeJoinBody(c *gin.Context, v any) error {
	data, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, maxJoinBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return &APIError{Status: http.StatusRequestEntityTooLarge, Type: errInvalidRequest, Code: "request_too_large", Message: fmt.Sprintf("body larger than %d bytes", maxJoinBody)}
		}
		return badRequest("invalid_body", "", "could not read the body: %v", err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return badRequest("invalid_json", "", "body is not a JSON object of the expected shape: %v", err)
	}
	return nil
}

// pkiError maps clusterpki's errors to the API's.
func pkiError(err error) error {
	var br *clusterpki.BadRequestError
	switch {
	case errors.As(err, &br):
		return badRequest("invalid_request", "", "%s", br.Msg)
	case errors.Is(err, clusterpki.ErrBadToken):
		return &APIError{Status: http.StatusUnauthorized, Type: errAuthentication, Code: agentapi.CodeInvalidJoinToken,
			Message: "Invalid or expired join token: make one with herd nodes join-token."}
	case errors.Is(err, clusterpki.ErrNodeLive):
		return &APIError{Status: http.StatusConflict, Type: errInvalidRequest, Code: agentapi.CodeNodeIDConflict, Param: "node_id",
			Message: "A live node holds this node id; stop it, or revoke it, or join with another --node-id."}
	}
	return unavailable("the cluster CA's store cannot be reached: %v", err)
}

func (s *Server) handleJoin(c *gin.Context) {
	if s.tlsOff(c) {
		return
	}
	if c.Request.TLS == nil {
		abortWithError(c, badRequest("tls_required", "", "join over https"))
		return
	}
	var req agentapi.JoinRequest
	if err := decodeJoinBody(c, &req); err != nil {
		abortWithError(c, err)
		return
	}
	reply, err := s.pki.Join(c.Request.Context(), req)
	if err != nil {
		s.log.Warn("refused a join", "node", req.NodeID, "remote", c.Request.RemoteAddr, "err", err)
		abortWithError(c, pkiError(err))
		return
	}
	s.log.Info("node joined: certificates issued", "node", req.NodeID, "advertise", req.Advertise, "remote", c.Request.RemoteAddr)
	c.JSON(http.StatusOK, reply)
}

func (s *Server) handleRenew(c *gin.Context) {
	node := c.GetString(ctxCertNode)
	if node == "" {
		abortWithError(c, &APIError{Status: http.StatusUnauthorized, Type: errAuthentication, Code: agentapi.CodeClientCertRequired,
			Message: "Renewal needs the node's current client certificate."})
		return
	}
	var req agentapi.RenewRequest
	if err := decodeJoinBody(c, &req); err != nil {
		abortWithError(c, err)
		return
	}
	reply, err := s.pki.Renew(node, req)
	if err != nil {
		abortWithError(c, pkiError(err))
		return
	}
	s.log.Info("node certificates renewed", "node", node)
	c.JSON(http.StatusOK, reply)
}

func (s *Server) handleNewJoinToken(c *gin.Context) {
	if s.tlsOff(c) {
		return
	}
	var req api.JoinTokenRequest
	if c.Request.ContentLength != 0 {
		if err := decodeJoinBody(c, &req); err != nil {
			abortWithError(c, err)
			return
		}
	}
	var ttl time.Duration
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			abortWithError(c, badRequest("invalid_ttl", "ttl", "ttl %q is not a positive duration such as 30m or 2h", req.TTL))
			return
		}
		ttl = d
	}
	tok, exp, err := s.pki.NewJoinToken(c.Request.Context(), ttl)
	if err != nil {
		abortWithError(c, pkiError(err))
		return
	}
	s.log.Info("join token made", "expires", exp)
	c.JSON(http.StatusOK, api.JoinToken{Token: tok, ExpiresAt: exp, CAFingerprint: s.pki.Fingerprint()})
}

func (s *Server) handleRevoke(c *gin.Context) {
	if s.tlsOff(c) {
		return
	}
	id := c.Param("id")
	if err := s.pki.Revoke(c.Request.Context(), id); err != nil {
		abortWithError(c, pkiError(err))
		return
	}
	// Out of the schedule at once (drains are shared through Redis too); its heartbeats are
	// refused from now on, so it goes stale and is forgotten.
	if err := s.registry.SetDraining(id, true); err != nil {
		s.log.Debug("revoked node is not registered here", "node", id, "err", err)
	}
	s.log.Warn("admin revoked a node", "node", id, "remote", c.Request.RemoteAddr)
	c.JSON(http.StatusOK, api.Revocation{Node: id, Revoked: true})
}

// noteH2C records an agent on loopback whose plain-HTTP listener speaks HTTP/2 without TLS, for
// the request path's transport (agentRoundTripper).
func (s *Server) noteH2C(hb *agentapi.Heartbeat) {
	if !hb.H2C || s.h2cHosts == nil {
		return
	}
	u, err := url.Parse(hb.Address)
	if err != nil || u.Scheme != "http" {
		return
	}
	if ip := net.ParseIP(u.Hostname()); ip != nil && ip.IsLoopback() {
		s.h2cHosts.Store(u.Host, struct{}{})
	}
}

// agentRoundTripper is the request path's transport to agents: HTTP/2 with mutual TLS to
// joined agents (base, see withAgentTLS), HTTP/2 without TLS (h2c) to agents on loopback that
// said in their heartbeat that they speak it, and HTTP/1.1 to any other plain-HTTP agent.
type agentRoundTripper struct {
	base  *http.Transport
	h2c   *http.Transport
	hosts *sync.Map
}

// RoundTrip implements http.RoundTripper.
func (rt *agentRoundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme == "http" {
		if _, ok := rt.hosts.Load(r.URL.Host); ok {
			return rt.h2c.RoundTrip(r)
		}
	}
	return rt.base.RoundTrip(r)
}

// newAgentRoundTripper builds the transport to agents; hosts fills as loopback agents announce h2c.
func newAgentRoundTripper(tlsConf *tls.Config, hosts *sync.Map) *agentRoundTripper {
	h2c := newAgentTransport()
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	h2c.Protocols = &p
	return &agentRoundTripper{base: withAgentTLS(newAgentTransport(), tlsConf), h2c: h2c, hosts: hosts}
}

// withAgentTLS gives the request path's transport to agents the cluster's client TLS and
// HTTP/2, so thousands of concurrent streams to one agent share a few connections (nil conf:
// t as it is).
func withAgentTLS(t *http.Transport, conf *tls.Config) *http.Transport {
	if conf == nil {
		return t
	}
	t.TLSClientConfig = conf
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	t.Protocols = &p
	t.HTTP2 = &http.HTTP2Config{SendPingTimeout: 15 * time.Second, PingTimeout: 5 * time.Second}
	return t
}

// CAFingerprint is the cluster CA's fingerprint ("" with TLS off).
func (s *Server) CAFingerprint() string {
	if s.pki == nil {
		return ""
	}
	return s.pki.Fingerprint()
}

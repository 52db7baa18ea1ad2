package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herd-llm/herd/gateway/store/storetest"
	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/pki"
)

// The closed cluster, end to end with real processes and real TLS: gateways serving HTTPS from
// their cluster CA, agents joining with a join token, mutual TLS between them, revocation shared
// through a real redis-server.

const tlsAdminKey = "tls-admin-key"

// tlsGateway is a gateway serving HTTPS from its cluster CA.
type tlsGateway struct {
	url    string
	data   string
	caFile string
	proc   *proc
}

// startTLSGateway starts `herd gateway --tls` on a free loopback port with an admin key and no
// cluster token (a closed cluster), unless extra says otherwise.
func startTLSGateway(t *testing.T, name, data string, extra ...string) *tlsGateway {
	t.Helper()
	addr := freeAddr(t)
	g := &tlsGateway{url: "https://" + addr, data: data, caFile: filepath.Join(data, "pki", pki.CACertFile)}
	args := append([]string{"gateway", "--tls", "--listen", addr, "--data", data, "--admin-keys", tlsAdminKey, "--heartbeat-interval", "250ms"}, extra...)
	g.proc = startHerd(t, name, args...)
	waitFor(t, 30*time.Second, name+" https /healthz", func() bool {
		if _, err := os.Stat(g.caFile); err != nil {
			return false
		}
		resp, err := g.client(t).Get(g.url + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return g
}

// client trusts only the cluster CA, as a client given DATA/pki/ca.crt would.
func (g *tlsGateway) client(t *testing.T) *http.Client {
	t.Helper()
	return tlsClient(t, g.caFile, nil)
}

func tlsClient(t *testing.T, caFile string, cert *tls.Certificate) *http.Client {
	t.Helper()
	data, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		t.Fatalf("%s holds no certificate", caFile)
	}
	conf := &tls.Config{RootCAs: pool}
	if cert != nil {
		conf.Certificates = []tls.Certificate{*cert}
	}
	return agentapi.HTTPClient(conf)
}

func (g *tlsGateway) joinToken(t *testing.T) string {
	t.Helper()
	out, err := runCLI(t, "nodes", "join-token", "--url", g.url, "--api-key", tlsAdminKey, "--ca-file", g.caFile, "--ttl", "10m")
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(strings.SplitN(out, "\n", 2)[0])
	if _, err := pki.ParseJoinToken(tok); err != nil {
		t.Fatalf("join-token printed %q: %v", out, err)
	}
	return tok
}

// nodeUp reports whether the gateway lists node as fresh and not draining.
func (g *tlsGateway) nodeUp(t *testing.T, node string) bool {
	req, _ := http.NewRequest(http.MethodGet, g.url+"/admin/v1/nodes", nil)
	req.Header.Set("Authorization", "Bearer "+tlsAdminKey)
	resp, err := g.client(t).Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var out struct {
		Nodes []struct {
			ID       string `json:"id"`
			Stale    bool   `json:"stale"`
			Draining bool   `json:"draining"`
		} `json:"nodes"`
	}
	if json.NewDecoder(resp.Body).Decode(&out) != nil {
		return false
	}
	for _, n := range out.Nodes {
		if n.ID == node && !n.Stale && !n.Draining {
			return true
		}
	}
	return false
}

// joinSimAgent starts a simulated agent that joins through g with a fresh token; gateways are the
// --gateway list (default: g), advertise the URL it tells them (default: its listen address).
func joinSimAgent(t *testing.T, g *tlsGateway, id, dir string, gateways []string, listen, advertise string, extra ...string) *proc {
	t.Helper()
	if listen == "" {
		listen = freeAddr(t)
	}
	args := []string{"agent", "--join", g.url, "--token", g.joinToken(t), "--data", dir, "--listen", listen,
		"--node-id", id, "--backend", "sim", "--sim-gpus", "t4", "--sim-models", "llama3.2:1b", "--sim-preload", "llama3.2:1b",
		"--sim-speed", "50", "--agent-heartbeat-interval", "250ms"}
	if len(gateways) > 0 {
		args = append(args, "--gateway", strings.Join(gateways, ","))
	}
	if advertise != "" {
		args = append(args, "--advertise", advertise)
	}
	return startHerd(t, "agent-"+id, append(args, extra...)...)
}

func chatOver(t *testing.T, hc *http.Client, url, prompt string) (int, http.Header, string) {
	t.Helper()
	body := fmt.Sprintf(`{"model":"llama3.2:1b","messages":[{"role":"user","content":%q}],"max_tokens":8}`, prompt)
	req, _ := http.NewRequest(http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tlsAdminKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("chat: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// heartbeatWith posts a minimal heartbeat for node at address through hc and returns the status
// and error code.
func heartbeatWith(t *testing.T, hc *http.Client, gw, node, address string, trace *httptrace.ClientTrace) (int, string) {
	t.Helper()
	hb := agentapi.Heartbeat{NodeID: node, InstanceID: "probe-" + node, Address: address, Slots: 1, IntervalMS: 250, SentAt: time.Now(), GPUs: []agentapi.GPU{}, Models: []agentapi.Model{}}
	b, _ := json.Marshal(hb)
	ctx := context.Background()
	if trace != nil {
		ctx = httptrace.WithClientTrace(ctx, trace)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, gw+agentapi.PathHeartbeat, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	defer resp.Body.Close()
	var eb agentapi.ErrorBody
	raw, _ := io.ReadAll(resp.Body)
	code := ""
	if json.Unmarshal(raw, &eb) == nil && eb.Error.Code != nil {
		code = *eb.Error.Code
	}
	return resp.StatusCode, code
}

// deltaWith posts a delta heartbeat (agentapi.HeartbeatDelta) for node through hc and returns the
// status and error code.
func deltaWith(t *testing.T, hc *http.Client, gw, node string) (int, string) {
	t.Helper()
	d := agentapi.HeartbeatDelta{NodeID: node, InstanceID: "probe-" + node, StaticHash: "1", SentAt: time.Now()}
	b, err := d.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Post(gw+agentapi.PathHeartbeat, agentapi.ContentTypeHeartbeatDelta, bytes.NewReader(b))
	if err != nil {
		t.Fatalf("delta heartbeat: %v", err)
	}
	defer resp.Body.Close()
	var eb agentapi.ErrorBody
	raw, _ := io.ReadAll(resp.Body)
	code := ""
	if json.Unmarshal(raw, &eb) == nil && eb.Error.Code != nil {
		code = *eb.Error.Code
	}
	return resp.StatusCode, code
}

func loadNodeCert(t *testing.T, dir string) *tls.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(filepath.Join(dir, "client.crt"), filepath.Join(dir, "node.key"))
	if err != nil {
		t.Fatal(err)
	}
	return &c
}

// TestClosedClusterJoin: an agent joins with a token over TLS and serves through the gateway;
// the key files are 0600; callers without a valid client certificate are refused by the agent
// and by the gateway; a certificate's claim to another node ID is refused and logged; a
// token-mode agent cannot get into a cluster without a token; a restarted agent uses its stored
// certificates. About 6 s.
func TestClosedClusterJoin(t *testing.T) {
	herdBinary(t)
	g := startTLSGateway(t, "gateway", t.TempDir())
	agentDir := filepath.Join(t.TempDir(), "agent")
	listen := freeAddr(t)
	ag := joinSimAgent(t, g, "gpu-a", agentDir, nil, listen, "")
	waitFor(t, 30*time.Second, "gpu-a registered over mTLS", func() bool { return g.nodeUp(t, "gpu-a") })

	status, h, body := chatOver(t, g.client(t), g.url, "hello over TLS")
	if status != 200 || h.Get(agentapi.HeaderNode) != "gpu-a" {
		t.Fatalf("chat over https: %d %v %s", status, h, body)
	}
	for _, f := range []string{filepath.Join(g.data, "pki", pki.CAKeyFile), filepath.Join(agentDir, "node.key")} {
		if st, err := os.Stat(f); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v, %v (want 0600)", f, st.Mode().Perm(), err)
		}
	}

	// The agent refuses a caller without a client certificate, and one with the node's own
	// (a node may only read another node's model blobs).
	agentURL := "https://" + listen
	noCert := tlsClient(t, g.caFile, nil)
	if resp, err := noCert.Get(agentURL + agentapi.PathInfo); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("agent without a client certificate: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	nodeCert := loadNodeCert(t, agentDir)
	if resp, err := tlsClient(t, g.caFile, nodeCert).Get(agentURL + agentapi.PathInfo); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("agent with a node's certificate: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// A certificate of another CA does not get through the handshake.
	other, err := pki.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	oc, ok, err := other.IssueTLS(pki.Identity{Role: pki.RoleGateway, Name: "intruder"}, nil, x509.ExtKeyUsageClientAuth, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	intruder, err := tls.X509KeyPair(oc, ok)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := tlsClient(t, g.caFile, &intruder).Get(agentURL + agentapi.PathInfo); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("agent answered a certificate of another CA")
		}
	}

	// The gateway: no certificate and no cluster token → 401; the node's certificate claiming
	// another node → 403, logged.
	if st, code := heartbeatWith(t, noCert, g.url, "gpu-a", agentURL, nil); st != 401 || code != agentapi.CodeClientCertRequired {
		t.Fatalf("heartbeat without a certificate: %d %s", st, code)
	}
	if st, code := heartbeatWith(t, tlsClient(t, g.caFile, nodeCert), g.url, "gpu-b", agentURL, nil); st != 403 || code != agentapi.CodeIdentityMismatch {
		t.Fatalf("heartbeat claiming gpu-b with gpu-a's certificate: %d %s", st, code)
	}
	if st, code := heartbeatWith(t, tlsClient(t, g.caFile, nodeCert), g.url, "gpu-a", "https://10.9.9.9:1", nil); st != 403 || code != agentapi.CodeIdentityMismatch {
		t.Fatalf("heartbeat with an address the certificate does not name: %d %s", st, code)
	}
	// A delta heartbeat is held to the certificate as well.
	if st, code := deltaWith(t, noCert, g.url, "gpu-a"); st != 401 || code != agentapi.CodeClientCertRequired {
		t.Fatalf("delta heartbeat without a certificate: %d %s", st, code)
	}
	if st, code := deltaWith(t, tlsClient(t, g.caFile, nodeCert), g.url, "gpu-b"); st != 403 || code != agentapi.CodeIdentityMismatch {
		t.Fatalf("delta heartbeat claiming gpu-b with gpu-a's certificate: %d %s", st, code)
	}
	waitFor(t, 5*time.Second, "the refused claim in the gateway's log", func() bool {
		return strings.Contains(g.proc.output(), "refused a heartbeat: its certificate names another node")
	})
	// A token-mode agent gets nowhere: this gateway has no cluster token.
	tokAddr := freeAddr(t)
	tokAgent := startHerd(t, "agent-token", "agent", "--gateway", g.url, "--ca-file", g.caFile, "--cluster-token", "guess",
		"--listen", tokAddr, "--node-id", "gpu-t", "--backend", "sim", "--agent-heartbeat-interval", "250ms", "--data", t.TempDir())
	waitFor(t, 10*time.Second, "the token agent's refusal", func() bool {
		return strings.Contains(tokAgent.output(), agentapi.CodeClientCertRequired) || strings.Contains(tokAgent.output(), "client certificate")
	})
	if g.nodeUp(t, "gpu-t") {
		t.Fatal("a token-mode agent registered in a closed cluster")
	}

	// A restarted agent needs no token: its certificates are in its data dir.
	ag.stop()
	startHerd(t, "agent-gpu-a-again", "agent", "--gateway", g.url, "--data", agentDir, "--listen", listen,
		"--backend", "sim", "--sim-gpus", "t4", "--sim-models", "llama3.2:1b", "--sim-preload", "llama3.2:1b", "--agent-heartbeat-interval", "250ms")
	waitFor(t, 30*time.Second, "gpu-a back from stored certificates", func() bool {
		st, h, _ := chatOver(t, g.client(t), g.url, "again")
		return st == 200 && h.Get(agentapi.HeaderNode) == "gpu-a"
	})
}

// TestRevokeOnTwoGatewaysSharingRedis: two gateways share a CA sealed in a real redis-server; a
// node joined through one is refused by both after `herd nodes revoke`, on a connection opened
// before the revocation too. The CA key is not in Redis in the clear. About 8 s.
func TestRevokeOnTwoGatewaysSharingRedis(t *testing.T) {
	herdBinary(t)
	rurl := storetest.StartRedis(t)
	secret := "a-long-ca-secret-for-tests"
	a := startTLSGateway(t, "gateway-a", t.TempDir(), "--redis-url", rurl, "--ca-secret", secret, "--gateway-id", "gw-a")
	b := startTLSGateway(t, "gateway-b", t.TempDir(), "--redis-url", rurl, "--ca-secret", secret, "--gateway-id", "gw-b")
	caA, _ := os.ReadFile(a.caFile)
	caB, _ := os.ReadFile(b.caFile)
	if len(caA) == 0 || !bytes.Equal(caA, caB) {
		t.Fatal("the two gateways do not share one cluster CA")
	}
	opt, err := redis.ParseURL(rurl)
	if err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(opt)
	defer rc.Close()
	stored, err := rc.Get(context.Background(), "herd:pki:ca").Bytes()
	if err != nil {
		t.Fatalf("the CA is not in Redis: %v", err)
	}
	var shared struct {
		Cert      string `json:"cert"`
		SealedKey []byte `json:"sealed_key"`
	}
	if err := json.Unmarshal(stored, &shared); err != nil || len(shared.SealedKey) == 0 || !strings.Contains(shared.Cert, "CERTIFICATE") {
		t.Fatalf("stored CA %.200q: %v", stored, err)
	}
	if bytes.Contains(stored, []byte("PRIVATE KEY")) {
		t.Fatal("the CA's private key is in Redis in the clear")
	}
	if _, err := pki.Open(shared.SealedKey, "a-wrong-secret-of-length"); err == nil {
		t.Fatal("the sealed key opens with a wrong secret")
	}

	dir := t.TempDir()
	joinSimAgent(t, a, "gpu-x", dir, []string{a.url, b.url}, "", "")
	waitFor(t, 30*time.Second, "gpu-x on both gateways", func() bool { return a.nodeUp(t, "gpu-x") && b.nodeUp(t, "gpu-x") })

	// A connection to gateway B authenticated by the node's certificate, opened before the
	// revocation. (Renew with an empty body: 400 while the node is admitted, 403 once revoked.)
	hc := tlsClient(t, b.caFile, loadNodeCert(t, dir))
	var conns []httptrace.GotConnInfo
	var mu sync.Mutex
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { mu.Lock(); conns = append(conns, i); mu.Unlock() }}
	probe := func(gw string) (int, string) {
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodPost, gw+agentapi.PathRenew, strings.NewReader("{}"))
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("probe %s: %v", gw, err)
		}
		defer resp.Body.Close()
		var eb agentapi.ErrorBody
		_ = json.NewDecoder(resp.Body).Decode(&eb)
		code := ""
		if eb.Error.Code != nil {
			code = *eb.Error.Code
		}
		return resp.StatusCode, code
	}
	if st, code := probe(b.url); st != http.StatusBadRequest {
		t.Fatalf("before the revocation gateway B answered %d %s, want 400 (admitted, bad body)", st, code)
	}

	if out, err := runCLI(t, "nodes", "revoke", "gpu-x", "--url", a.url, "--api-key", tlsAdminKey, "--ca-file", a.caFile); err != nil || !strings.Contains(out, "revoked") {
		t.Fatalf("herd nodes revoke: %q %v", out, err)
	}
	revokedAt := time.Now()
	waitFor(t, 5*time.Second, "gateway B refusing the revoked node on the open connection", func() bool {
		st, code := probe(b.url)
		return st == http.StatusForbidden && code == agentapi.CodeNodeRevoked
	})
	if d := time.Since(revokedAt); d > 3*time.Second {
		t.Errorf("gateway B took %s to refuse the revoked node", d)
	}
	mu.Lock()
	reused := len(conns) >= 2 && conns[len(conns)-1].Reused
	mu.Unlock()
	if !reused {
		t.Fatalf("the refusal did not come on the connection opened before the revocation: %+v", conns)
	}
	if st, code := probe(a.url); st != http.StatusForbidden || code != agentapi.CodeNodeRevoked {
		t.Fatalf("gateway A after the revocation: %d %s", st, code)
	}
	waitFor(t, 10*time.Second, "gpu-x out of both gateways' schedules", func() bool { return !a.nodeUp(t, "gpu-x") && !b.nodeUp(t, "gpu-x") })
	if !strings.Contains(a.proc.output(), "refused a revoked node") {
		t.Error("gateway A did not log the revoked node's refused heartbeats")
	}
}

// relay is a TCP relay that keeps a copy of every byte it passes, both ways.
type relay struct {
	ln  net.Listener
	mu  sync.Mutex
	buf bytes.Buffer
	n   int64
}

func startRelay(t *testing.T, target string) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go r.pipe(c, target)
		}
	}()
	return r
}

func (r *relay) pipe(c net.Conn, target string) {
	defer c.Close()
	up, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				r.mu.Lock()
				r.buf.Write(buf[:n])
				r.n += int64(n)
				r.mu.Unlock()
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(up, c)
	go cp(c, up)
	<-done
	<-done
}

func (r *relay) seen() (int64, []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n, bytes.Clone(r.buf.Bytes())
}

// TestRelaySeesNoTokenOrPrompt puts TCP relays on both directions of the gateway↔agent path
// (the agent advertises the relay's address and heartbeats through another): traffic flows
// through them, and none of it shows the API key, the cluster token or the prompt. About 4 s.
func TestRelaySeesNoTokenOrPrompt(t *testing.T) {
	herdBinary(t)
	const clusterToken = "tok-secret-123-lab"
	g := startTLSGateway(t, "gateway", t.TempDir(), "--cluster-token", clusterToken)
	agentListen := freeAddr(t)
	toAgent := startRelay(t, agentListen)
	toGateway := startRelay(t, strings.TrimPrefix(g.url, "https://"))
	joinSimAgent(t, g, "gpu-r", t.TempDir(), []string{"https://" + toGateway.ln.Addr().String()}, agentListen,
		"https://"+toAgent.ln.Addr().String(), "--cluster-token", clusterToken)
	waitFor(t, 30*time.Second, "gpu-r registered through the relay", func() bool { return g.nodeUp(t, "gpu-r") })

	const prompt = "purple-elephant-secret-prompt-42"
	before, _ := toAgent.seen()
	status, h, body := chatOver(t, g.client(t), g.url, prompt)
	if status != 200 || h.Get(agentapi.HeaderNode) != "gpu-r" {
		t.Fatalf("chat: %d %v %s", status, h, body)
	}
	after, toAgentBytes := toAgent.seen()
	if after-before < 200 {
		t.Fatalf("the gateway→agent relay passed %d bytes for a chat: it is not on the path", after-before)
	}
	hbBytes, toGatewayBytes := toGateway.seen()
	if hbBytes < 1000 {
		t.Fatalf("the agent→gateway relay passed %d bytes: heartbeats do not go through it", hbBytes)
	}
	for _, secret := range []string{prompt, tlsAdminKey, clusterToken, "Bearer", "llama3.2:1b", "chat/completions"} {
		if bytes.Contains(toAgentBytes, []byte(secret)) || bytes.Contains(toGatewayBytes, []byte(secret)) {
			t.Errorf("a relay saw %q", secret)
		}
	}
}

// TestCertificateRenewal: with a 6 s certificate life, the agent renews at two thirds and keeps
// serving past the first certificate's expiry. About 9 s.
func TestCertificateRenewal(t *testing.T) {
	herdBinary(t)
	g := startTLSGateway(t, "gateway", t.TempDir(), "--node-cert-ttl", "6s")
	dir := t.TempDir()
	joinSimAgent(t, g, "gpu-n", dir, nil, "", "")
	waitFor(t, 30*time.Second, "gpu-n registered", func() bool { return g.nodeUp(t, "gpu-n") })
	first := loadNodeCert(t, dir).Leaf
	if first == nil {
		c := loadNodeCert(t, dir)
		first, _ = x509.ParseCertificate(c.Certificate[0])
	}
	time.Sleep(time.Until(first.NotAfter) + 2*time.Second)
	c := loadNodeCert(t, dir)
	now, _ := x509.ParseCertificate(c.Certificate[0])
	if now.SerialNumber.Cmp(first.SerialNumber) == 0 || !now.NotAfter.After(first.NotAfter) {
		t.Fatalf("certificate not renewed: serial %v until %v", now.SerialNumber, now.NotAfter)
	}
	if !g.nodeUp(t, "gpu-n") {
		t.Fatal("node down after its first certificate expired")
	}
	if st, _, body := chatOver(t, g.client(t), g.url, "still there"); st != 200 {
		t.Fatalf("chat after renewal: %d %s", st, body)
	}
}

// TestNodeClientsOverHTTPS runs the openai npm SDK and ollama-js suites against a gateway serving
// HTTPS from its cluster CA, trusted through NODE_EXTRA_CA_CERTS (and nothing else: Node's own
// roots do not know the CA), in front of an agent that joined with a token. About 15 s.
func TestNodeClientsOverHTTPS(t *testing.T) {
	herdBinary(t)
	node, npm := nodeTools(t)
	modules := installNodeClients(t, npm)
	g := startTLSGateway(t, "gateway", t.TempDir(), "--api-keys", jsClientKey)
	joinSimAgent(t, g, "gpu-js", t.TempDir(), nil, "", "", "--sim-models", "llama3.2:1b,nomic-embed-text", "--sim-preload", "llama3.2:1b,nomic-embed-text")
	waitFor(t, 30*time.Second, "gpu-js registered", func() bool { return g.nodeUp(t, "gpu-js") })
	runNodeClientFiles(t, node, modules, g.url, "llama3.2:1b", "nomic-embed-text", false,
		[]string{"openai.test.js", "ollama.test.js"}, []string{"NODE_EXTRA_CA_CERTS=" + g.caFile})
}

package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// The arm64 binary runs for real under Debian's qemu-user-static, started directly
// (binfmt_misc is not mounted here) with the cross C library as its root (-L), since the cgo
// binary is linked against glibc.

const armSysroot = "/usr/aarch64-linux-gnu"

// armCommand returns a command running the arm64 herd under qemu.
func armCommand(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	qemu := need(t, "qemu-aarch64-static")
	return exec.Command(qemu, append([]string{"-L", armSysroot, built(t, "bin-arm64")}, args...)...)
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startProc starts cmd and ends it (by its PID) with the test, showing its log on failure.
func startProc(t *testing.T, name string, cmd *exec.Cmd) *lockedBuffer {
	t.Helper()
	log := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("--- %s log ---\n%s", name, log.String())
		}
	})
	return log
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitUntil(t *testing.T, limit time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestArm64Version(t *testing.T) {
	out, err := armCommand(t, "version").CombinedOutput()
	if err != nil || string(out) != "herd "+newVersion+"\n" {
		t.Fatalf("arm64 herd version under qemu: %q, %v", out, err)
	}
}

// TestArm64AgentJoinsAmd64Gateway: an amd64 gateway serving HTTPS from its cluster CA; an arm64
// agent (simulated GPU) under qemu joins it with a join token (CSR, certificate, mutual TLS) and
// serves a chat request sent to the gateway.
func TestArm64AgentJoinsAmd64Gateway(t *testing.T) {
	gwBin := built(t, "bin-"+runtime.GOARCH)
	data := t.TempDir()
	addr := freeAddr(t)
	gwURL := "https://" + addr
	const admin = "arm-test-admin-key"
	startProc(t, "gateway", exec.Command(gwBin, "gateway", "--tls", "--listen", addr, "--data", data,
		"--admin-keys", admin, "--heartbeat-interval", "250ms"))
	caFile := filepath.Join(data, "pki", "ca.crt")
	var hc *http.Client
	waitUntil(t, 30*time.Second, "the gateway's CA and /healthz", func() bool {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return false
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return false
		}
		hc = &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		resp, err := hc.Get(gwURL + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	out, err := exec.Command(gwBin, "nodes", "join-token", "--url", gwURL, "--api-key", admin, "--ca-file", caFile, "--ttl", "10m").Output()
	if err != nil {
		t.Fatalf("join-token: %v", err)
	}
	token := strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])

	agentAddr := freeAddr(t)
	startProc(t, "arm64 agent", armCommand(t, "agent", "--join", gwURL, "--token", token, "--data", t.TempDir(),
		"--listen", agentAddr, "--node-id", "arm64-node", "--backend", "sim", "--sim-gpus", "t4",
		"--sim-models", "llama3.2:1b", "--sim-preload", "llama3.2:1b", "--sim-speed", "50", "--agent-heartbeat-interval", "250ms"))
	get := func(path string, out any) bool {
		req, _ := http.NewRequest(http.MethodGet, gwURL+path, nil)
		req.Header.Set("Authorization", "Bearer "+admin)
		resp, err := hc.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(out) == nil
	}
	waitUntil(t, 2*time.Minute, "the arm64 node up on the gateway", func() bool {
		var nodes struct {
			Nodes []struct {
				ID      string `json:"id"`
				Stale   bool   `json:"stale"`
				Healthy bool   `json:"healthy"`
			} `json:"nodes"`
		}
		if !get("/admin/v1/nodes", &nodes) {
			return false
		}
		for _, n := range nodes.Nodes {
			if n.ID == "arm64-node" && !n.Stale && n.Healthy {
				return true
			}
		}
		return false
	})
	req, _ := http.NewRequest(http.MethodPost, gwURL+"/v1/chat/completions",
		strings.NewReader(`{"model":"llama3.2:1b","max_tokens":8,"messages":[{"role":"user","content":"hello from amd64"}]}`))
	req.Header.Set("Authorization", "Bearer "+admin)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var chat struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Herd-Node") != "arm64-node" || json.Unmarshal(body, &chat) != nil ||
		len(chat.Choices) != 1 || chat.Choices[0].Message.Content == "" {
		t.Fatalf("chat through the gateway: %d node %q: %s", resp.StatusCode, resp.Header.Get("X-Herd-Node"), body)
	}
}

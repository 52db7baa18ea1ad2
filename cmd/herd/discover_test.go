package main

import (
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// inNetns runs the calling test again inside a new user and network namespace whose loopback
// carries multicast (this machine's lo has no MULTICAST flag, and a test must not announce on a
// real LAN). It returns true in the child, where the test goes on with the herd binary the parent
// built, and false in the parent once the child passed (its failure fails the parent).
func inNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv("HERD_IN_NETNS") == "1" {
		if p := os.Getenv("HERD_NETNS_HERD_BIN"); p != "" {
			buildOnce.Do(func() { herdBin = p })
		}
		return true
	}
	bin := herdBinary(t) // built here: the namespace has no network for the module proxy
	for _, tool := range []string{"unshare", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s: cannot make a network namespace", tool)
		}
	}
	script := `set -e
ip link set lo up
ip link set lo multicast on
ip route add 224.0.0.0/4 dev lo
exec "$0" -test.run "^$1\$" -test.v -test.count=1 -test.timeout 5m`
	cmd := exec.Command("unshare", "-rn", "sh", "-c", script, os.Args[0], t.Name())
	cmd.Env = append(os.Environ(), "HERD_IN_NETNS=1", "HERD_NETNS_HERD_BIN="+bin)
	out, err := cmd.CombinedOutput()
	t.Logf("in the network namespace:\n%s", out)
	if err != nil {
		t.Fatalf("the test failed in its network namespace: %v", err)
	}
	return false
}

// TestJoinAutoByMDNS: a closed-cluster gateway started with --mdns announces itself; an agent
// given only --join auto and a join token finds it by multicast DNS, joins over TLS, and serves a
// client's request through it. Gateway, agent and client all run in one network namespace.
func TestJoinAutoByMDNS(t *testing.T) {
	if !inNetns(t) {
		return
	}
	g := startTLSGateway(t, "gateway", t.TempDir(), "--mdns")
	tok := g.joinToken(t)
	listen := freeAddr(t)
	agent := startHerd(t, "agent-found", "agent", "--join", "auto", "--token", tok, "--data", t.TempDir(), "--listen", listen,
		"--node-id", "found-by-mdns", "--backend", "sim", "--sim-gpus", "t4", "--sim-models", "llama3.2:1b", "--sim-preload", "llama3.2:1b",
		"--sim-speed", "50", "--agent-heartbeat-interval", "250ms")
	waitFor(t, time.Minute, "the agent found by mDNS to be up", func() bool { return g.nodeUp(t, "found-by-mdns") })
	if log := agent.output(); !strings.Contains(log, "found the gateway by mDNS") || !strings.Contains(log, g.url) {
		t.Errorf("the agent's log does not say it found %s by mDNS:\n%s", g.url, log)
	}
	status, hdr, body := chatOver(t, g.client(t), g.url, "hello over mDNS")
	if status != http.StatusOK || hdr.Get("X-Herd-Node") != "found-by-mdns" {
		t.Fatalf("chat: %d %q %s", status, hdr.Get("X-Herd-Node"), body)
	}
}

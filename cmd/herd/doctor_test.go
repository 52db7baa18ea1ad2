package main

import (
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/herd-llm/herd/nodeagent/doctor"
)

// TestDoctorBinary runs `herd doctor` as an operator would, against a real gateway: a simulated
// node passes; a node whose Ollama is down fails with exit status 1 and says what to do. (The
// NVML findings on mocked GPUs are in nodeagent/doctor's tests; this machine has no driver.)
func TestDoctorBinary(t *testing.T) {
	c := startGateway(t)
	out, err := runCLI(t, "doctor", "--backend", "sim", "--gateway", c.url, "--cluster-token", c.token, "--data", t.TempDir(), "--json")
	if err != nil {
		t.Fatalf("doctor on a healthy simulated node: %v\n%s", err, out)
	}
	var r doctor.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	seen := map[string]doctor.Status{}
	for _, f := range r.Findings {
		seen[f.Check] = f.Status
	}
	for check, want := range map[string]doctor.Status{"nvml": doctor.Skip, "gpu 0": doctor.OK, "backend": doctor.OK, "models": doctor.OK,
		"tls": doctor.Warn, "gateway": doctor.OK, "clock": doctor.OK} { // tls: the lab mode's token is a warning
		if seen[check] != want {
			t.Errorf("%s: %q, want %q (%s)", check, seen[check], want, out)
		}
	}

	dead := "http://" + freeAddr(t)
	cmd := exec.Command(herdBinary(t), "doctor", "--backend", "ollama", "--ollama-url", dead, "--ollama-models", t.TempDir(), "--gateway", c.url, "--cluster-token", c.token)
	outb, err := cmd.Output()
	out = string(outb)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("doctor with Ollama down: %v, want exit status 1\n%s", err, out)
	}
	for _, want := range []string{"FAIL    backend     ollama at " + dead + " does not answer", "→ start Ollama (systemctl start ollama)", "ok      gateway", "this node is not ready"} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}
}

// TestDoctorJoinedNode: on a node that joined a closed cluster, herd doctor reports the
// certificate and reaches the gateway over HTTPS with the node's own certificates (trusting the
// cluster CA), at the --join URL.
func TestDoctorJoinedNode(t *testing.T) {
	g := startTLSGateway(t, "gateway", t.TempDir())
	dir := t.TempDir()
	joinSimAgent(t, g, "doc-node", dir, nil, "", "")
	waitFor(t, time.Minute, "the node up", func() bool { return g.nodeUp(t, "doc-node") })
	out, err := runCLI(t, "doctor", "--backend", "sim", "--data", dir, "--join", g.url, "--json")
	if err != nil {
		t.Fatalf("doctor on a joined node: %v\n%s", err, out)
	}
	var r doctor.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	got := map[string]doctor.Finding{}
	for _, f := range r.Findings {
		got[f.Check] = f
	}
	if f := got["tls"]; f.Status != doctor.OK || !strings.Contains(f.Detail, "joined as doc-node") {
		t.Errorf("tls: %+v", f)
	}
	if f := got["gateway"]; f.Status != doctor.OK || !strings.Contains(f.Detail, g.url) {
		t.Errorf("gateway over HTTPS: %+v", f)
	}
}

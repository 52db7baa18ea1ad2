package main

import (
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/herd-llm/herd/nodeagent/doctor"
)

// TestDoctorBinary runs `herd doctor` as an operator would, against a real gateway: a simulated
// node passes; a node whose Ollama is down fails with exit status 1 and says what to do. (The
// NVML findings on mocked GPUs are in nodeagent/doctor's tests; this machine has no driver.)
func TestDoctorBinary(t *testing.T) {
	c := startGateway(t)
	out, err := runCLI(t, "doctor", "--backend", "sim", "--gateway", c.url, "--json")
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
	for check, want := range map[string]doctor.Status{"nvml": doctor.Skip, "gpu 0": doctor.OK, "backend": doctor.OK, "models": doctor.OK, "gateway": doctor.OK, "clock": doctor.OK} {
		if seen[check] != want {
			t.Errorf("%s: %q, want %q (%s)", check, seen[check], want, out)
		}
	}

	dead := "http://" + freeAddr(t)
	cmd := exec.Command(herdBinary(t), "doctor", "--backend", "ollama", "--ollama-url", dead, "--ollama-models", t.TempDir(), "--gateway", c.url)
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

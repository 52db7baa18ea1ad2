package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPlanCommand runs herd plan end to end with one tiny verification on a simulated cluster.
func TestPlanCommand(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "plan.json")
	svg := filepath.Join(dir, "plan.svg")
	stdout, err := runCLI(t, "plan", "--rps", "0.5", "--gpus", "3090,t4", "--max-nodes", "2", "--max-mix-nodes", "2",
		"--prompt-tokens", "uniform:50:150", "--output-tokens", "32", "--verify", "1", "--verify-probes", "1",
		"--probe-duration", "6s", "--sim-speed", "10", "--json", out, "--svg", svg, "-q")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout, "SIMULATED") || !strings.Contains(stdout, "| 1 |") {
		t.Errorf("table:\n%s", stdout)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Simulated      bool   `json:"simulated"`
		Verified       int    `json:"verified"`
		Recommendation string `json:"recommendation"`
		Options        []struct {
			Name     string `json:"name"`
			Verdict  string `json:"verdict"`
			Verified *struct {
				Simulated bool              `json:"simulated"`
				Probes    []json.RawMessage `json:"probes"`
				Error     string            `json:"error"`
			} `json:"verified"`
		} `json:"options"`
	}
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatal(err)
	}
	if !res.Simulated || res.Verified != 1 || len(res.Options) == 0 {
		t.Fatalf("result %+v", res)
	}
	// 0.5 req/s of short chat is well within one 3090: the cheapest option verifies.
	first := res.Options[0]
	if first.Verified == nil || first.Verified.Error != "" || !first.Verified.Simulated || len(first.Verified.Probes) != 1 ||
		first.Verdict != "pass" || res.Recommendation != first.Name {
		t.Fatalf("first option %+v, recommendation %q", first, res.Recommendation)
	}
	if b, err := os.ReadFile(svg); err != nil || !bytes.Contains(b, []byte("<svg")) {
		t.Errorf("svg: %v", err)
	}
}

// TestPlanFileAndEnv checks the layering: file, then HERD_PLAN_* environment, then flags; and
// that bad input is refused with a clear error.
func TestPlanFileAndEnv(t *testing.T) {
	bin := herdBinary(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "w.yaml")
	if err := os.WriteFile(file, []byte("workload:\n  rps: 9\n  output_tokens: '64'\ngpus: [a40]\nmax_nodes: 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cat := filepath.Join(dir, "prices.yaml")
	if err := os.WriteFile(cat, []byte("- {gpu: a40, price_usd: 1234}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(env []string, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, append([]string{"plan", "--no-verify", "-q"}, args...)...)
		cmd.Env = append(os.Environ(), env...)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		return o.String() + e.String(), err
	}
	out, err := run([]string{"HERD_PLAN_RPS=2"}, "--file", file, "--catalogue", cat)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	// The environment (2 req/s) beats the file (9); the file's GPU list and the catalogue price hold.
	if !strings.Contains(out, "2 req/s of llama3.1:8b") || !strings.Contains(out, "| a40 | 1 | 1234 |") || strings.Contains(out, "3090") {
		t.Errorf("output:\n%s", out)
	}
	out, err = run([]string{"HERD_PLAN_RPS=2"}, "--file", file, "--rps", "3")
	if err != nil || !strings.Contains(out, "3 req/s of") {
		t.Errorf("the flag should beat the environment: %v\n%s", err, out)
	}
	for _, bad := range [][]string{{"--prompt-tokens", "zipf:1"}, {"--gpus", "v100"}, {"--rps", "-1"}, {"--file", filepath.Join(dir, "missing.yaml")}} {
		if out, err := run(nil, bad...); err == nil || !strings.Contains(out, "herd:") {
			t.Errorf("%v: err %v\n%s", bad, err, out)
		}
	}
}

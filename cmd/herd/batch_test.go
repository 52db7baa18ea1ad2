package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/herd-llm/herd/bulk"
	"github.com/herd-llm/herd/gateway/api"
)

func batchStatus(t *testing.T, c *cluster, id string) api.BatchObject {
	t.Helper()
	b, err := (&api.Client{BaseURL: c.url, HTTP: httpClient()}).Batch(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// waitBatchExactlyOnce waits for the batch to complete on c and checks that its output holds
// every custom_id once.
func waitBatchExactlyOnce(t *testing.T, c *cluster, id string, lines int, limit time.Duration) {
	t.Helper()
	var final api.BatchObject
	waitFor(t, limit, "batch "+id+" to finish", func() bool {
		final = batchStatus(t, c, id)
		return final.Terminal()
	})
	if final.Status != "completed" || final.RequestCounts.Completed != lines || final.RequestCounts.Failed != 0 || final.OutputFileID == nil {
		t.Fatalf("batch %s: %+v", id, final)
	}
	content, err := (&api.Client{BaseURL: c.url, HTTP: httpClient()}).FileContent(context.Background(), *final.OutputFileID)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(content))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l api.OutputLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("output line %q: %v", sc.Text(), err)
		}
		if l.Response == nil || l.Response.StatusCode != 200 {
			t.Fatalf("line %s: %+v", l.CustomID, l)
		}
		seen[l.CustomID]++
	}
	for i := range lines {
		if k := fmt.Sprintf("req-%04d", i); seen[k] != 1 {
			t.Fatalf("custom_id %s appears %d times (want exactly once)", k, seen[k])
		}
	}
	if len(seen) != lines {
		t.Fatalf("%d distinct custom_ids, want %d", len(seen), lines)
	}
}

// TestBatchSurvivesGatewayKill9 kills the gateway with SIGKILL in the middle of a 1,500-line
// batch, restarts it on the same data dir, and checks every custom_id appears exactly once.
func TestBatchSurvivesGatewayKill9(t *testing.T) {
	c := startGateway(t)
	c.addSimAgent("b1", "3090", "--sim-speed", "50")
	c.addSimAgent("b2", "a40", "--sim-speed", "50")
	c.waitNodes(2)

	const lines = 1500
	var in bytes.Buffer
	for i := range lines {
		fmt.Fprintf(&in, `{"custom_id":"req-%04d","method":"POST","url":"/v1/chat/completions","body":{"model":"llama3.2:1b","max_tokens":16,"messages":[{"role":"user","content":"prompt %d"}]}}`+"\n", i, i)
	}
	ctx := context.Background()
	client := sdk(c.url)
	file, err := client.CreateFileBytes(ctx, openai.FileBytesRequest{Name: "big.jsonl", Bytes: in.Bytes(), Purpose: openai.PurposeBatch})
	if err != nil {
		t.Fatal(err)
	}
	b, err := client.CreateBatch(ctx, openai.CreateBatchRequest{InputFileID: file.ID, Endpoint: openai.BatchEndpointChatCompletions, CompletionWindow: "24h"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Minute, "a fifth of the batch done", func() bool {
		return batchStatus(t, c, b.ID).RequestCounts.Completed >= lines/5
	})
	c.gw.kill9()
	before := lines / 5
	c.restartGateway()
	c.waitNodes(2)
	waitBatchExactlyOnce(t, c, b.ID, lines, 5*time.Minute)
	t.Logf("killed after ≥%d lines; all %d lines exactly once after restart", before, lines)
}

// TestBatchCLIWithPreset is the bulk user's path: presets file, text prompts, submit --watch,
// get --out: one file per prompt and a manifest with checksums and provenance.
func TestBatchCLIWithPreset(t *testing.T) {
	dir := t.TempDir()
	presets := filepath.Join(dir, "presets.yaml")
	os.WriteFile(presets, []byte(`presets:
  - name: haiku-writer
    model: llama3.2:1b
    system: You write haiku about the topic you are given.
    description: three-line poems
    version: 3
    temperature: 0.7
    max_tokens: 24
`), 0o644)
	c := startGateway(t, "--presets", presets)
	c.addSimAgent("p1", "3090", "--sim-speed", "50")
	c.waitNodes(1)

	// The preset works interactively too, and answers as its base model.
	resp, err := sdk(c.url).CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
		Model: "haiku-writer", Messages: []openai.ChatCompletionMessage{{Role: "user", Content: "autumn"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Usage.CompletionTokens > 24 {
		t.Fatalf("preset max_tokens not applied: %d completion tokens", resp.Usage.CompletionTokens)
	}
	list, err := runCLI(t, "presets", "--url", c.url)
	if err != nil || !strings.Contains(list, "haiku-writer") {
		t.Fatalf("herd presets: %v\n%s", err, list)
	}

	prompts := filepath.Join(dir, "prompts.txt")
	os.WriteFile(prompts, []byte("autumn leaves\n\nthe sea at night\nmorning coffee\n"), 0o644)
	out, err := runCLI(t, "batch", "submit", prompts, "--preset", "haiku-writer", "--watch", "--url", c.url)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`batch (batch_\S+) completed: 3 completed, 0 failed of 3`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("submit --watch output:\n%s", out)
	}
	outDir := filepath.Join(dir, "out")
	if _, err := runCLI(t, "batch", "get", m[1], "--out", outDir, "--url", c.url); err != nil {
		t.Fatal(err)
	}
	var man bulk.DeliveryManifest
	data, err := os.ReadFile(filepath.Join(outDir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &man); err != nil {
		t.Fatal(err)
	}
	if man.Preset != "haiku-writer" || man.PresetVersion != "3" || len(man.Files) != 3 || len(man.Failed) != 0 ||
		!man.Simulated || len(man.SimulatedNodes) != 1 || man.SimulatedNodes[0] != "p1" {
		t.Fatalf("manifest: %+v", man)
	}
	for _, f := range man.Files {
		content, err := os.ReadFile(filepath.Join(outDir, f.File))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(content)
		if hex.EncodeToString(sum[:]) != f.SHA256 || f.Node != "p1" || f.CompletionTokens == 0 || f.Model == "" {
			t.Fatalf("manifest entry %+v does not match its file", f)
		}
		// Provenance: the parameters the line ran with (the preset's defaults) and that its node
		// is simulated.
		var params map[string]any
		if err := json.Unmarshal(f.Parameters, &params); err != nil || params["temperature"] != 0.7 || params["max_tokens"] != 24.0 || !f.Simulated {
			t.Fatalf("manifest entry %s: parameters %s, simulated %v", f.CustomID, f.Parameters, f.Simulated)
		}
	}
	listOut, err := runCLI(t, "batch", "list", "--url", c.url)
	if err != nil || !strings.Contains(listOut, m[1]) {
		t.Fatalf("herd batch list: %v\n%s", err, listOut)
	}
}

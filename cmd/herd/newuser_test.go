package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/herd-llm/herd/bulk"
)

// runCLIEnv is runCLI with extra environment variables; it returns stdout and stderr apart.
func runCLIEnv(t *testing.T, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, herdBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// TestBatchCLINewUser walks the bulk and operator commands the way a new user did (issue 20),
// against real herd processes: a gateway and one simulated node. It checks that
//   - a CSV prompt file's missing or misspelt column is reported as the CSV file's, with its
//     columns and a --template hint;
//   - a batch for a model no node has fails validation, naming the prompt file's lines;
//   - get --out delivers long and odd custom_ids under short, distinct, valid names, and the
//     manifest ties each file to its prompt (input line, source line, text);
//   - herd nodes says "up" (the README's, dashboard's and /metrics' word) and herd top fits the
//     terminal's width.
//
// It costs one gateway and one agent (a few seconds) plus the 2 s model grace.
func TestBatchCLINewUser(t *testing.T) {
	dir := t.TempDir()
	c := startGateway(t, "--batch-model-grace", "2s")
	c.addSimAgent("u1", "3090", "--sim-preload", "llama3.2:1b,llama3.1:8b,nomic-embed-text")
	c.waitNodes(1)
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}

	t.Run("csv columns", func(t *testing.T) {
		csvFile := write("products.csv", "product,audience\nkettle,students\nlamp,night owls\n")
		_, stderr, err := runCLIEnv(t, nil, "batch", "submit", csvFile, "--model", "llama3.2:1b", "--url", c.url)
		for _, want := range []string{`csv: products.csv has no column "prompt"`, "its columns: product, audience", "--template", "{{.product}}"} {
			if err == nil || !strings.Contains(stderr, want) {
				t.Errorf("submit without --template: %v, stderr lacks %q:\n%s", err, want, stderr)
			}
		}
		_, stderr, err = runCLIEnv(t, nil, "batch", "submit", csvFile, "--model", "llama3.2:1b", "--url", c.url,
			"--template", "Describe {{.prodcut}} for {{.audience}}")
		for _, want := range []string{"csv: ", `no column "prodcut"`, "its columns: product, audience", "did you mean {{.product}}"} {
			if err == nil || !strings.Contains(stderr, want) {
				t.Errorf("submit with a misspelt column: %v, stderr lacks %q:\n%s", err, want, stderr)
			}
		}
		if strings.Contains(stderr, "jsonl") {
			t.Errorf("a CSV file's error speaks of jsonl:\n%s", stderr)
		}
	})

	t.Run("unknown model fails validation", func(t *testing.T) {
		prompts := write("prompts.txt", "autumn leaves\n\nthe sea at night\n")
		out, _, err := runCLIEnv(t, nil, "batch", "submit", prompts, "--model", "nope", "--watch", "--url", c.url)
		if err == nil || !strings.Contains(out, "failed: 0 completed, 0 failed of 0") ||
			!regexp.MustCompile("line 1: The model `nope` does not exist.*\\(model_not_found\\)").MatchString(out) ||
			!regexp.MustCompile("line 3: The model `nope` does not exist").MatchString(out) {
			t.Fatalf("submit --model nope: %v\n%s", err, out)
		}
	})

	t.Run("delivery names and prompts", func(t *testing.T) {
		long := strings.Repeat("z", 240)
		ids := []string{long, long + "-2", "../../etc/passwd", "a/b", "a_b", "X", "x", "ünï cödé"}
		var jsonl strings.Builder
		for i, id := range ids {
			line, _ := json.Marshal(map[string]any{"custom_id": id, "method": "POST", "url": "/v1/chat/completions",
				"body": map[string]any{"model": "llama3.2:1b", "max_tokens": 4, "messages": []map[string]string{{"role": "user", "content": "prompt number " + string(rune('A'+i))}}}})
			jsonl.Write(line)
			jsonl.WriteByte('\n')
		}
		out, _, err := runCLIEnv(t, nil, "batch", "submit", write("odd.jsonl", jsonl.String()), "--watch", "--url", c.url)
		m := regexp.MustCompile(`batch (batch_\S+) completed: 8 completed, 0 failed of 8`).FindStringSubmatch(out)
		if err != nil || m == nil {
			t.Fatalf("submit odd.jsonl: %v\n%s", err, out)
		}
		outDir := filepath.Join(dir, "odd-out")
		if _, stderr, err := runCLIEnv(t, nil, "batch", "get", m[1], "--out", outDir, "--url", c.url); err != nil {
			t.Fatalf("batch get --out: %v\n%s", err, stderr)
		}
		man := readManifest(t, outDir)
		if len(man.Files) != len(ids) {
			t.Fatalf("manifest lists %d files, want %d", len(man.Files), len(ids))
		}
		names := map[string]bool{}
		for i, f := range man.Files {
			if f.CustomID != ids[i] || len(f.File) > 120 || names[strings.ToLower(f.File)] || f.InputLine != i+1 ||
				f.Prompt != "prompt number "+string(rune('A'+i)) || f.SourceLine != 0 {
				t.Errorf("file %d: %q for %.30q, prompt reference %+v", i, f.File, f.CustomID, f.PromptRef)
			}
			names[strings.ToLower(f.File)] = true
			if _, err := os.Stat(filepath.Join(outDir, f.File)); err != nil {
				t.Error(err)
			}
		}
		ents, _ := os.ReadDir(outDir)
		if len(ents) != len(ids)+1 {
			t.Errorf("%s holds %d entries, want %d files and manifest.json", outDir, len(ents), len(ids))
		}

		// A text file: each file's entry names its prompt's line and text.
		prompts := write("haiku.txt", "autumn leaves\n\nthe sea at night\n")
		out, _, err = runCLIEnv(t, nil, "batch", "submit", prompts, "--model", "llama3.2:1b", "--max-tokens", "4", "--watch", "--url", c.url)
		m = regexp.MustCompile(`batch (batch_\S+) completed: 2 completed`).FindStringSubmatch(out)
		if err != nil || m == nil {
			t.Fatalf("submit haiku.txt: %v\n%s", err, out)
		}
		txtDir := filepath.Join(dir, "haiku-out")
		if _, stderr, err := runCLIEnv(t, nil, "batch", "get", m[1], "--out", txtDir, "--url", c.url); err != nil {
			t.Fatalf("batch get --out: %v\n%s", err, stderr)
		}
		man = readManifest(t, txtDir)
		if man.SourceFile != "haiku.txt" || len(man.Files) != 2 ||
			man.Files[0].SourceLine != 1 || man.Files[0].Prompt != "autumn leaves" ||
			man.Files[1].SourceLine != 3 || man.Files[1].Prompt != "the sea at night" {
			t.Fatalf("manifest of haiku.txt: source %q, files %+v", man.SourceFile, man.Files)
		}
	})

	t.Run("nodes and top", func(t *testing.T) {
		out, _, err := runCLIEnv(t, nil, "nodes", "--url", c.url)
		if err != nil || !regexp.MustCompile(`(?m)^u1\s+up\s`).MatchString(out) || strings.Contains(out, "ready") {
			t.Errorf("herd nodes: %v, want u1 up:\n%s", err, out)
		}
		out, _, err = runCLIEnv(t, []string{"COLUMNS=100"}, "top", "-n", "1", "--url", c.url)
		if err != nil || !strings.Contains(out, "u1") {
			t.Fatalf("herd top: %v\n%s", err, out)
		}
		cut := false
		for line := range strings.Lines(out) {
			line = strings.TrimRight(line, "\n")
			if n := utf8.RuneCountInString(line); n > 100 {
				t.Errorf("herd top line of %d columns on a 100-column terminal: %q", n, line)
			}
			cut = cut || strings.HasSuffix(line, "…")
		}
		if !cut {
			t.Errorf("herd top cut nothing on a 100-column terminal:\n%s", out)
		}
	})
}

func readManifest(t *testing.T, dir string) bulk.DeliveryManifest {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var man bulk.DeliveryManifest
	if err := json.Unmarshal(data, &man); err != nil {
		t.Fatal(err)
	}
	return man
}

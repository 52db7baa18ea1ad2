package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-llm/herd/gateway/api"
	"github.com/herd-llm/herd/nodeagent/backend/ollamatest"
)

// TestRealOllamaKilledMidStream: two real `ollama serve` behind herd, each with the endless tiny
// model (its answers run until num_predict, so they are still running when the kill lands), the
// second drained so that every stream goes to the first. clients/js/kill.test.js streams a chat
// with the openai npm SDK (/v1/chat/completions: Ollama's OpenAI API), a Responses answer with it
// (/v1/responses: Ollama's own Responses API) and a chat with ollama-js (/api/chat, native) and,
// once all three have text, asks this test to kill: it undrains the second node and kills the
// first node's Ollama, serve and runner, with SIGKILL to its process group (its agent lives on and
// sees its backend vanish). All three streams must complete on the second node without an error,
// cut by the output cap, with tokens counted over both nodes. About 30 s.
func TestRealOllamaKilledMidStream(t *testing.T) {
	herdBinary(t)
	node, npm := nodeTools(t)
	modules := installNodeClients(t, npm)
	opts := ollamatest.Options{Modelfile: ollamatest.EndlessModelfile, Endless: true, Env: []string{"OLLAMA_NUM_PARALLEL=3"}}
	first := ollamatest.Start(t, opts)
	second := ollamatest.Start(t, opts)
	c := startGateway(t, "--api-keys", jsClientKey, "--admin-keys", jsAdminKey)
	c.addAgent("ollama-a", "--backend", "ollama", "--ollama-url", first.URL, "--ollama-models", first.ModelsDir)
	c.addAgent("ollama-b", "--backend", "ollama", "--ollama-url", second.URL, "--ollama-models", second.ModelsDir)
	waitFor(t, 60*time.Second, "2 nodes registered", func() bool { return healthyNodes(c, jsAdminKey) >= 2 })
	adminCall(t, c, http.MethodPost, "/admin/v1/nodes/ollama-b/drain")

	var mu sync.Mutex
	inFlight, kills := -1, 0
	var killedAt time.Time
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		var nodes struct {
			Nodes []api.Node `json:"nodes"`
		}
		b, err := adminDo(c, http.MethodGet, "/admin/v1/nodes")
		if err == nil {
			err = json.Unmarshal(b, &nodes)
		}
		if err == nil {
			_, err = adminDo(c, http.MethodPost, "/admin/v1/nodes/ollama-b/undrain")
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		for _, n := range nodes.Nodes {
			if n.ID == "ollama-a" {
				inFlight = n.GatewayInFlight
			}
		}
		if err := first.Kill(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		kills++
		killedAt = time.Now()
		fmt.Fprintf(w, `{"node":"ollama-a","in_flight":%d}`, inFlight)
	}))
	defer hook.Close()

	start := time.Now()
	model := normalized(first.Model)
	results := filepath.Join(t.TempDir(), "texts.json")
	runNodeClientFiles(t, node, modules, c.url, model, model, true, []string{"kill.test.js"},
		[]string{"HERD_KILL_HOOK=" + hook.URL, "HERD_KILL_NUM_PREDICT=" + strconv.Itoa(killNumPredict), "HERD_KILL_RESULTS=" + results})
	mu.Lock()
	defer mu.Unlock()
	if kills != 1 || inFlight != 3 {
		t.Fatalf("killed %d times, with %d streams in flight on the node", kills, inFlight)
	}
	if n := metricSum(t, c, "herd_stream_continuations_total", `outcome="continued"`); n < 3 {
		t.Fatalf("%d streams continued per the gateway's metrics, want 3", n)
	}
	logs := c.agents["ollama-b"].output()
	if strings.Count(logs, "continuing a broken stream") != 3 {
		t.Fatalf("the second node's agent did not continue the three streams:\n%s", logs)
	}
	// Each client's text is the prefix a continuing request carried (the text the first node
	// had streamed) followed by the continuation: nothing repeated, nothing missing.
	b, err := os.ReadFile(results)
	if err != nil {
		t.Fatal(err)
	}
	var texts map[string]string
	if err := json.Unmarshal(b, &texts); err != nil || len(texts) != 3 {
		t.Fatalf("texts %s: %v", b, err)
	}
	for client, text := range texts {
		if chars := continuedPrefix(logs, text); chars <= 0 || chars >= len([]rune(text)) {
			t.Errorf("%s: its text (%d characters) does not start with a prefix a continuing request carried (%d)", client, len([]rune(text)), chars)
		}
	}
	t.Logf("the three streams continued after the kill (%s into the run); the suite took %s", killedAt.Sub(start).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// continuedPrefix returns the length, in characters, of the prefix of text that one of the
// agent's continuations (its "continuing a broken stream" log lines) was given, or -1.
func continuedPrefix(logs, text string) int {
	runes := []rune(text)
	for _, p := range continuedPrefixes(logs) {
		chars, _ := strconv.Atoi(p[0])
		if chars > len(runes) {
			continue
		}
		sum := sha256.Sum256([]byte(string(runes[:chars])))
		if hex.EncodeToString(sum[:]) == p[1] {
			return chars
		}
	}
	return -1
}

// killNumPredict is the output cap of the streams TestRealOllamaKilledMidStream kills under:
// long enough that both still run when the kill lands, short enough for the prompt and the
// partial answer to fit the continuing node's context (ollamatest.EndlessContext).
const killNumPredict = 1500

// adminCall makes an admin API call on c with the JS suite's admin key and returns the body; a
// status other than 200 fails the test.
func adminCall(t *testing.T, c *cluster, method, path string) []byte {
	t.Helper()
	b, err := adminDo(c, method, path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// adminDo is adminCall for goroutines other than the test's: it returns the failure.
func adminDo(c *cluster, method, path string) ([]byte, error) {
	req, _ := http.NewRequest(method, c.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+jsAdminKey)
	resp, err := httpClient().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return b, nil
}

// metricSum sums the samples of metric on c's /metrics whose labels contain match.
func metricSum(t *testing.T, c *cluster, metric, match string) int {
	t.Helper()
	total := 0
	for line := range strings.Lines(string(adminCall(t, c, http.MethodGet, "/metrics"))) {
		if strings.HasPrefix(line, metric+"{") && strings.Contains(line, match) {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			total += int(v)
		}
	}
	return total
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-llm/herd/models"
	"github.com/herd-llm/herd/nodeagent"
	"github.com/herd-llm/herd/nodeagent/sim"
)

// seenBackend is a simulated node that records what reaches its request handling.
type seenBackend struct {
	*sim.Node
	mu      sync.Mutex
	headers []http.Header
	bodies  [][]byte
}

func (s *seenBackend) ServeInference(w http.ResponseWriter, r *http.Request, endpoint string, body []byte) {
	s.mu.Lock()
	s.headers = append(s.headers, r.Header.Clone())
	s.bodies = append(s.bodies, append([]byte(nil), body...))
	s.mu.Unlock()
	s.Node.ServeInference(w, r, endpoint, body)
}

// A routing result must come from how the engines behave, never from the simulator knowing herd:
// through a real gateway and agent (herd policy, the OpenAI and the Ollama fronts, a shared system
// prompt and a growing conversation), the simulated engine sees no X-Herd-* header and no field
// in the body that the client did not send — no prefix hash, no routing key. Cost: ~1 s.
func TestSimSeesNoRoutingInputs(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	doc := defaultDocument()
	gw := doc.Gateway
	gw.Listen, gw.DataDir, gw.ClusterToken = "127.0.0.1:0", t.TempDir(), "blind-test-token"
	gw.HeartbeatInterval = 100 * time.Millisecond
	ready := make(chan string, 1)
	gwDone := make(chan error, 1)
	go func() { gwDone <- runGateway(ctx, gw, log, ready) }()
	var gwAddr string
	select {
	case gwAddr = <-ready:
	case err := <-gwDone:
		t.Fatalf("gateway: %v", err)
	}

	gpu, _ := models.LookupGPU("3090")
	node, err := sim.New(sim.Config{NodeID: "blind", GPUs: []models.GPUProfile{gpu}, Engine: sim.EngineOllama, SpeedFactor: 50,
		Models: []string{"llama3.2:1b"}, Preload: []string{"llama3.2:1b"}})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	be := &seenBackend{Node: node}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := doc.Agent.Config
	cfg.NodeID, cfg.Advertise = "blind", "http://"+ln.Addr().String()
	cfg.GatewayURLs, cfg.ClusterToken, cfg.HeartbeatInterval = []string{"http://" + gwAddr}, gw.ClusterToken, 100*time.Millisecond
	ag, err := nodeagent.New(cfg, be, node, nodeagent.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	agDone := make(chan error, 1)
	go func() { agDone <- ag.Run(ctx, ln) }()
	defer func() {
		cancel()
		<-agDone
		<-gwDone
	}()

	base := "http://" + gwAddr
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(base + "/v1/models")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), "llama3.2:1b") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the node never registered")
		}
		time.Sleep(50 * time.Millisecond)
	}

	system := strings.Repeat("You are the preset assistant of the lab. ", 40)
	var sent []string
	post := func(path string, body map[string]any) {
		t.Helper()
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(http.MethodPost, base+path, strings.NewReader(string(b)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Herd-Prefix-Hash", "client-sent") // a client's header must not pass either
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, out)
		}
		sent = append(sent, path)
	}
	history := []map[string]any{{"role": "system", "content": system}}
	for turn := range 3 {
		history = append(history, map[string]any{"role": "user", "content": fmt.Sprintf("question %d about GPUs", turn)})
		post("/v1/chat/completions", map[string]any{"model": "llama3.2:1b", "messages": history, "max_tokens": 4, "stream": turn%2 == 0})
		post("/api/chat", map[string]any{"model": "llama3.2:1b", "messages": history, "stream": false, "options": map[string]any{"num_predict": 4}})
		history = append(history, map[string]any{"role": "assistant", "content": "an answer"})
	}

	be.mu.Lock()
	defer be.mu.Unlock()
	if len(be.headers) != len(sent) {
		t.Fatalf("the engine saw %d requests, %d were sent", len(be.headers), len(sent))
	}
	// What an OpenAI chat request may carry; the Ollama front's translation writes these too.
	allowed := map[string]bool{"model": true, "messages": true, "max_tokens": true, "max_completion_tokens": true, "stream": true,
		"stream_options": true, "temperature": true, "top_p": true, "seed": true, "stop": true, "frequency_penalty": true,
		"presence_penalty": true, "tools": true, "tool_choice": true, "response_format": true, "n": true, "user": true,
		"logprobs": true, "top_logprobs": true, "keep_alive": true, "reasoning_effort": true}
	for i, h := range be.headers {
		for k := range h {
			if strings.HasPrefix(strings.ToLower(k), "x-herd-") {
				t.Errorf("request %d (%s): the engine saw header %s: %v", i, sent[i], k, h[k])
			}
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(be.bodies[i], &fields); err != nil {
			t.Fatalf("request %d: body %q: %v", i, be.bodies[i], err)
		}
		for k := range fields {
			if !allowed[k] {
				t.Errorf("request %d (%s): the engine saw body field %q", i, sent[i], k)
			}
		}
		lower := strings.ToLower(string(be.bodies[i]))
		for _, w := range []string{"herd", "prefix", "hash", "routing"} {
			if strings.Contains(lower, w) {
				t.Errorf("request %d (%s): %q in the body the engine saw: %s", i, sent[i], w, be.bodies[i])
			}
		}
	}
}

package backend

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// detectTimeout bounds Detect's probe: an absent Ollama usually refuses at once, but a
// firewalled address would otherwise hang the agent's start.
const detectTimeout = time.Second

// Detect picks the backend for "--backend auto": agentapi.BackendOllama when an Ollama server
// answers /api/version at ollamaURL within a second, otherwise agentapi.BackendSim (the
// simulated GPU node, which callers must announce as simulated). hc nil means
// http.DefaultClient.
func Detect(ctx context.Context, hc *http.Client, ollamaURL string) string {
	if OllamaAnswers(ctx, hc, ollamaURL) {
		return agentapi.BackendOllama
	}
	return agentapi.BackendSim
}

// OllamaAnswers reports whether an Ollama server answers /api/version at url within a second.
func OllamaAnswers(ctx context.Context, hc *http.Client, url string) bool {
	if hc == nil {
		hc = http.DefaultClient
	}
	ctx, cancel := context.WithTimeout(ctx, detectTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(url, "/")+"/api/version", nil)
	if err != nil {
		return false
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

package gateway

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// BenchmarkOllamaChat runs the whole gateway handler for /api/chat, streamed and not: the agent
// answers NDJSON whatever its backend (it translates for those that are not Ollama), so the
// gateway relays lines either way. Compare with BenchmarkProxyChat for what the Ollama front
// adds.
func BenchmarkOllamaChat(b *testing.B) {
	var ndjson bytes.Buffer
	for _, w := range wireWords {
		fmt.Fprintf(&ndjson, `{"model":%q,"created_at":"2025-06-01T12:00:00Z","message":{"role":"assistant","content":%q},"done":false}`+"\n", testModel, w)
	}
	ndjson.WriteString(`{"model":"llama3.1:8b","created_at":"2025-06-01T12:00:00Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","eval_count":4}` + "\n")
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header()["Content-Type"] = []string{"application/x-ndjson"}
		_, _ = w.Write(ndjson.Bytes())
	}))
	b.Cleanup(agent.Close)
	for _, bc := range []struct {
		name, backend string
		stream        bool
	}{
		{"stream", agentapi.BackendOllama, true},
		{"single", agentapi.BackendOllama, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h := benchGateway(b, agent.URL, bc.backend)
			body := []byte(fmt.Sprintf(`{"model":"llama3.1:8b","stream":%v,"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Explain KV caching in one sentence."}],"options":{"num_predict":64}}`, bc.stream))
			req := httptest.NewRequest(http.MethodPost, "/api/chat", nil)
			req.Header.Set("Authorization", "Bearer "+testAPIKey)
			benchServe(b, h, req, body)
		})
	}
}

package backend

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// Whether a backend serves the Responses API (/v1/responses) itself is found out by asking it,
// not configured: Ollama has served it since 0.13.3 and vLLM does, older Ollama releases and many
// OpenAI-compatible servers do not, and an upgrade should be noticed without a restart.
//
// The probe POSTs a body that no server can accept ({"input":0}: input of the wrong type) to
// /v1/responses. A server with the route refuses it as a bad request (400 or 422, or names the
// missing model); one without answers 404 (gin's "404 page not found", FastAPI's
// {"detail":"Not Found"}), 405 or 501. The answer is kept for responsesProbeTTL; a probe that got
// no answer (backend down) or a 5xx is not kept, and the request is translated meanwhile, which
// works on every backend that has chat completions.

// responsesProbeTTL is how long a probe's answer is kept.
const responsesProbeTTL = 5 * time.Minute

type responsesProbe struct {
	mu     sync.Mutex
	native bool
	at     time.Time
	// now is the clock the TTL is read on (time.Now; tests set their own).
	now func() time.Time
}

// servesResponses reports whether the backend serves /v1/responses natively.
func (p *proxy) servesResponses(ctx context.Context) bool {
	p.responses.mu.Lock()
	defer p.responses.mu.Unlock()
	now := time.Now
	if p.responses.now != nil {
		now = p.responses.now
	}
	if !p.responses.at.IsZero() && now().Sub(p.responses.at) < responsesProbeTTL {
		return p.responses.native
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	body := []byte(`{"input":0}`)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.urls[agentapi.PathResponses].String(), bytes.NewReader(body))
	if err != nil {
		return false
	}
	req.Header.Set("Content-Type", "application/json")
	if p.auth != nil {
		req.Header["Authorization"] = p.auth
	}
	resp, err := p.transport.RoundTrip(req)
	if err != nil {
		return false
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	native, known := probeAnswer(resp.StatusCode, msg)
	if known {
		p.responses.native, p.responses.at = native, now()
		p.log.Info("backend Responses API probe", "backend", p.kind, "native", native, "status", resp.StatusCode)
	}
	return native
}

// probeAnswer reads the probe's answer: whether the route exists, and whether the answer says.
func probeAnswer(status int, body []byte) (native, known bool) {
	switch {
	case status == http.StatusNotFound:
		// A 404 about the request (Ollama and vLLM say which model they lack) means the route is
		// there; a bare "not found" means it is not.
		t := bytes.ToLower(body)
		return bytes.Contains(t, []byte("model")), true
	case status == http.StatusMethodNotAllowed || status == http.StatusNotImplemented:
		return false, true
	case status >= 500:
		return false, false
	}
	return true, true
}

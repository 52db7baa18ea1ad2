package gateway

import (
	"sync"

	"github.com/herd-llm/herd/gateway/admin"
	"github.com/herd-llm/herd/gateway/prefixcache"
	"github.com/herd-llm/herd/models"
	"github.com/herd-llm/herd/scheduler"
)

// explainRequests reads the bodies of POST /admin/v1/explain as the request path reads an
// inference body: the same scan, model resolution and prefix match (presets are not applied).
type explainRequests struct{ s *Server }

var _ admin.Requests = explainRequests{}

// ExplainRequest implements admin.Requests.
func (e explainRequests) ExplainRequest(body []byte, snap *scheduler.Snapshot, req *scheduler.Request) *APIError {
	var info bodyInfo
	if err := scanBody(body, &info); err != nil {
		return err
	}
	name, vram, ok := findModel(snap, info.model, false)
	if !ok {
		name, vram, ok = findModel(snap, []byte(models.NormalizeName(string(info.model))), true)
	}
	if !ok {
		return e.s.unknownModel(string(info.model), snap)
	}
	*req = scheduler.Request{
		Model:          name,
		PromptTokens:   e.s.core.tpb.tokens(name, info.promptBytes),
		MaxTokens:      info.maxTokens,
		PrefixHash:     info.prefixHash,
		ModelVRAMBytes: vram,
		Prefix:         e.s.core.prefix.Match(snap, name, info.chain.Links(), nil),
		RoutingKey:     chwblKey(body, info.firstUser),
	}
	e.s.core.tpb.scale(name, req.Prefix)
	return nil
}

// residentOn reports whether model is resident (or already loading) on n.
func residentOn(n *scheduler.Node, model string) bool {
	for j := range n.Models {
		if m := &n.Models[j]; m.Name == model {
			return m.Resident || m.Loading
		}
	}
	return false
}

// tokensPerByte learns, per model, how many prompt tokens a byte of request JSON makes: the
// prompt estimate the wait model and the prefix index count in. Tokenizers differ several-fold
// (a tiny test model makes about 1.5 tokens a byte, a Llama about 0.25), and the seconds a cached
// prefix saves are tokens ÷ the node's measured prefill speed, which counts real tokens: so the
// estimate follows the answers' usage (an exponentially weighted mean of prompt_tokens ÷ the
// body's prompt bytes), starting at 0.25 (four bytes a token).
type tokensPerByte struct {
	mu sync.Mutex
	m  map[string]float64
}

// Bounds of the learned ratio, and the weight of each observation.
const (
	defaultTokensPerByte = 0.25
	minTokensPerByte     = 0.05
	maxTokensPerByte     = 4
	tokensPerByteAlpha   = 0.1
	maxTokensPerByteKeys = 1024
)

// ratio is model's tokens per byte.
func (t *tokensPerByte) ratio(model string) float64 {
	t.mu.Lock()
	r, ok := t.m[model]
	t.mu.Unlock()
	if !ok {
		return defaultTokensPerByte
	}
	return r
}

// tokens estimates the prompt tokens of a body with bytes bytes of prompt.
func (t *tokensPerByte) tokens(model string, bytes int) int {
	return int(float64(bytes) * t.ratio(model))
}

// scale turns the index's matches, counted at prefixcache.BytesPerToken, into model's tokens.
func (t *tokensPerByte) scale(model string, matches []scheduler.PrefixMatch) {
	if len(matches) == 0 {
		return
	}
	f := t.ratio(model) * prefixcache.BytesPerToken
	for i := range matches {
		matches[i].Tokens = int(float64(matches[i].Tokens) * f)
	}
}

// observe folds an answered request's prompt tokens (usage) over its prompt bytes into model's
// ratio.
func (t *tokensPerByte) observe(model string, tokens int64, bytes int) {
	if tokens <= 0 || bytes <= 0 || model == "" {
		return
	}
	r := min(max(float64(tokens)/float64(bytes), minTokensPerByte), maxTokensPerByte)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[string]float64{}
	}
	old, ok := t.m[model]
	switch {
	case ok:
		t.m[model] = old + tokensPerByteAlpha*(r-old)
	case len(t.m) < maxTokensPerByteKeys:
		t.m[model] = r
	}
}

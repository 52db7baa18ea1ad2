package gateway

import (
	"github.com/herd-llm/herd/gateway/admin"
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
		PromptTokens:   info.promptBytes / 4,
		MaxTokens:      info.maxTokens,
		PrefixHash:     info.prefixHash,
		ModelVRAMBytes: vram,
		Prefix:         e.s.core.prefix.Match(snap, name, info.chain.Links(), nil),
		RoutingKey:     chwblKey(body, info.firstUser),
	}
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

// Package agents keeps the gateway's clients of its node agents: one agentapi.Client per agent
// address, authenticated with the cluster token, all sharing one HTTP client so connections to an
// agent are reused across admin calls and the replica controller's loads. (The request path
// proxies with its own transport; it does not go through these clients.)
package agents

import (
	"net/http"
	"sync"

	"github.com/herd-llm/herd/gateway/registry"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// Pool caches one agent client per address.
type Pool struct {
	token string
	// nodes lists the registered nodes, for dropping clients of addresses no node has any more.
	nodes func() []registry.NodeView

	mu      sync.Mutex
	hc      *http.Client
	clients map[string]*agentapi.Client
	// pruneAt is the cache size at which clients of addresses no node has any more are dropped
	// (addresses change when nodes are re-provisioned).
	pruneAt int
}

// NewPool returns a pool of clients authenticated with token; nodes lists the registered nodes
// (the registry's Nodes).
func NewPool(token string, nodes func() []registry.NodeView) *Pool {
	return &Pool{token: token, nodes: nodes}
}

// SetHTTPClient sets the client every agent client of the pool uses (mutual TLS to agents);
// call it before the pool is used. Default: agentapi.DefaultHTTPClient().
func (p *Pool) SetHTTPClient(hc *http.Client) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hc = hc
}

// For returns the agent client of node v, creating it on first use.
func (p *Pool) For(v registry.NodeView) *agentapi.Client {
	return p.get(v.Heartbeat.Address)
}

func (p *Pool) get(address string) *agentapi.Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.clients[address]; ok {
		return c
	}
	if p.hc == nil {
		p.hc = agentapi.DefaultHTTPClient()
	}
	if p.clients == nil {
		p.clients = map[string]*agentapi.Client{}
	}
	if len(p.clients) >= max(p.pruneAt, 16) {
		keep := map[string]bool{}
		if p.nodes != nil {
			for _, nv := range p.nodes() {
				keep[nv.Heartbeat.Address] = true
			}
		}
		for a := range p.clients {
			if !keep[a] {
				delete(p.clients, a)
			}
		}
		p.pruneAt = 2 * len(p.clients)
	}
	c := agentapi.NewClient(address, p.token, p.hc)
	p.clients[address] = c
	return c
}

package agents

import (
	"fmt"
	"testing"

	"github.com/herd-llm/herd/gateway/registry"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

func view(addr string) registry.NodeView {
	return registry.NodeView{Heartbeat: agentapi.Heartbeat{NodeID: addr, Address: addr}}
}

func TestPoolReusesAndPrunes(t *testing.T) {
	live := []registry.NodeView{view("http://live")}
	p := NewPool("tok", func() []registry.NodeView { return live })
	first := p.For(view("http://live"))
	if p.For(view("http://live")) != first {
		t.Fatal("a second For of one address made a new client")
	}
	for i := range 20 {
		p.For(view(fmt.Sprintf("http://gone-%d", i)))
	}
	p.mu.Lock()
	n := len(p.clients)
	_, kept := p.clients["http://live"]
	p.mu.Unlock()
	if !kept {
		t.Fatal("the live node's client was pruned")
	}
	if n >= 21 {
		t.Fatalf("%d clients cached: clients of addresses no node has were never pruned", n)
	}
	if p.For(view("http://live")) != first {
		t.Fatal("the live node's client was replaced")
	}
}

package registry

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herd-llm/herd/gateway/store/storetest"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// lockedBuffer collects a logger's output from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// identityStep is one heartbeat of TestNodeIdentity: who sends it, whether the holder has gone
// stale first, and whether it must be accepted.
type identityStep struct {
	name      string
	instance  string
	address   string
	waitStale bool
	accept    bool
}

// identitySteps are the token-only identity rules: while the holder is fresh, nobody else takes
// its node ID — not another instance at another address, not a new instance at the holder's own
// address (a restart, or someone who says so), not the holder's own instance from another
// address (an instance ID sniffed off the LAN); once it is stale, a new instance does; and the
// old holder coming back is then the one refused.
var identitySteps = []identityStep{
	{"holder", "inst-holder-7f3a", "http://10.0.0.1:9090", false, true},
	{"holder again", "inst-holder-7f3a", "http://10.0.0.1:9090", false, true},
	{"another instance elsewhere", "inst-thief-0001", "http://10.0.0.66:9090", false, false},
	{"new instance at the holder's address", "inst-thief-0002", "http://10.0.0.1:9090", false, false},
	{"the holder's instance from another address", "inst-holder-7f3a", "http://10.0.0.66:9090", false, false},
	{"holder still holds", "inst-holder-7f3a", "http://10.0.0.1:9090", false, true},
	{"restarted agent once the holder is stale", "inst-restarted-b2", "http://10.0.0.1:9090", true, true},
	{"old holder back", "inst-holder-7f3a", "http://10.0.0.1:9090", false, false},
	{"restarted agent keeps it", "inst-restarted-b2", "http://10.0.0.1:9090", false, true},
}

// TestNodeIdentity runs identitySteps on the in-memory registry and on the Redis shared table
// (through two gateways, alternating), and checks that neither an error text nor the log ever
// contains an instance ID, and that the node never leaves the agent that holds it.
func TestNodeIdentity(t *testing.T) {
	type impl struct {
		accept  func(i int, hb agentapi.Heartbeat) error
		node    func(i int) (NodeView, bool)
		stale   func()
		loggers []*Registry
	}
	impls := map[string]func(t *testing.T) impl{
		"memory": func(t *testing.T) impl {
			r, clk := newTestRegistry(t)
			return impl{
				accept:  func(_ int, hb agentapi.Heartbeat) error { _, err := r.Observe(hb); return err },
				node:    func(int) (NodeView, bool) { return r.Node("gpu-a") },
				stale:   func() { clk.Advance(4 * time.Second) }, // 3 intervals of 1 s
				loggers: []*Registry{r},
			}
		},
		"redis": func(t *testing.T) impl {
			p := newSharedPair(t, storetest.StartRedis(t), "ident:")
			regs := []*Registry{p.a, p.b}
			return impl{
				accept: func(i int, hb agentapi.Heartbeat) error {
					hb.IntervalMS = 50 // stale after 150 ms by Redis's clock
					_, err := regs[i%2].Accept(context.Background(), hb)
					return err
				},
				node: func(i int) (NodeView, bool) {
					r := regs[(i+1)%2] // the other gateway, which only knows what the table says
					r.SyncShared(context.Background())
					return r.Node("gpu-a")
				},
				stale: func() {
					time.Sleep(250 * time.Millisecond)
					p.clkA.Advance(time.Second)
					p.clkB.Advance(time.Second)
				},
				loggers: regs,
			}
		},
	}
	for name, mk := range impls {
		t.Run(name, func(t *testing.T) {
			im := mk(t)
			var logs lockedBuffer
			for _, r := range im.loggers {
				r.SetLogger(slog.New(slog.NewTextHandler(&logs, nil)))
			}
			var holder agentapi.Heartbeat
			for i, st := range identitySteps {
				if st.waitStale {
					im.stale()
				}
				hb := beatOf("gpu-a", st.instance, st.address)
				err := im.accept(i, hb)
				switch {
				case st.accept && err != nil:
					t.Fatalf("%s: refused: %v", st.name, err)
				case !st.accept:
					var ce *ConflictError
					if !errors.As(err, &ce) || !errors.Is(err, ErrNodeIDConflict) {
						t.Fatalf("%s: accepted or wrong error: %v", st.name, err)
					}
					if ce.HolderAddress != holder.Address || ce.HolderFingerprint != agentapi.InstanceFingerprint(holder.InstanceID) ||
						ce.ClaimantAddress != st.address || ce.HolderStaleAfter <= 0 {
						t.Fatalf("%s: conflict names the wrong agents: %+v", st.name, ce)
					}
					for _, s := range identitySteps {
						if strings.Contains(err.Error(), s.instance) {
							t.Fatalf("%s: the refusal reveals instance %s: %v", st.name, s.instance, err)
						}
					}
				default:
					holder = hb
				}
				v, ok := im.node(i)
				if !ok || v.Heartbeat.InstanceID != holder.InstanceID || v.Heartbeat.Address != holder.Address {
					t.Fatalf("%s: node gpu-a is %s (%s), want the holder %s (%s)", st.name, v.Heartbeat.Address, v.Heartbeat.InstanceID, holder.Address, holder.InstanceID)
				}
			}
			out := logs.String()
			if !strings.Contains(out, "heartbeat refused: node id held by another live agent") || !strings.Contains(out, "node id taken by a new agent instance") {
				t.Fatalf("refusals and the takeover are not logged:\n%s", out)
			}
			for _, s := range identitySteps {
				if strings.Contains(out, s.instance) {
					t.Fatalf("the log reveals instance %s:\n%s", s.instance, out)
				}
			}
		})
	}
}

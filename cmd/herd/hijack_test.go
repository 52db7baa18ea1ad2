package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herd-llm/herd/gateway/store/storetest"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// TestNodeHijackRefused is issue 17's hijack, tried again in the token-only lab mode with the
// real binaries: a gateway, a real (simulated-GPU) agent holding gpu-a, and a fake claimant
// that knows the cluster token, runs its own "agent" and heartbeats for gpu-a every 250 ms —
// as a new instance from its own address, as a new instance from the real agent's address, and
// with the real agent's instance ID (sniffed here off a relay the real agent heartbeats through,
// as anyone on a plain-HTTP LAN could) from its own address. Every claim is refused with 409,
// the node never leaves the real agent, all 20 user prompts reach the real agent and none the
// fake, the refusals are logged and counted, and neither the 409 texts, the gateway's log, the
// admin API nor /metrics contain the instance ID. Embedded and Redis registries; about 5 s each.
func TestNodeHijackRefused(t *testing.T) {
	for _, mode := range []string{"embedded", "redis"} {
		t.Run(mode, func(t *testing.T) {
			var c *cluster
			if mode == "redis" {
				c = startSharedGateway(t, "gw", t.TempDir(), storetest.StartRedis(t))
			} else {
				c = startGateway(t)
			}
			// The relay in front of the gateway records the real agent's heartbeats.
			gwURL, _ := url.Parse(c.url)
			var sniffed atomic.Pointer[agentapi.Heartbeat]
			rp := httputil.NewSingleHostReverseProxy(gwURL)
			relay := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == agentapi.PathHeartbeat {
					body, _ := io.ReadAll(r.Body)
					var hb agentapi.Heartbeat
					if json.Unmarshal(body, &hb) == nil {
						sniffed.Store(&hb)
					}
					r.Body = io.NopCloser(bytes.NewReader(body))
				}
				rp.ServeHTTP(w, r)
			}))
			defer relay.Close()
			agentAddr := freeAddr(t)
			startHerd(t, "agent-gpu-a", "agent", "--gateway", relay.URL, "--listen", agentAddr, "--advertise", "http://"+agentAddr,
				"--cluster-token", c.token, "--node-id", "gpu-a", "--backend", "sim", "--sim-gpus", "t4",
				"--sim-models", "llama3.2:1b", "--sim-preload", "llama3.2:1b", "--sim-speed", "20", "--agent-heartbeat-interval", "250ms")
			c.waitNodes(1)
			real := sniffed.Load()
			if real == nil || real.InstanceID == "" {
				t.Fatal("the relay saw no heartbeat with an instance ID")
			}

			// The fake agent: it would answer every prompt sent to it.
			var hijacked atomic.Int64
			fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hijacked.Add(1)
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, `{"id":"x","object":"chat.completion","model":"llama3.2:1b","choices":[{"index":0,"message":{"role":"assistant","content":"hijacked"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`)
			}))
			defer fake.Close()
			claims := map[string]agentapi.Heartbeat{}
			for name, edit := range map[string]func(*agentapi.Heartbeat){
				"new instance from elsewhere":      func(hb *agentapi.Heartbeat) { hb.InstanceID, hb.Address = "fake-instance-1", fake.URL },
				"new instance at the real address": func(hb *agentapi.Heartbeat) { hb.InstanceID = "fake-instance-2" },
				"sniffed instance from elsewhere":  func(hb *agentapi.Heartbeat) { hb.Address = fake.URL },
			} {
				hb := *real
				edit(&hb)
				claims[name] = hb
			}

			var (
				wg       sync.WaitGroup
				mu       sync.Mutex
				statuses = map[string]map[int]int{}
				bodies   []string
			)
			stop := make(chan struct{})
			for name, hb := range claims {
				statuses[name] = map[int]int{}
				wg.Go(func() {
					body, _ := json.Marshal(hb)
					tick := time.NewTicker(250 * time.Millisecond)
					defer tick.Stop()
					for {
						req, _ := http.NewRequest(http.MethodPost, c.url+agentapi.PathHeartbeat, bytes.NewReader(body))
						req.Header.Set("Authorization", "Bearer "+c.token)
						req.Header.Set("Content-Type", "application/json")
						if resp, err := http.DefaultClient.Do(req); err == nil {
							text, _ := io.ReadAll(resp.Body)
							resp.Body.Close()
							mu.Lock()
							statuses[name][resp.StatusCode]++
							bodies = append(bodies, string(text))
							mu.Unlock()
						}
						select {
						case <-stop:
							return
						case <-tick.C:
						}
					}
				})
			}

			// Users' prompts while the claims go on, and the node's address watched meanwhile.
			served := map[string]int{}
			for i := range 20 {
				node, err := chatOnce(t, c.url, "llama3.2:1b", i%2 == 0)
				if err != nil {
					t.Fatalf("prompt %d: %v", i, err)
				}
				served[node]++
				nodes, err := c.nodes()
				if err != nil || len(nodes) != 1 || nodes[0].Address != "http://"+agentAddr || nodes[0].Stale {
					t.Fatalf("during the claims gpu-a is %+v (%v); want the real agent at %s", nodes, err, agentAddr)
				}
				time.Sleep(100 * time.Millisecond)
			}
			close(stop)
			wg.Wait()

			if served["gpu-a"] != 20 || hijacked.Load() != 0 {
				t.Fatalf("prompts served by %v, %d reached the fake agent; want all 20 on gpu-a, none on the fake", served, hijacked.Load())
			}
			for name, st := range statuses {
				if st[http.StatusConflict] == 0 || len(st) != 1 {
					t.Errorf("%s: heartbeats answered %v, want only 409s", name, st)
				}
			}
			secret := real.InstanceID
			for _, b := range bodies {
				if strings.Contains(b, secret) {
					t.Fatalf("a 409 reveals the holder's instance ID: %s", b)
				}
				if !strings.Contains(b, "node_id_conflict") {
					t.Fatalf("a refusal is not a node_id_conflict: %s", b)
				}
			}
			resp, err := http.Get(c.url + "/admin/v1/nodes")
			if err != nil {
				t.Fatal(err)
			}
			admin, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			resp, err = http.Get(c.url + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			metricsText, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if bytes.Contains(admin, []byte(secret)) || bytes.Contains(metricsText, []byte(secret)) {
				t.Fatal("the admin API or /metrics reveals the instance ID")
			}
			if !bytes.Contains(metricsText, []byte(`herd_heartbeats_refused_total{node="gpu-a"}`)) {
				t.Error("/metrics does not count the refusals")
			}
			out := c.gw.output()
			if strings.Contains(out, secret) {
				t.Fatal("the gateway's log reveals the instance ID")
			}
			for _, want := range []string{"heartbeat refused: node id held by another live agent", fake.URL, agentapi.InstanceFingerprint("fake-instance-1")} {
				if !strings.Contains(out, want) {
					t.Errorf("the gateway's log lacks %q", want)
				}
			}
		})
	}
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	openai "github.com/sashabaranov/go-openai"

	"github.com/herd-llm/herd/gateway/store/storetest"
)

// Several gateways on one Redis: the integration tests of the shared registry.

// startSharedGateway starts a gateway on Redis; gateways of one cluster share data (the file
// contents) and Redis.
func startSharedGateway(t *testing.T, name, data, redisURL string, extra ...string) *cluster {
	t.Helper()
	c := &cluster{t: t, token: "it-token", data: data, agents: map[string]*proc{}}
	addr := freeAddr(t)
	c.url = "http://" + addr
	args := append([]string{"gateway", "--listen", addr, "--data", data, "--cluster-token", c.token,
		"--redis-url", redisURL, "--gateway-id", name, "--heartbeat-interval", "250ms"}, extra...)
	c.gw = startHerd(t, name, args...)
	waitHealthy(t, c.url, name+" /healthz")
	return c
}

// chatVia sends one chat request to the first gateway and, when that gateway cannot be reached
// or drops the connection before answering (killed), to the next: what a client or a load
// balancer in front of several gateways does. It returns the node that served it.
func chatVia(hc *http.Client, bases ...string) (string, error) {
	body := `{"model":"llama3.2:1b","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`
	var lastErr error
	for _, base := range bases {
		resp, err := hc.Post(base+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			lastErr = err // no answer from this gateway: try the next
			continue
		}
		data, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			lastErr = err
			continue
		}
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("%s: status %d: %s", base, resp.StatusCode, data)
		}
		return resp.Header.Get("X-Herd-Node"), nil
	}
	return "", lastErr
}

// load sends requests from parallel workers, round-robin over gateways (each with the others as
// fallbacks), until stop is closed or total requests were sent (total 0: no bound).
type load struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	failures   []string
	perNode    map[string]int
}

func runLoad(gateways []string, parallel, total int, stop <-chan struct{}) (l *load, wait func()) {
	l = &load{perNode: map[string]int{}}
	var next atomic.Int64
	var wg sync.WaitGroup
	hc := &http.Client{Timeout: time.Minute}
	for range parallel {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				i := next.Add(1) - 1
				if total > 0 && i >= int64(total) {
					return
				}
				order := make([]string, 0, len(gateways))
				for k := range gateways {
					order = append(order, gateways[(int(i)+k)%len(gateways)])
				}
				node, err := chatVia(hc, order...)
				l.mu.Lock()
				if err != nil {
					l.failed.Add(1)
					l.failures = append(l.failures, err.Error())
				} else {
					l.ok.Add(1)
					l.perNode[node]++
				}
				l.mu.Unlock()
			}
		})
	}
	return l, wg.Wait
}

func (l *load) firstFailure() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.failures) == 0 {
		return ""
	}
	return l.failures[0]
}

// startLinesBatch uploads lines chat requests and starts a batch on the gateway at base.
func startLinesBatch(t *testing.T, base string, lines, maxTokens int) string {
	t.Helper()
	var in bytes.Buffer
	for i := range lines {
		fmt.Fprintf(&in, `{"custom_id":"req-%04d","method":"POST","url":"/v1/chat/completions","body":{"model":"llama3.2:1b","max_tokens":%d,"messages":[{"role":"user","content":"prompt %d"}]}}`+"\n", i, maxTokens, i)
	}
	ctx := context.Background()
	client := sdk(base)
	file, err := client.CreateFileBytes(ctx, openai.FileBytesRequest{Name: "lines.jsonl", Bytes: in.Bytes(), Purpose: openai.PurposeBatch})
	if err != nil {
		t.Fatal(err)
	}
	b, err := client.CreateBatch(ctx, openai.CreateBatchRequest{InputFileID: file.ID, Endpoint: openai.BatchEndpointChatCompletions, CompletionWindow: "24h"})
	if err != nil {
		t.Fatal(err)
	}
	return b.ID
}

func redisClient(t *testing.T, url string) *redis.Client {
	t.Helper()
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(o)
	t.Cleanup(func() { c.Close() })
	return c
}

// TestTwoGatewaysOneRedis: two gateways on one Redis and three agents, each heartbeating to one
// gateway only (the other is its fallback). Both gateways list all three nodes. One gateway is
// killed with SIGKILL during 300 requests sent round-robin to both (a client retries on the
// other gateway when one cannot be reached): none fails. A batch that the killed gateway was
// running completes on the other, every line exactly once.
func TestTwoGatewaysOneRedis(t *testing.T) {
	rs := storetest.StartRedisServer(t)
	data := t.TempDir()
	// Slow batch lines (two at a time) so that the batch is still running when its gateway dies.
	common := []string{"--batch-claim-timeout", "3s", "--batch-concurrency", "2"}
	a := startSharedGateway(t, "gw-a", data, rs.URL, common...)
	b := startSharedGateway(t, "gw-b", data, rs.URL, common...)
	a.addSimAgent("s1", "3090", "--gateway", a.url+","+b.url)
	a.addSimAgent("s2", "3090", "--gateway", a.url+","+b.url)
	a.addSimAgent("s3", "a40", "--gateway", b.url+","+a.url)
	a.waitNodes(3)
	b.waitNodes(3)
	for _, c := range []*cluster{a, b} {
		nodes, err := c.nodes()
		if err != nil || len(nodes) != 3 {
			t.Fatalf("%s lists %d nodes (%v), want 3", c.url, len(nodes), err)
		}
	}

	// Admin calls to agents work from either gateway: gw-b loads a model on s1, which heartbeats
	// to gw-a, and gw-a sees it resident through the shared registry; a drain made on gw-a
	// applies on gw-b.
	resp, err := http.Post(b.url+"/admin/v1/models/load", "application/json", strings.NewReader(`{"model":"llama3.1:8b","node":"s1"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("load on s1 through gw-b: status %d", resp.StatusCode)
	}
	waitFor(t, time.Minute, "gw-a to see llama3.1:8b resident on s1", func() bool {
		nodes, err := a.nodes()
		if err != nil {
			return false
		}
		for _, n := range nodes {
			for _, m := range n.Models {
				if n.ID == "s1" && m.Name == "llama3.1:8b" && m.Resident {
					return true
				}
			}
		}
		return false
	})
	if _, err := runCLI(t, "drain", "s3", "--url", a.url); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "gw-b to see s3 drained", func() bool {
		nodes, err := b.nodes()
		if err != nil {
			return false
		}
		for _, n := range nodes {
			if n.ID == "s3" {
				return n.Draining
			}
		}
		return false
	})
	if _, err := runCLI(t, "undrain", "s3", "--url", b.url); err != nil {
		t.Fatal(err)
	}

	const lines = 1000
	id := startLinesBatch(t, a.url, lines, 24)
	waitFor(t, 2*time.Minute, "the batch under way", func() bool {
		return batchStatus(t, a, id).RequestCounts.Completed >= 10
	})
	rc := redisClient(t, rs.URL)
	pend, err := rc.XPendingExt(context.Background(), &redis.XPendingExtArgs{Stream: "herd:queue", Group: "runners", Start: "-", End: "+", Count: 10}).Result()
	if err != nil || len(pend) != 1 || pend[0].Consumer != "gw-a" {
		t.Fatalf("the batch is not held by gw-a: %+v, %v", pend, err)
	}

	const total = 300
	res, wait := runLoad([]string{a.url, b.url}, 10, total, nil)
	waitFor(t, 2*time.Minute, "a third of the requests", func() bool { return res.ok.Load()+res.failed.Load() >= total/3 })
	a.gw.kill9()
	killedAt := time.Now()
	wait()
	if n := res.failed.Load(); n != 0 {
		t.Fatalf("%d of %d requests failed after a gateway was killed; first: %s", n, total, res.firstFailure())
	}
	t.Logf("requests per node: %v", res.perNode)
	// The agents of the dead gateway moved to the other one: it still lists all three, fresh.
	b.waitNodes(3)
	if st := batchStatus(t, b, id); st.Terminal() {
		t.Fatalf("the batch finished before its gateway was killed (%+v): nothing was taken over", st.RequestCounts)
	}
	waitBatchExactlyOnce(t, b, id, lines, 3*time.Minute)
	t.Logf("batch of %d lines completed on gw-b %s after gw-a was killed (claim timeout 3s)", lines, time.Since(killedAt).Round(100*time.Millisecond))
}

// TestRedisRestartedEmptyUnderLoad: Redis is killed and a fresh, empty one started on its port
// while requests flow through two gateways whose agents each heartbeat to one gateway only, so
// each gateway knows the other's node only through Redis. No request fails during the outage
// (the gateways hold their last view), both gateways list both nodes once Redis is back, and a
// batch submitted after the restart completes.
func TestRedisRestartedEmptyUnderLoad(t *testing.T) {
	rs := storetest.StartRedisServer(t)
	data := t.TempDir()
	a := startSharedGateway(t, "gw-a", data, rs.URL)
	b := startSharedGateway(t, "gw-b", data, rs.URL)
	a.addSimAgent("r1", "3090", "--gateway", a.url)
	a.addSimAgent("r2", "3090", "--gateway", b.url)
	a.waitNodes(2)
	b.waitNodes(2)

	stop := make(chan struct{})
	res, wait := runLoad([]string{a.url, b.url}, 4, 0, stop)
	waitFor(t, time.Minute, "requests flowing", func() bool { return res.ok.Load() >= 20 })
	rs.Kill()
	atKill := res.ok.Load()
	// Several stale windows (750 ms) and registry polls (250 ms) without Redis.
	time.Sleep(4 * time.Second)
	during := res.ok.Load() - atKill
	rs.Restart()
	rc := redisClient(t, rs.URL)
	waitFor(t, time.Minute, "both nodes back in the new Redis", func() bool {
		n, err := rc.ZCard(context.Background(), "herd:nodes").Result()
		return err == nil && n == 2
	})
	for _, c := range []*cluster{a, b} {
		c.waitNodes(2)
	}
	id := startLinesBatch(t, b.url, 20, 8)
	waitBatchExactlyOnce(t, a, id, 20, 2*time.Minute)
	close(stop)
	wait()
	if n := res.failed.Load(); n != 0 {
		t.Fatalf("%d requests failed around the Redis restart; first: %s", n, res.firstFailure())
	}
	if during == 0 {
		t.Fatal("no request completed while Redis was down")
	}
	t.Logf("%d requests served while Redis was down; per node overall: %v", during, res.perNode)
	if res.perNode["r1"] == 0 || res.perNode["r2"] == 0 {
		t.Fatalf("the work did not reach both nodes: %v", res.perNode)
	}
	for _, c := range []*cluster{a, b} {
		if out := c.gw.output(); !strings.Contains(out, "shared registry unreachable") || !strings.Contains(out, "shared registry reachable again") {
			t.Errorf("%s did not log the outage and its end", c.url)
		}
	}
}

// TestNodeIDTakeoverRefused: a second agent started with the ID of a live node is refused (409,
// logged on both sides) and the node keeps its first agent's address, without flapping; once
// the first agent is dead and stale, the second takes the ID over. Embedded and Redis registries.
func TestNodeIDTakeoverRefused(t *testing.T) {
	for _, mode := range []string{"embedded", "redis"} {
		t.Run(mode, func(t *testing.T) {
			var c *cluster
			if mode == "redis" {
				c = startSharedGateway(t, "gw", t.TempDir(), storetest.StartRedis(t))
			} else {
				c = startGateway(t)
			}
			first := c.addSimAgent("dup", "t4")
			c.waitNodes(1)
			nodes, _ := c.nodes()
			holder := nodes[0].Address
			second := c.addSimAgent("dup", "t4")
			waitFor(t, 30*time.Second, "the second agent refused", func() bool {
				return strings.Contains(second.output(), "gateway refused this agent")
			})
			if !strings.Contains(second.output(), "level=ERROR") || !strings.Contains(second.output(), holder) {
				t.Fatalf("the refused agent's log does not name the holder %s:\n%s", holder, second.output())
			}
			if !strings.Contains(c.gw.output(), "heartbeat refused: node id held by another live agent") {
				t.Fatalf("the gateway did not log the refusal:\n%s", c.gw.output())
			}
			// Both keep heartbeating every 250 ms; the node must not flap between them.
			for range 8 {
				nodes, err := c.nodes()
				if err != nil || len(nodes) != 1 || nodes[0].Address != holder || nodes[0].Stale {
					t.Fatalf("nodes while two agents claim dup: %+v (%v); want only the holder %s", nodes, err, holder)
				}
				time.Sleep(250 * time.Millisecond)
			}
			first.kill9()
			waitFor(t, 30*time.Second, "the second agent to take the id over", func() bool {
				nodes, err := c.nodes()
				return err == nil && len(nodes) == 1 && nodes[0].Address != holder && !nodes[0].Stale
			})
			// The gateway lists the new holder as soon as it accepts the heartbeat; the agent logs
			// the acceptance when the answer reaches it, a moment later.
			waitFor(t, 10*time.Second, "the second agent to log the takeover", func() bool {
				return strings.Contains(second.output(), "node id acquired")
			})
		})
	}
}

//go:build unix

package gateway_test

// This benchmark is the only place where the gateway meets the real agent: it is an external
// test package, so the gateway package itself still never imports nodeagent.

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/herd-llm/herd/gateway"
	"github.com/herd-llm/herd/loadtest"
	"github.com/herd-llm/herd/nodeagent"
	"github.com/herd-llm/herd/nodeagent/backend"
)

const (
	e2eToken  = "e2e-cluster-token-0123456789abcdef"
	e2eAPIKey = "sk-e2e-0123456789abcdef"
)

// e2eCluster is a gateway and an agent with the openai backend in front of the load test's fake
// OpenAI server, all serving on loopback in this process.
type e2eCluster struct {
	gwURL, fakeURL string
}

func startE2E(b *testing.B) *e2eCluster {
	b.Helper()
	quiet := slog.New(slog.DiscardHandler)
	fake, err := loadtest.StartFake("127.0.0.1:0", loadtest.FaultOK, loadtest.FakeOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = fake.Close() })

	ctx, cancel := context.WithCancel(context.Background())
	gwLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	cfg := gateway.DefaultConfig()
	cfg.Listen, cfg.DataDir, cfg.ClusterToken, cfg.APIKeys = gwLn.Addr().String(), b.TempDir(), e2eToken, []string{e2eAPIKey}
	gw, err := gateway.New(cfg, gateway.WithLogger(quiet))
	if err != nil {
		b.Fatal(err)
	}
	gwDone := make(chan error, 1)
	go func() { gwDone <- gw.Serve(ctx, gwLn) }()
	gwURL := "http://" + gwLn.Addr().String()

	be, err := backend.NewOpenAICompat(fake.URL, "", backend.WithLogger(quiet))
	if err != nil {
		b.Fatal(err)
	}
	agLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ag, err := nodeagent.New(nodeagent.Config{
		NodeID: "e2e", Listen: agLn.Addr().String(), GatewayURLs: []string{gwURL}, ClusterToken: e2eToken,
		HeartbeatInterval: 200 * time.Millisecond, Slots: 256,
	}, be, nil, nodeagent.WithLogger(quiet))
	if err != nil {
		b.Fatal(err)
	}
	agDone := make(chan error, 1)
	go func() { agDone <- ag.Run(ctx, agLn) }()
	b.Cleanup(func() {
		cancel()
		<-agDone
		<-gwDone
		_ = gw.Close()
	})

	c := &e2eCluster{gwURL: gwURL, fakeURL: fake.URL}
	// Wait (bounded) until the agent's heartbeat made the fake model routable.
	client := loadtest.NewHTTPClient(64)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if st, _ := c.chat(client, c.gwURL, false); st == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("gateway never served the fake model")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return c
}

var (
	e2eBody       = []byte(`{"model":"` + loadtest.DefaultFakeModel + `","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Explain KV caching in one sentence."}],"max_tokens":20}`)
	e2eStreamBody = []byte(`{"model":"` + loadtest.DefaultFakeModel + `","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Explain KV caching in one sentence."}],"max_tokens":20,"stream":true}`)
)

// chat sends one chat request to base and reads the whole answer.
func (c *e2eCluster) chat(client *http.Client, base string, stream bool) (int, error) {
	body := e2eBody
	if stream {
		body = e2eStreamBody
	}
	req, err := http.NewRequest(http.MethodPost, base+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header["Authorization"] = []string{"Bearer " + e2eAPIKey}
	req.Header["Content-Type"] = []string{"application/json"}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, err
}

// BenchmarkEndToEnd sends chat requests over loopback to a real gateway → real agent (openai
// backend) → the load test's fake backend, all in this process, so allocations and a CPU profile
// cover the whole path; "direct" is the same request straight to the fake backend, which is what
// herd adds to. The parallel cases run 50 clients at once, like the overhead scenario's c50.
func BenchmarkEndToEnd(b *testing.B) {
	c := startE2E(b)
	for _, bc := range []struct {
		name     string
		direct   bool
		stream   bool
		parallel bool
	}{
		{"direct/json", true, false, false},
		{"herd/json", false, false, false},
		{"herd/sse", false, true, false},
		{"direct/json-c50", true, false, true},
		{"herd/json-c50", false, false, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			base := c.gwURL
			if bc.direct {
				base = c.fakeURL
			}
			client := loadtest.NewHTTPClient(256)
			defer client.CloseIdleConnections()
			b.ReportAllocs()
			// CPU time per request of the whole process (client, gateway, agent, fake backend)
			// says more than ns/op on a shared machine, where wall time depends on the neighbours.
			cpu0 := processCPU()
			defer func() {
				if b.N > 0 {
					b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
				}
			}()
			if !bc.parallel {
				for b.Loop() {
					if st, err := c.chat(client, base, bc.stream); st != http.StatusOK || err != nil {
						b.Fatalf("status %d, %v", st, err)
					}
				}
				return
			}
			var failed atomic.Int64
			b.SetParallelism(max(1, 50/runtime.GOMAXPROCS(0)))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if st, err := c.chat(client, base, bc.stream); st != http.StatusOK || err != nil {
						failed.Add(1)
					}
				}
			})
			if n := failed.Load(); n > 0 {
				b.Fatalf("%d requests failed", n)
			}
		})
	}
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/herd-llm/herd/gateway/api"
)

// The integration tests start the real herd binary as separate processes on loopback ports.

var (
	buildOnce sync.Once
	herdBin   string
	buildErr  error
	buildDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// herdBinary builds cmd/herd once per test run (with -race when the tests run with it).
func herdBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: starts processes (skipped with -short)")
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "herd-it-")
		if buildErr != nil {
			return
		}
		herdBin = filepath.Join(buildDir, "herd")
		args := []string{"build", "-tags", "nomsgpack", "-o", herdBin}
		if raceEnabled {
			args = append(args, "-race")
		}
		out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return herdBin
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// proc is a herd process started by a test; the test ends it by its PID.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	log  *bytes.Buffer
	mu   *sync.Mutex
	done chan struct{}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func startHerd(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	bin := herdBinary(t)
	p := &proc{t: t, name: name, log: &bytes.Buffer{}, mu: &sync.Mutex{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), "HERD_LOG_LEVEL=info")
	w := lockedWriter{p.mu, p.log}
	p.cmd.Stdout, p.cmd.Stderr = w, w
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("--- %s log ---\n%s", name, p.output())
		}
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// stop sends SIGTERM and, after a grace period, SIGKILL — to this process only.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// kill9 ends the process with SIGKILL, as a crash would.
func (p *proc) kill9() {
	p.cmd.Process.Kill()
	<-p.done
}

// cluster is a gateway and its agents.
type cluster struct {
	t      *testing.T
	url    string // http://host:port
	token  string
	data   string
	gw     *proc
	agents map[string]*proc
}

func startGateway(t *testing.T, extra ...string) *cluster {
	t.Helper()
	c := &cluster{t: t, token: "it-token", data: t.TempDir(), agents: map[string]*proc{}}
	addr := freeAddr(t)
	c.url = "http://" + addr
	args := append([]string{"gateway", "--listen", addr, "--data", c.data, "--cluster-token", c.token}, extra...)
	c.gw = startHerd(t, "gateway", args...)
	waitHealthy(t, c.url, "gateway /healthz")
	return c
}

// waitHealthy waits for the gateway at url to answer /healthz with 200; what names it.
func waitHealthy(t *testing.T, url, what string) {
	t.Helper()
	waitFor(t, 30*time.Second, what, func() bool {
		resp, err := http.Get(url + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// restartGateway starts a new gateway process on the same address and data dir.
func (c *cluster) restartGateway(extra ...string) {
	c.t.Helper()
	addr := strings.TrimPrefix(c.url, "http://")
	args := append([]string{"gateway", "--listen", addr, "--data", c.data, "--cluster-token", c.token}, extra...)
	c.gw = startHerd(c.t, "gateway-restarted", args...)
	waitHealthy(c.t, c.url, "restarted gateway /healthz")
}

// addSimAgent starts a simulated agent; args add to or override the defaults.
func (c *cluster) addSimAgent(id, gpus string, args ...string) *proc {
	c.t.Helper()
	addr := freeAddr(c.t)
	all := []string{"agent", "--gateway", c.url, "--listen", addr, "--advertise", "http://" + addr,
		"--cluster-token", c.token, "--node-id", id, "--backend", "sim", "--sim-gpus", gpus,
		"--sim-models", "llama3.2:1b,llama3.1:8b,nomic-embed-text", "--sim-preload", "llama3.2:1b,nomic-embed-text",
		"--sim-speed", "20", "--agent-heartbeat-interval", "250ms"}
	p := startHerd(c.t, "agent-"+id, append(all, args...)...)
	c.agents[id] = p
	return p
}

// addAgent starts an agent with the given backend arguments.
func (c *cluster) addAgent(id string, args ...string) *proc {
	c.t.Helper()
	addr := freeAddr(c.t)
	all := []string{"agent", "--gateway", c.url, "--listen", addr, "--advertise", "http://" + addr,
		"--cluster-token", c.token, "--node-id", id, "--agent-heartbeat-interval", "250ms"}
	p := startHerd(c.t, "agent-"+id, append(all, args...)...)
	c.agents[id] = p
	return p
}

// waitNodes waits until the gateway lists n healthy, non-stale nodes.
func (c *cluster) waitNodes(n int) {
	c.t.Helper()
	waitFor(c.t, 60*time.Second, fmt.Sprintf("%d nodes registered", n), func() bool {
		nodes, err := c.nodes()
		if err != nil {
			return false
		}
		ready := 0
		for _, nd := range nodes {
			if !nd.Stale && nd.Healthy {
				ready++
			}
		}
		return ready >= n
	})
}

func (c *cluster) nodes() ([]api.Node, error) {
	resp, err := http.Get(c.url + "/admin/v1/nodes")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	var out struct {
		Nodes []api.Node `json:"nodes"`
	}
	err = json.NewDecoder(resp.Body).Decode(&out)
	return out.Nodes, err
}

// runCLI runs the herd binary as a client command and returns its stdout.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, herdBinary(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("herd %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

func waitFor(t *testing.T, limit time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func httpClient() *http.Client { return &http.Client{Timeout: time.Minute} }

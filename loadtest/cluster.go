package loadtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// SimClusterOptions describes a simulated cluster to start from the herd binary.
type SimClusterOptions struct {
	// Binary is the herd binary (default: this executable).
	Binary string
	// GPUs lists one agent per comma-separated group, each passed as that agent's --sim-gpus:
	// "2xt4,a40,3090" is three agents, the first with two T4s (default "t4,a40,3090").
	GPUs string
	// Models are on every agent's disk (default DefaultModel); Preload are resident on its GPUs
	// at start (default: Models).
	Models  []string
	Preload []string
	// Policy is the gateway's scheduling policy (herd, round_robin, least_inflight; "": its default).
	Policy string
	// Listen is the gateway's address (default a free loopback port).
	Listen string
	// SimSpeed makes simulated time run this many times faster than real time (default 1).
	SimSpeed float64
	// DataDir is the gateway's data directory (default a temporary one, removed by Stop).
	DataDir string
	// LogDir receives one log file per process (default a temporary directory, removed by Stop
	// unless KeepLogs).
	LogDir   string
	KeepLogs bool
	// ClusterToken is shared by gateway and agents (default random).
	ClusterToken string
	// LogLevel is the processes' --log-level (default warn).
	LogLevel string
	// ReadyTimeout bounds the wait for every node to register (default 60s).
	ReadyTimeout time.Duration
	// GatewayArgs and AgentArgs are appended to the processes' command lines.
	GatewayArgs, AgentArgs []string
}

// SimAgent is one simulated node of a Cluster.
type SimAgent struct {
	// NodeID is its --node-id ("sim1-t4"); GPUs its --sim-gpus; URL its advertised address.
	NodeID string
	GPUs   string
	URL    string
	*Process
}

// Cluster is a running herd gateway with its agents, started by this package.
type Cluster struct {
	// URL is the gateway's base URL ("http://127.0.0.1:PORT"); clients use URL + "/v1".
	URL string
	// Gateway is the gateway process; Agents are the agent processes.
	Gateway *Process
	Agents  []*SimAgent
	// LogDir holds the processes' logs.
	LogDir string
	// Simulated is true: every node is a nodeagent/sim GPU model.
	Simulated bool

	removeLogs bool
	tempData   string
}

// GPUGroups splits a --gpus list into the groups StartSimCluster starts one agent for.
func GPUGroups(gpus string) []string {
	var out []string
	for _, g := range strings.Split(gpus, ",") {
		if g = strings.TrimSpace(g); g != "" {
			out = append(out, g)
		}
	}
	return out
}

func (o SimClusterOptions) withDefaults() (SimClusterOptions, error) {
	if o.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return o, fmt.Errorf("finding the herd binary: %w", err)
		}
		o.Binary = exe
	}
	if o.GPUs == "" {
		o.GPUs = "t4,a40,3090"
	}
	if len(o.Models) == 0 {
		o.Models = []string{DefaultModel}
	}
	if o.Preload == nil {
		o.Preload = o.Models
	}
	if o.SimSpeed <= 0 {
		o.SimSpeed = 1
	}
	if o.LogLevel == "" {
		o.LogLevel = "warn"
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 60 * time.Second
	}
	if o.ClusterToken == "" {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return o, err
		}
		o.ClusterToken = hex.EncodeToString(b[:])
	}
	return o, nil
}

// StartSimCluster starts a herd gateway and one simulated agent per GPU group, and returns once
// every node is registered with the gateway (listed by /admin/v1/nodes). On error it stops
// whatever it started. The caller must call Stop.
func StartSimCluster(ctx context.Context, o SimClusterOptions) (*Cluster, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	groups := GPUGroups(o.GPUs)
	if len(groups) == 0 {
		return nil, fmt.Errorf("%w: no GPU groups in %q", ErrBadOptions, o.GPUs)
	}
	c := &Cluster{Simulated: true, LogDir: o.LogDir}
	if c.LogDir == "" {
		if c.LogDir, err = os.MkdirTemp("", "herd-sim-logs-"); err != nil {
			return nil, err
		}
		c.removeLogs = !o.KeepLogs
	}
	dataDir := o.DataDir
	if dataDir == "" {
		if dataDir, err = os.MkdirTemp("", "herd-sim-data-"); err != nil {
			c.cleanup()
			return nil, err
		}
		c.tempData = dataDir
	}
	fail := func(err error) (*Cluster, error) {
		if c.removeLogs { // keep the logs the error points at
			c.removeLogs = false
			err = fmt.Errorf("%w (logs kept in %s)", err, c.LogDir)
		}
		c.Stop()
		return nil, err
	}
	gwArgs := []string{"gateway", "--data", dataDir, "--cluster-token", o.ClusterToken, "--log-level", o.LogLevel}
	if o.Policy != "" {
		gwArgs = append(gwArgs, "--policy", o.Policy)
	}
	if o.Listen != "" {
		// A simulated cluster's gateway on a LAN address stays plain HTTP (its agents are on
		// loopback); the gateway warns that it is.
		gwArgs = append(gwArgs, "--insecure")
	}
	gwArgs = append(gwArgs, o.GatewayArgs...)
	if c.Gateway, c.URL, err = startListening(ctx, "gateway", o.Binary, gwArgs, o.Listen, c.LogDir, "/healthz"); err != nil {
		return fail(err)
	}
	var ids []string
	for i, g := range groups {
		id := fmt.Sprintf("sim%d-%s", i+1, g)
		args := []string{"agent", "--gateway", c.URL, "--cluster-token", o.ClusterToken, "--node-id", id,
			"--backend", "sim", "--sim-gpus", g, "--sim-models", strings.Join(o.Models, ","),
			"--sim-speed", strconv.FormatFloat(o.SimSpeed, 'g', -1, 64), "--log-level", o.LogLevel}
		if len(o.Preload) > 0 {
			args = append(args, "--sim-preload", strings.Join(o.Preload, ","))
		}
		args = append(args, o.AgentArgs...)
		p, u, err := startListening(ctx, "agent "+id, o.Binary, args, "", c.LogDir, "")
		if err != nil {
			return fail(err)
		}
		c.Agents = append(c.Agents, &SimAgent{NodeID: id, GPUs: g, URL: u, Process: p})
		ids = append(ids, id)
	}
	if err := c.waitNodes(ctx, ids, o.ReadyTimeout); err != nil {
		return fail(err)
	}
	return c, nil
}

// startListening starts a herd process that serves HTTP on listen (a free loopback port when
// empty, passed as --listen and, for agents, --advertise), and waits until it answers
// healthPath (when set) or at least is still running. A port taken between choosing it and the
// child binding it is retried with another.
func startListening(ctx context.Context, name, bin string, args []string, listen, logDir, healthPath string) (*Process, string, error) {
	agent := len(args) > 0 && args[0] == "agent"
	var lastErr error
	for range 3 {
		addr := listen
		if addr == "" {
			port, err := freePort()
			if err != nil {
				return nil, "", err
			}
			addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		}
		u := "http://" + addr
		a := append(slices.Clone(args), "--listen", addr)
		if agent {
			a = append(a, "--advertise", u)
		}
		p, err := startProcess(name, bin, a, logDir)
		if err != nil {
			return nil, "", err
		}
		err = waitHTTP(ctx, p, u+healthPath, healthPath != "", 30*time.Second)
		if err == nil {
			return p, u, nil
		}
		_ = p.Stop(2 * time.Second)
		lastErr = err
		if listen != "" || !strings.Contains(p.LogTail(30), "address already in use") {
			break
		}
	}
	return nil, "", lastErr
}

// waitHTTP waits until u answers (any HTTP status) when check is set, or, for a process with
// no health route of its own to ask, until it has had a moment to fail.
func waitHTTP(ctx context.Context, p *Process, u string, check bool, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: 2 * time.Second}
	for i := 0; ; i++ {
		if ok, _ := p.Exited(); ok {
			return p.failure("exited while starting")
		}
		if check {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
			if err != nil {
				return err
			}
			if resp, err := client.Do(req); err == nil {
				resp.Body.Close()
				return nil
			}
		} else if i >= 3 { // still running after ~300ms: its registration is checked by the caller
			return nil
		}
		if time.Now().After(deadline) {
			return p.failure(fmt.Sprintf("did not answer %s within %s", u, timeout))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// nodeList is the part of /admin/v1/nodes the cluster waits on.
type nodeList struct {
	Nodes []struct {
		ID string `json:"id"`
	} `json:"nodes"`
}

// Nodes returns the ids of the nodes the gateway lists.
func (c *Cluster) Nodes(ctx context.Context) ([]string, error) {
	return listNodes(ctx, c.URL, "")
}

func listNodes(ctx context.Context, base, apiKey string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/admin/v1/nodes", nil)
	if err != nil {
		return nil, err
	}
	if apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+apiKey)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/admin/v1/nodes: HTTP %d", resp.StatusCode)
	}
	var nl nodeList
	if err := json.NewDecoder(resp.Body).Decode(&nl); err != nil {
		return nil, fmt.Errorf("/admin/v1/nodes: %w", err)
	}
	ids := make([]string, 0, len(nl.Nodes))
	for _, n := range nl.Nodes {
		ids = append(ids, n.ID)
	}
	return ids, nil
}

// waitNodes polls the gateway until it lists every id in want.
func (c *Cluster) waitNodes(ctx context.Context, want []string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var have []string
	var lastErr error
	for {
		for _, p := range c.processes() {
			if ok, _ := p.Exited(); ok {
				return p.failure("exited while the cluster was starting")
			}
		}
		have, lastErr = c.Nodes(ctx)
		if lastErr == nil && containsAll(have, want) {
			return nil
		}
		if time.Now().After(deadline) {
			msg := fmt.Sprintf("cluster not ready after %s: want nodes %v, gateway lists %v", timeout, want, have)
			if lastErr != nil {
				msg += fmt.Sprintf(" (last error: %v)", lastErr)
			}
			return errors.New(msg + "; " + c.Gateway.failure("is the gateway").Error())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

func (c *Cluster) processes() []*Process {
	var ps []*Process
	if c.Gateway != nil {
		ps = append(ps, c.Gateway)
	}
	for _, a := range c.Agents {
		ps = append(ps, a.Process)
	}
	return ps
}

// Agent returns the agent with node id id, or nil.
func (c *Cluster) Agent(id string) *SimAgent {
	for _, a := range c.Agents {
		if a.NodeID == id {
			return a
		}
	}
	return nil
}

// KillNode kills the agent of node id with SIGKILL, as a crashed machine would vanish.
func (c *Cluster) KillNode(id string) error {
	a := c.Agent(id)
	if a == nil {
		return fmt.Errorf("no agent %q in this cluster", id)
	}
	return a.Kill()
}

// PIDs returns the process ids of the gateway and the agents, gateway first.
func (c *Cluster) PIDs() []int {
	var pids []int
	for _, p := range c.processes() {
		pids = append(pids, p.PID)
	}
	return pids
}

// Stop ends the agents, then the gateway (SIGTERM, SIGKILL after a grace period), and removes
// the temporary directories it created. It ends only the processes it started.
func (c *Cluster) Stop() error {
	var errs []error
	for _, a := range c.Agents {
		if err := a.Stop(5 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Gateway != nil {
		if err := c.Gateway.Stop(10 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	c.cleanup()
	return errors.Join(errs...)
}

func (c *Cluster) cleanup() {
	if c.tempData != "" {
		os.RemoveAll(c.tempData)
		c.tempData = ""
	}
	if c.removeLogs {
		os.RemoveAll(c.LogDir)
		c.removeLogs = false
	}
}

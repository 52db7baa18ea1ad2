package loadtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// Defaults of a fake fleet: the shape issue "a thousand nodes" asks for — eight GPUs a node, each
// node holding ten of two hundred models drawn by Zipf popularity, one heartbeat a second.
const (
	FleetDefaultGPUs          = 8
	FleetDefaultModels        = 200
	FleetDefaultModelsPerNode = 10
	FleetDefaultSlots         = 4
	FleetDefaultZipfS         = 1.1
	FleetDefaultInterval      = time.Second
)

// FleetOptions describes a fleet of fake nodes that one process serves: each node heartbeats to
// the gateways like an agent and answers inference with the fake backend on its own loopback
// address, so a thousand nodes need one process, not a thousand.
type FleetOptions struct {
	// Gateways receive the heartbeats: the first that accepts, every one when it answers that its
	// registry is its own (as an agent does).
	Gateways []string
	// Token is the cluster token.
	Token string
	// Nodes is the fleet's size; IDPrefix names them IDPrefix-0000, IDPrefix-0001, ...
	Nodes    int
	IDPrefix string
	// GPUs per node, Models in the catalogue, ModelsPerNode served by each node (all of them
	// resident, as an OpenAI-compatible server serves what it lists), Slots per node, and ZipfS
	// the exponent of model popularity (> 1).
	GPUs, Models, ModelsPerNode, Slots int
	ZipfS                              float64
	// Interval between one node's heartbeats.
	Interval time.Duration
	// Seed makes the fleet's layout (which node holds which model) reproducible.
	Seed uint64
	// Listen is the address of the fleet's health listener (default a free loopback port).
	Listen string
	// FullHeartbeats makes every heartbeat a full one, as agents before delta heartbeats sent
	// (agentapi.HeartbeatDelta); by default the fleet sends deltas to gateways that read them.
	FullHeartbeats bool
}

func (o FleetOptions) withDefaults() FleetOptions {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.GPUs, FleetDefaultGPUs)
	def(&o.Models, FleetDefaultModels)
	def(&o.ModelsPerNode, FleetDefaultModelsPerNode)
	def(&o.Slots, FleetDefaultSlots)
	o.ModelsPerNode = min(o.ModelsPerNode, o.Models)
	if o.ZipfS <= 1 {
		o.ZipfS = FleetDefaultZipfS
	}
	if o.Interval <= 0 {
		o.Interval = FleetDefaultInterval
	}
	if o.IDPrefix == "" {
		o.IDPrefix = "fleet"
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	return o
}

// FleetModel is the name of the catalogue's i-th model (0 is the most popular).
func FleetModel(i int) string { return fmt.Sprintf("fleet-model-%03d", i) }

// fleetNode is one fake node's state.
type fleetNode struct {
	hb       agentapi.Heartbeat
	inFlight atomic.Int32
}

// listenPerNode opens one listener per node, each on its own loopback address (127.77.x.y), all
// on one port chosen by the first.
func listenPerNode(n int) ([]net.Listener, error) {
	for range 5 {
		var lns []net.Listener
		port := "0"
		var err error
		for i := range n {
			var ln net.Listener
			ln, err = net.Listen("tcp", net.JoinHostPort(fmt.Sprintf("127.77.%d.%d", i/250, i%250+1), port))
			if err != nil {
				break
			}
			_, port, _ = net.SplitHostPort(ln.Addr().String())
			lns = append(lns, ln)
		}
		if err == nil {
			return lns, nil
		}
		for _, ln := range lns {
			ln.Close()
		}
	}
	return nil, fmt.Errorf("fake fleet: no port free on every node address")
}

// fleetLayout draws each node's models: ModelsPerNode distinct ones by Zipf popularity, so popular
// models sit on many nodes and the tail on few, as in a real multi-model fleet.
func fleetLayout(o FleetOptions) [][]int {
	r := mrand.New(mrand.NewPCG(o.Seed, 0x5ca1e))
	z := mrand.NewZipf(r, o.ZipfS, 1, uint64(o.Models-1))
	out := make([][]int, o.Nodes)
	for i := range out {
		seen := map[int]bool{}
		for len(out[i]) < o.ModelsPerNode {
			m := int(z.Uint64())
			if len(seen) > o.Models/2 { // the tail is slow to draw by Zipf: fill uniformly
				m = r.IntN(o.Models)
			}
			if !seen[m] {
				seen[m] = true
				out[i] = append(out[i], m)
			}
		}
	}
	return out
}

// ServeFleet runs a fake fleet until ctx ends. ready is called with the health listener's base
// URL once every node listens and before the first heartbeat.
func ServeFleet(ctx context.Context, o FleetOptions, ready func(url string)) error {
	o = o.withDefaults()
	if o.Nodes <= 0 || len(o.Gateways) == 0 {
		return fmt.Errorf("%w: a fleet needs nodes and a gateway", ErrBadOptions)
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return err
	}
	base := "http://" + ln.Addr().String()
	fake := NewFakeBackend(FaultOK, FakeOptions{})
	// Every node answers on an address of its own in 127.0.0.0/8 (Linux routes the whole block to
	// lo), so that the gateway keeps a connection pool per node as it does with real hosts:
	// a thousand nodes behind one address would share one pool and churn sockets.
	nodeLns, err := listenPerNode(o.Nodes)
	if err != nil {
		ln.Close()
		return err
	}
	list := make([]*fleetNode, 0, o.Nodes)
	started := time.Now()
	var servers []*http.Server
	for i, held := range fleetLayout(o) {
		id := fmt.Sprintf("%s-%04d", o.IDPrefix, i)
		var inst [8]byte
		_, _ = rand.Read(inst[:])
		n := &fleetNode{hb: agentapi.Heartbeat{
			NodeID: id, InstanceID: hex.EncodeToString(inst[:]), Address: "http://" + nodeLns[i].Addr().String(),
			Backend: "openai", Version: "loadtest-fleet", Hostname: id, Slots: o.Slots,
			IntervalMS: o.Interval.Milliseconds(), StartedAt: started,
		}}
		for g := range o.GPUs {
			n.hb.GPUs = append(n.hb.GPUs, agentapi.GPU{
				Index: g, Name: "NVIDIA A40", UUID: fmt.Sprintf("GPU-%s-%d", id, g),
				MemoryTotalBytes: 48 << 30, MemoryUsedBytes: 20 << 30, PowerLimitWatts: 300,
				SMClockMHz: 1740, ThrottleReasons: []string{}, Healthy: true,
			})
		}
		for _, m := range held {
			n.hb.Models = append(n.hb.Models, agentapi.Model{
				Name: FleetModel(m), OnDisk: true, Resident: true,
				SizeBytes: 5 << 30, VRAMBytes: 6 << 30, ParameterSize: "8.0B", Quantization: "Q4_K_M",
				TokensPerSecond: 60, PrefillTokensPerSecond: 2000, Concurrency: 1,
			})
		}
		if !o.FullHeartbeats {
			// The fleet's static part never changes: hashed once, not every second.
			n.hb.StaticHash = agentapi.StaticHash(&n.hb)
		}
		list = append(list, n)
		srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n.inFlight.Add(1)
			defer n.inFlight.Add(-1)
			fake.ServeHTTP(w, r)
		})}
		servers = append(servers, srv)
		go func() { _ = srv.Serve(nodeLns[i]) }()
	}
	defer func() {
		for _, srv := range servers {
			srv.Close()
		}
	}()
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	if ready != nil {
		ready(base)
	}

	var wg sync.WaitGroup
	for i, n := range list {
		// Spread the fleet's heartbeats evenly over the interval, as independent agents are.
		offset := time.Duration(int64(o.Interval) * int64(i) / int64(len(list)))
		// A client of its own per node: the gateway holds one keep-alive connection per agent,
		// as it does with a real fleet.
		wg.Go(func() { n.beat(ctx, agentapi.DefaultHTTPClient(), o, offset) })
	}
	wg.Wait()
	return nil
}

// beat sends n's heartbeat every interval, starting after offset, until ctx ends.
func (n *fleetNode) beat(ctx context.Context, hc *http.Client, o FleetOptions, offset time.Duration) {
	r := mrand.New(mrand.NewPCG(o.Seed, uint64(len(n.hb.NodeID))+uint64(offset)))
	links := make([]agentapi.HeartbeatLink, len(o.Gateways))
	for i, gw := range o.Gateways {
		links[i] = agentapi.HeartbeatLink{URL: gw, HC: hc}
	}
	t := time.NewTimer(offset)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		t.Reset(o.Interval)
		hb := n.hb
		hb.GPUs = append([]agentapi.GPU(nil), n.hb.GPUs...)
		// Telemetry moves between samples as a real GPU's does, so no two heartbeats are equal.
		for g := range hb.GPUs {
			hb.GPUs[g].UtilizationRatio = r.Float64()
			hb.GPUs[g].MemoryUtilizationRatio = r.Float64() / 2
			hb.GPUs[g].TemperatureCelsius = 45 + 20*r.Float64()
			hb.GPUs[g].PowerWatts = 80 + 200*r.Float64()
		}
		hb.InFlight = int(n.inFlight.Load())
		hb.SentAt = time.Now()
		for i, gw := range o.Gateways {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			var reply agentapi.HeartbeatReply
			var err error
			if o.FullHeartbeats {
				reply, err = agentapi.SendHeartbeat(cctx, hc, gw, o.Token, hb)
			} else {
				reply, err = links[i].Send(cctx, o.Token, hb)
			}
			cancel()
			if err == nil && reply.Registry == agentapi.RegistryShared {
				break
			}
			if err != nil && errors.Is(ctx.Err(), context.Canceled) {
				return
			}
		}
	}
}

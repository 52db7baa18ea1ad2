package scheduler

import (
	"testing"
	"time"
)

const gib = 1 << 30

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// gpuNode is a healthy idle node with a 24 GiB GPU, 4 slots and llama3.1:8b resident.
func gpuNode(id string) Node {
	return Node{
		ID: id, Address: "http://" + id + ":9090", Backend: "sim", Healthy: true, CanLoad: true,
		Slots: 4, VRAMTotalBytes: 24 * gib, VRAMUsedBytes: 6 * gib, MemoryBandwidthGBs: 936,
		Models: []NodeModel{{Name: "llama3.1:8b", Resident: true, OnDisk: true, VRAMBytes: 6 * gib, SizeBytes: 5 * gib, TokensPerSecond: 100, LastUsed: t0}},
	}
}

// with applies edits to a copy of n.
func with(n Node, edits ...func(*Node)) Node {
	n.Models = append([]NodeModel(nil), n.Models...)
	for _, e := range edits {
		e(&n)
	}
	return n
}

func load(inflight, queued int) func(*Node) {
	return func(n *Node) { n.InFlight, n.Queued = inflight, queued }
}

func speed(tps float64) func(*Node) {
	return func(n *Node) { n.Models[0].TokensPerSecond = tps }
}

// notResident makes the node's first model on disk only, its memory free.
func notResident(n *Node) {
	n.Models[0].Resident = false
	n.VRAMUsedBytes -= n.Models[0].VRAMBytes
}

func mustNew(t testing.TB, cfg Config) *Scheduler {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func policy(p string) Config {
	c := DefaultConfig()
	c.Policy = p
	return c
}

// order lists the candidates' node IDs, best first.
func order(snap *Snapshot, d *Decision) []string {
	ids := make([]string, len(d.Candidates))
	for i, c := range d.Candidates {
		ids[i] = snap.Nodes[c.Node].ID
	}
	return ids
}

// rejected maps the refused node IDs to their reasons.
func rejected(snap *Snapshot, d *Decision) map[string]Reason {
	m := map[string]Reason{}
	for _, r := range d.Rejections {
		m[snap.Nodes[r.Node].ID] = r.Reason
	}
	return m
}

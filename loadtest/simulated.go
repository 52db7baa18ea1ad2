package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// TargetNodes is what a herd target says about its nodes: how many, and which are simulated.
type TargetNodes struct {
	// Known is false when the target did not answer herd's admin API (not herd, or the key lacks
	// admin rights); the other fields are then empty.
	Known bool
	// Nodes lists every node's ID; Simulated those whose heartbeats say they are nodeagent/sim.
	Nodes     []string
	Simulated []string
	// Reason says why Known is false.
	Reason string
}

// AnySimulated reports whether some node of the target is simulated: a run's figures then come
// (at least partly) from simulated GPUs and are labelled so.
func (t TargetNodes) AnySimulated() bool { return len(t.Simulated) > 0 }

// maxNodesBody bounds the admin nodes answer read (a few KiB per node).
const maxNodesBody = 16 << 20

// ProbeTarget asks a herd target which of its nodes are simulated, from GET /admin/v1/nodes
// (the nodes' own heartbeats), authenticated with apiKey. A target that is not herd, or refuses
// the key, gives Known false and no error: the run goes on, unlabelled; only a failing context is
// an error.
func ProbeTarget(parent context.Context, client *http.Client, target, apiKey string) (TargetNodes, error) {
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	ctx, cancel := context.WithTimeout(parent, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL(target)+"/admin/v1/nodes", nil)
	if err != nil {
		return TargetNodes{Reason: err.Error()}, nil
	}
	if apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+apiKey)
	}
	resp, err := client.Do(req)
	if err != nil {
		if parent.Err() != nil {
			return TargetNodes{}, fmt.Errorf("loadtest: probing the target: %w", err)
		}
		return TargetNodes{Reason: err.Error()}, nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return TargetNodes{Reason: fmt.Sprintf("GET /admin/v1/nodes: HTTP %d", resp.StatusCode)}, nil
	}
	var doc struct {
		Nodes []struct {
			ID        string `json:"id"`
			Simulated bool   `json:"simulated"`
		} `json:"nodes"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxNodesBody)).Decode(&doc); err != nil {
		return TargetNodes{Reason: "GET /admin/v1/nodes: " + err.Error()}, nil
	}
	t := TargetNodes{Known: true, Nodes: []string{}, Simulated: []string{}}
	for _, n := range doc.Nodes {
		t.Nodes = append(t.Nodes, n.ID)
		if n.Simulated {
			t.Simulated = append(t.Simulated, n.ID)
		}
	}
	return t, nil
}

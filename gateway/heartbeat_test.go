package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/herd-llm/herd/gateway/registry"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

func TestHeartbeatRoute(t *testing.T) {
	env := newAdminEnv(t)
	valid := mustJSON(t, nodeBeat("a", nil))
	edit := func(f func(hb *agentapi.Heartbeat)) string {
		hb := nodeBeat("a", nil)
		f(&hb)
		return mustJSON(t, hb)
	}
	for _, tc := range []struct {
		name   string
		body   string
		status int
		code   string
	}{
		{"valid", valid, 200, ""},
		{"valid with trailing newline", valid + "\n", 200, ""},
		{"not json", "hello", 400, "invalid_json"},
		{"empty", "", 400, "invalid_json"},
		{"trailing data", valid + `{"node_id":"b"}`, 400, "invalid_json"},
		{"trailing garbage", valid + " x", 400, "invalid_json"},
		{"trailing data past the decoder's buffer", valid + strings.Repeat(" ", 64<<10) + "{}", 400, "invalid_json"},
		{"too large after the object", valid + strings.Repeat(" ", maxHeartbeatBytes), 413, "request_too_large"},
		{"wrong type", `{"node_id":7}`, 400, "invalid_json"},
		{"no node id", edit(func(hb *agentapi.Heartbeat) { hb.NodeID = "" }), 400, "missing_node_id"},
		{"node id with slash", edit(func(hb *agentapi.Heartbeat) { hb.NodeID = "a/b" }), 400, "invalid_node_id"},
		{"node id with space", edit(func(hb *agentapi.Heartbeat) { hb.NodeID = "a b" }), 400, "invalid_node_id"},
		{"node id too long", edit(func(hb *agentapi.Heartbeat) { hb.NodeID = strings.Repeat("x", 254) }), 400, "invalid_node_id"},
		{"no address", edit(func(hb *agentapi.Heartbeat) { hb.Address = "" }), 400, "missing_address"},
		{"address not a URL", edit(func(hb *agentapi.Heartbeat) { hb.Address = "10.0.0.5:9090" }), 400, "invalid_address"},
		{"address with credentials", edit(func(hb *agentapi.Heartbeat) { hb.Address = "http://u:p@10.0.0.5:9090" }), 400, "invalid_address"},
		{"address ftp", edit(func(hb *agentapi.Heartbeat) { hb.Address = "ftp://10.0.0.5" }), 400, "invalid_address"},
		{"negative in flight", edit(func(hb *agentapi.Heartbeat) { hb.InFlight = -1 }), 400, "invalid_heartbeat"},
		{"repeated GPU index", edit(func(hb *agentapi.Heartbeat) { hb.GPUs = append(hb.GPUs, hb.GPUs[0]) }), 400, "invalid_heartbeat"},
		{"model without name", edit(func(hb *agentapi.Heartbeat) { hb.Models[0].Name = "" }), 400, "invalid_heartbeat"},
		{"too large", `{"node_id":"a","hostname":"` + strings.Repeat("x", maxHeartbeatBytes) + `"}`, 413, "request_too_large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := env.do(http.MethodPost, agentapi.PathHeartbeat, tc.body)
			if tc.status != 200 {
				wantError(t, status, body, tc.status, tc.code)
				return
			}
			if status != 200 {
				t.Fatalf("%d %s", status, body)
			}
			var reply agentapi.HeartbeatReply
			if err := json.Unmarshal(body, &reply); err != nil || reply.Draining {
				t.Errorf("reply %s (%v)", body, err)
			}
		})
	}
	nodes := env.reg.Nodes()
	if len(nodes) != 1 || nodes[0].Heartbeat.NodeID != "a" || nodes[0].Heartbeat.Address != "http://127.0.0.1:1" {
		t.Errorf("registry holds %+v, want only node a from the valid heartbeats", nodes)
	}
}

// TestHeartbeatNodeIDConflict: while the holder of a node ID is fresh, every other claim — a
// second agent elsewhere, a new instance at the holder's address, the holder's own instance ID
// from another address — is refused with 409 in the OpenAI error shape, which names the holder's
// address but no instance ID; the node keeps its first agent. Once the holder is stale, a
// restarted agent takes the ID.
func TestHeartbeatNodeIDConflict(t *testing.T) {
	env := newAdminEnv(t)
	first := nodeBeat("dup", nil)
	first.InstanceID, first.Address = "instance-1-secret", "http://10.1.0.1:9090"
	second := first
	second.InstanceID, second.Address = "instance-2-secret", "http://10.1.0.2:9090"
	restarted := first
	restarted.InstanceID = "instance-1b-secret"
	sniffed := first
	sniffed.Address = second.Address
	for _, tc := range []struct {
		name      string
		hb        agentapi.Heartbeat
		waitStale bool
		status    int
	}{
		{"first agent", first, false, 200},
		{"second agent elsewhere", second, false, 409},
		{"first agent again", first, false, 200},
		{"a new instance at the holder's address", restarted, false, 409},
		{"the holder's instance from another address", sniffed, false, 409},
		{"restarted agent once the holder is stale", restarted, true, 200},
		{"second agent still refused", second, false, 409},
	} {
		if tc.waitStale {
			env.clock.Advance(4 * time.Second)
		}
		status, body := env.do(http.MethodPost, agentapi.PathHeartbeat, mustJSON(t, tc.hb))
		if tc.status != 200 {
			wantError(t, status, body, tc.status, agentapi.CodeNodeIDConflict)
			if !bytes.Contains(body, []byte(`"param":"node_id"`)) || !bytes.Contains(body, []byte("is held by a live agent at http://10.1.0.1:9090")) {
				t.Errorf("%s: the refusal does not name the holder: %s", tc.name, body)
			}
			if bytes.Contains(body, []byte("-secret")) {
				t.Errorf("%s: the refusal reveals an instance ID: %s", tc.name, body)
			}
			continue
		}
		if status != 200 {
			t.Fatalf("%s: %d %s", tc.name, status, body)
		}
	}
	if v, _ := env.reg.Node("dup"); v.Heartbeat.Address != first.Address || v.Heartbeat.InstanceID != restarted.InstanceID {
		t.Fatalf("node dup is %s (%s), want the restarted first agent", v.Heartbeat.Address, v.Heartbeat.InstanceID)
	}
	for _, path := range []string{"/admin/v1/nodes", "/admin/v1/nodes/dup", "/metrics"} {
		if _, body := env.do(http.MethodGet, path, ""); bytes.Contains(body, []byte("-secret")) {
			t.Errorf("%s reveals an instance ID: %s", path, body)
		}
	}
	if _, body := env.do(http.MethodGet, "/metrics", ""); !bytes.Contains(body, []byte(`herd_heartbeats_refused_total{node="dup"} 4`)) {
		t.Errorf("/metrics does not count the four refusals")
	}
}

// FuzzDecodeHeartbeat feeds arbitrary bodies to the heartbeat parser: it must never panic, and
// whatever it accepts must be safe to record and to export as metrics.
func FuzzDecodeHeartbeat(f *testing.F) {
	hb := nodeBeat("node-1", nil)
	hb.GPUs[0].ThrottleReasons = []string{agentapi.ThrottleSWPowerCap}
	seed, _ := json.Marshal(hb)
	f.Add(seed)
	f.Add([]byte(`{"node_id":"n","address":"http://h:1"}`))
	f.Add([]byte(`{"node_id":"n","address":"http://h:1","gpus":[{"index":0},{"index":0}]}`))
	f.Add([]byte(`{"node_id":"n","address":"http://h:1","models":[{"name":"a"},{"name":"A:latest","resident":true}]}`))
	f.Add([]byte(`{"node_id":"\u00ff\ufffd","address":"https://[::1]:8080"}`))
	f.Add([]byte(`{"node_id":"n","address":"http://h:1"} trailing`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"interval_ms":-5}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		hb, err := decodeHeartbeat(bytes.NewReader(body))
		if err != nil {
			var ae *APIError
			if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
				t.Fatalf("error %v is not a 400 APIError", err)
			}
			return
		}
		if hb.NodeID == "" || hb.Address == "" {
			t.Fatalf("accepted a heartbeat without node or address: %+v", hb)
		}
		reg := registry.New(registry.Config{}, nil)
		reg.SetLogger(slog.New(slog.DiscardHandler))
		reg.Observe(hb)
		if s := reg.Snapshot(); len(s.Nodes) != 1 || s.Nodes[0].ID != hb.NodeID {
			t.Fatalf("snapshot %+v", s)
		}
		// Its series parse, and are the ones the client_golang collector exported.
		checkClusterMatchesCollector(t, reg)
	})
}

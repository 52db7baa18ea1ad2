package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/herd-llm/herd/gateway/registry"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// postDelta posts a delta heartbeat body and returns the status and body.
func (e *adminEnv) postDelta(body []byte) (int, []byte) {
	e.t.Helper()
	resp, err := e.http.Client().Post(e.http.URL+agentapi.PathHeartbeat, agentapi.ContentTypeHeartbeatDelta, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, b
}

// deltaBeat is node id's heartbeat (nodeBeat) with an instance and its static hash.
func deltaBeat(id string) agentapi.Heartbeat {
	hb := nodeBeat(id, nil)
	hb.InstanceID = "inst-" + id
	hb.StaticHash = agentapi.StaticHash(&hb)
	return hb
}

func encodeDelta(t *testing.T, hb agentapi.Heartbeat, mutate func(d *agentapi.HeartbeatDelta)) []byte {
	t.Helper()
	d := agentapi.DeltaOf(&hb)
	if mutate != nil {
		mutate(&d)
	}
	b, err := d.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHeartbeatDeltaRoute: a delta is applied onto the full heartbeat the gateway holds; one it
// cannot apply is answered 412 heartbeat_base_unknown (send the full one), a malformed one 400,
// and neither changes what the registry holds.
func TestHeartbeatDeltaRoute(t *testing.T) {
	env := newAdminEnv(t)
	full := deltaBeat("a")
	status, body := env.do(http.MethodPost, agentapi.PathHeartbeat, mustJSON(t, full))
	var reply agentapi.HeartbeatReply
	if status != 200 || json.Unmarshal(body, &reply) != nil || reply.DeltaVersion != agentapi.DeltaVersion {
		t.Fatalf("full heartbeat: %d %s, want 200 announcing delta version %d", status, body, agentapi.DeltaVersion)
	}
	next := full
	next.GPUs = []agentapi.GPU{full.GPUs[0]}
	next.GPUs[0].UtilizationRatio, next.GPUs[0].TemperatureCelsius = 0.93, 77
	next.Models = []agentapi.Model{full.Models[0]}
	next.Models[0].InFlight, next.InFlight = 2, 2
	valid := encodeDelta(t, next, nil)
	edit := func(f func(d *agentapi.HeartbeatDelta)) []byte { return encodeDelta(t, next, f) }
	for _, tc := range []struct {
		name   string
		body   []byte
		status int
		code   string
	}{
		{"unknown node", edit(func(d *agentapi.HeartbeatDelta) { d.NodeID = "b" }), 412, agentapi.CodeHeartbeatBaseUnknown},
		{"another instance", edit(func(d *agentapi.HeartbeatDelta) { d.InstanceID = "other" }), 412, agentapi.CodeHeartbeatBaseUnknown},
		{"another static part", edit(func(d *agentapi.HeartbeatDelta) { d.StaticHash = "1234" }), 412, agentapi.CodeHeartbeatBaseUnknown},
		{"a model more", edit(func(d *agentapi.HeartbeatDelta) { d.Models = append(d.Models, d.Models[0]) }), 412, agentapi.CodeHeartbeatBaseUnknown},
		{"not a delta", []byte(mustJSON(t, full)), 400, "invalid_heartbeat"},
		{"empty", nil, 400, "invalid_heartbeat"},
		{"truncated", valid[:len(valid)-1], 400, "invalid_heartbeat"},
		{"no node id", edit(func(d *agentapi.HeartbeatDelta) { d.NodeID = "" }), 400, "missing_node_id"},
		{"node id with slash", edit(func(d *agentapi.HeartbeatDelta) { d.NodeID = "a/b" }), 400, "invalid_node_id"},
		{"no static hash", edit(func(d *agentapi.HeartbeatDelta) { d.StaticHash = "" }), 400, "invalid_heartbeat"},
		{"too large", append(bytes.Clone(valid), make([]byte, maxHeartbeatBytes)...), 413, "request_too_large"},
		{"valid", valid, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := env.postDelta(tc.body)
			if tc.status != 200 {
				wantError(t, status, body, tc.status, tc.code)
				return
			}
			var reply agentapi.HeartbeatReply
			if status != 200 || json.Unmarshal(body, &reply) != nil || reply.DeltaVersion != agentapi.DeltaVersion ||
				reply.Registry != agentapi.RegistryLocal {
				t.Fatalf("%d %s", status, body)
			}
		})
	}
	nodes := env.reg.Nodes()
	if len(nodes) != 1 {
		t.Fatalf("registry holds %d nodes, want node a only", len(nodes))
	}
	got := nodes[0].Heartbeat
	if got.GPUs[0].UtilizationRatio != 0.93 || got.GPUs[0].TemperatureCelsius != 77 || got.InFlight != 2 ||
		got.Models[0].InFlight != 2 || got.GPUs[0].UUID != full.GPUs[0].UUID || got.Address != full.Address ||
		got.StaticHash != full.StaticHash {
		t.Errorf("registry holds %+v, want the full heartbeat with the delta's telemetry", got)
	}
	if _, body := env.do(http.MethodGet, "/metrics", ""); !bytes.Contains(body, []byte("herd_heartbeat_deltas_total 1")) {
		t.Errorf("/metrics does not count the accepted delta")
	}
}

// TestHeartbeatReplyJSON holds the hand-written reply to what encoding/json writes.
func TestHeartbeatReplyJSON(t *testing.T) {
	gin.SetMode(gin.TestMode)
	for _, reply := range []agentapi.HeartbeatReply{
		{},
		{Draining: true},
		{Registry: agentapi.RegistryShared, DeltaVersion: agentapi.DeltaVersion},
		{Draining: true, Registry: agentapi.RegistryLocal, DeltaVersion: 7},
		{Registry: `quote" and \ ü`},
	} {
		w := httptest.NewRecorder()
		c, _ := gin.CreateTestContext(w)
		writeHeartbeatReply(c, reply)
		want, _ := json.Marshal(reply)
		if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
			t.Fatalf("%d %q", w.Code, w.Header().Get("Content-Type"))
		}
		var got, exp any
		if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
			t.Fatalf("reply %s is not JSON: %v", w.Body.Bytes(), err)
		}
		_ = json.Unmarshal(want, &exp)
		g, _ := json.Marshal(got)
		e, _ := json.Marshal(exp)
		if !bytes.Equal(g, e) {
			t.Errorf("wrote %s, encoding/json writes %s", w.Body.Bytes(), want)
		}
	}
}

// FuzzDecodeHeartbeatDelta feeds arbitrary bodies to the delta route's parser: it must never
// panic, answer only 400s, and whatever it accepts must be safe to apply and record.
func FuzzDecodeHeartbeatDelta(f *testing.F) {
	hb := deltaBeat("node-1")
	hb.GPUs[0].ThrottleReasons = []string{agentapi.ThrottleSWPowerCap}
	d := agentapi.DeltaOf(&hb)
	seed, _ := d.AppendBinary(nil)
	f.Add(seed)
	f.Add(seed[:len(seed)/3])
	f.Add([]byte{1, 1, 'n', 0, 1, 'h', 0, 0, 0, 0, 0, 0, 0, 0, 0})
	full, _ := json.Marshal(hb)
	f.Fuzz(func(t *testing.T, body []byte) {
		var d agentapi.HeartbeatDelta
		err := decodeHeartbeatDelta(bytes.NewReader(body), &d)
		if err != nil {
			var ae *APIError
			if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
				t.Fatalf("error %v is not a 400 APIError", err)
			}
			return
		}
		if d.NodeID == "" || d.StaticHash == "" {
			t.Fatalf("accepted a delta without node or static hash: %+v", d)
		}
		reg := registry.New(registry.Config{}, nil)
		reg.SetLogger(slog.New(slog.DiscardHandler))
		var base agentapi.Heartbeat
		_ = json.Unmarshal(full, &base)
		base.NodeID, base.InstanceID, base.StaticHash = d.NodeID, d.InstanceID, d.StaticHash
		base.GPUs, base.Models = base.GPUs[:0], base.Models[:0]
		for i := range d.GPUs {
			base.GPUs = append(base.GPUs, agentapi.GPU{Index: i, Name: "Tesla T4"})
		}
		for i := range d.Models {
			base.Models = append(base.Models, agentapi.Model{Name: "m" + string(rune('a'+i%26)) + string(rune('a'+i/26%26))})
		}
		if _, err := reg.Observe(base); err != nil {
			t.Fatal(err)
		}
		if _, err := reg.AcceptDelta(t.Context(), &d); err != nil {
			t.Fatalf("a decoded delta onto a matching base: %v", err)
		}
		checkClusterMatchesCollector(t, reg)
		if _, err := json.Marshal(reg.Nodes()); err != nil {
			t.Fatalf("the node view does not encode: %v", err)
		}
	})
}

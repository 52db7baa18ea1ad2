package agentapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// beatGateway answers heartbeats as a gateway does: it keeps the last full heartbeat, applies
// deltas onto it, and answers 412 heartbeat_base_unknown when it holds none. deltaVersion 0 is
// an older gateway: it announces nothing and answers a delta 400, as its JSON decoder would.
type beatGateway struct {
	mu           sync.Mutex
	deltaVersion int
	held         *Heartbeat
	got          []string // "full" or "delta" per accepted heartbeat, "412"/"400" per refusal
	refuse       int      // answer the next deltas with this status (409 conflict)
}

func (g *beatGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	body, _ := io.ReadAll(r.Body)
	errorOut := func(status int, code string) {
		g.got = append(g.got, http.StatusText(status))
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": code, "code": code}})
	}
	if r.Header.Get("Content-Type") == ContentTypeHeartbeatDelta {
		if g.deltaVersion == 0 {
			errorOut(http.StatusBadRequest, "invalid_json")
			return
		}
		if g.refuse != 0 {
			errorOut(g.refuse, CodeNodeIDConflict)
			return
		}
		var d HeartbeatDelta
		if err := d.UnmarshalBinary(body); err != nil {
			errorOut(http.StatusBadRequest, "invalid_heartbeat")
			return
		}
		var hb Heartbeat
		if g.held == nil || d.ApplyTo(g.held, &hb) != nil {
			errorOut(http.StatusPreconditionFailed, CodeHeartbeatBaseUnknown)
			return
		}
		g.held = &hb
		g.got = append(g.got, "delta")
	} else {
		var hb Heartbeat
		if err := json.Unmarshal(body, &hb); err != nil {
			errorOut(http.StatusBadRequest, "invalid_json")
			return
		}
		g.held = &hb
		g.got = append(g.got, "full")
	}
	_ = json.NewEncoder(w).Encode(HeartbeatReply{Registry: RegistryLocal, DeltaVersion: g.deltaVersion})
}

func (g *beatGateway) take() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := g.got
	g.got = nil
	return out
}

func TestHeartbeatLink(t *testing.T) {
	g := &beatGateway{deltaVersion: DeltaVersion}
	srv := httptest.NewServer(g)
	defer srv.Close()
	l := &HeartbeatLink{URL: srv.URL}
	ctx := context.Background()
	hb := richBeat()
	hb.StaticHash = ""
	send := func(want ...string) {
		t.Helper()
		if _, err := l.Send(ctx, "tok", hb); err != nil && want[len(want)-1] != "error" {
			t.Fatalf("Send: %v", err)
		}
		got := g.take()
		if want[len(want)-1] == "error" {
			want = want[:len(want)-1]
		}
		if len(got) != len(want) {
			t.Fatalf("gateway saw %v, want %v", got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("gateway saw %v, want %v", got, want)
			}
		}
	}
	send("full")  // first: the gateway holds nothing
	send("delta") // then telemetry only
	hb.GPUs[0].TemperatureCelsius = 80
	send("delta")
	if g.held.GPUs[0].TemperatureCelsius != 80 || g.held.Hostname != hb.Hostname {
		t.Fatalf("the gateway holds %+v", g.held)
	}

	// The static part changed: the full heartbeat again.
	hb.Models = hb.Models[:2]
	send("full")
	send("delta")

	// The gateway restarted: it holds nothing, asks for the full one, gets it in the same Send.
	g.mu.Lock()
	g.held = nil
	g.mu.Unlock()
	send(http.StatusText(http.StatusPreconditionFailed), "full")
	send("delta")

	// A refusal of the node is not answered with the full heartbeat.
	g.mu.Lock()
	g.refuse = http.StatusConflict
	g.mu.Unlock()
	send(http.StatusText(http.StatusConflict), "error")
	g.mu.Lock()
	g.refuse = 0
	g.mu.Unlock()
	send("delta")
	if l.Fulls != 3 || l.Deltas != 5 {
		t.Errorf("link counted %d full and %d delta heartbeats, want 3 and 5", l.Fulls, l.Deltas)
	}
}

// TestHeartbeatLinkOlderGateway: a gateway that does not announce deltas gets full heartbeats
// only, and one that stops announcing them (replaced by an older one) gets them again at once.
func TestHeartbeatLinkOlderGateway(t *testing.T) {
	g := &beatGateway{}
	srv := httptest.NewServer(g)
	defer srv.Close()
	l := &HeartbeatLink{URL: srv.URL}
	hb := richBeat()
	for range 3 {
		if _, err := l.Send(context.Background(), "", hb); err != nil {
			t.Fatal(err)
		}
	}
	if got := g.take(); len(got) != 3 || got[0] != "full" || got[1] != "full" || got[2] != "full" {
		t.Fatalf("an older gateway saw %v", got)
	}

	g.mu.Lock()
	g.deltaVersion = DeltaVersion
	g.mu.Unlock()
	_, _ = l.Send(context.Background(), "", hb)
	_, _ = l.Send(context.Background(), "", hb)
	g.mu.Lock()
	g.deltaVersion = 0 // replaced by an older gateway that answers a delta 400
	g.mu.Unlock()
	if _, err := l.Send(context.Background(), "", hb); err != nil {
		t.Fatal(err)
	}
	if got := g.take(); len(got) != 4 || got[1] != "delta" || got[2] != http.StatusText(http.StatusBadRequest) || got[3] != "full" {
		t.Fatalf("gateway saw %v, want full, delta, 400, full", got)
	}
}

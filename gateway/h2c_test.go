package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// TestAgentH2CTransport: with AgentH2C the transport to agents speaks HTTP/2 without TLS to an
// http:// agent, and concurrent requests share one connection.
func TestAgentH2CTransport(t *testing.T) {
	var mu sync.Mutex
	remotes := map[string]bool{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		remotes[r.RemoteAddr] = true
		mu.Unlock()
		if r.ProtoMajor != 2 {
			http.Error(w, "want HTTP/2, got "+r.Proto, http.StatusHTTPVersionNotSupported)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &p
	srv.Start()
	defer srv.Close()

	tr := withAgentH2C(newAgentTransport())
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	get := func() {
		resp, err := c.Get(srv.URL)
		if err != nil {
			t.Error(err)
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
			b, _ := io.ReadAll(resp.Body)
			t.Errorf("status %d proto %s: %s", resp.StatusCode, resp.Proto, b)
		}
	}
	get() // the connection, then requests on it
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(get)
	}
	wg.Wait()
	if len(remotes) != 1 {
		t.Errorf("20 concurrent requests came over %d connections, want 1", len(remotes))
	}
}

package main

import (
	"bytes"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestAPIKeysAndLimits(t *testing.T) {
	c := startGateway(t, "--api-keys", "key-one,key-two", "--max-body-bytes", "4096")
	c.addSimAgent("auth-node", "t4")
	send := func(key, body string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, c.url+"/v1/chat/completions", strings.NewReader(body))
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(data)
	}
	chat := `{"model":"llama3.2:1b","max_tokens":4,"messages":[{"role":"user","content":"hi"}]}`
	tests := []struct {
		name, key, body string
		status          int
		contains        string
	}{
		{"no key", "", chat, 401, `"invalid_request_error"`},
		{"wrong key", "nope", chat, 401, `"invalid_api_key"`},
		{"too large", "key-one", `{"model":"llama3.2:1b","messages":[{"role":"user","content":"` + strings.Repeat("x", 5000) + `"}]}`, 413, `"error"`},
		{"missing model", "key-two", `{"messages":[]}`, 400, `"param":"model"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := send(tt.key, tt.body)
			if status != tt.status || !strings.Contains(body, tt.contains) {
				t.Fatalf("got %d %s; want %d with %s", status, body, tt.status, tt.contains)
			}
		})
	}
	// The agent registers with the cluster token, not an API key; then a key-holder is served.
	waitFor(t, 30*time.Second, "node registered", func() bool {
		status, _ := send("key-one", chat)
		return status == http.StatusOK
	})
}

// With no API key the gateway refuses to listen beyond loopback, and says why.
func TestNoKeyRefusesNonLoopback(t *testing.T) {
	cmd := exec.Command(herdBinary(t), "gateway", "--listen", "0.0.0.0:0", "--data", t.TempDir(), "--cluster-token", "x")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if err == nil || !strings.Contains(stderr.String(), "API key") {
		t.Fatalf("gateway on 0.0.0.0 without keys: err=%v stderr=%s", err, stderr.String())
	}
}

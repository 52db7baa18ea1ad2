package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "herd.yaml")
	if err := os.WriteFile(file, []byte("gateway:\n  listen: 127.0.0.1:7000\n  data_dir: /from-file\n  max_attempts: 5\n  api_keys: [file-key]\n  heartbeat_interval: 3s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name         string
		env          map[string]string
		args         []string
		wantListen   string
		wantData     string
		wantAttempts int
		wantKeys     []string
	}{
		{"file only", nil, nil, "127.0.0.1:7000", "/from-file", 5, []string{"file-key"}},
		{"env beats file", map[string]string{"HERD_DATA": "/from-env", "HERD_API_KEYS": "a,b"}, nil, "127.0.0.1:7000", "/from-env", 5, []string{"a", "b"}},
		{"flag beats env", map[string]string{"HERD_DATA": "/from-env", "HERD_API_KEYS": "a"}, []string{"--data", "/from-flag", "--max-attempts", "2", "--api-keys", "x,y"}, "127.0.0.1:7000", "/from-flag", 2, []string{"x", "y"}},
		{"env for a field the file sets", map[string]string{"HERD_LISTEN": "127.0.0.1:7100"}, nil, "127.0.0.1:7100", "/from-file", 5, []string{"file-key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			t.Setenv("HERD_CONFIG", file)
			doc := defaultDocument()
			cmd := gatewayCmd(&doc)
			if err := cmd.ParseFlags(tt.args); err != nil {
				t.Fatal(err)
			}
			if err := layerConfig(cmd, &doc); err != nil {
				t.Fatal(err)
			}
			g := doc.Gateway
			if g.Listen != tt.wantListen || g.DataDir != tt.wantData || g.MaxAttempts != tt.wantAttempts || !slices.Equal(g.APIKeys, tt.wantKeys) {
				t.Fatalf("got listen=%s data=%s attempts=%d keys=%v", g.Listen, g.DataDir, g.MaxAttempts, g.APIKeys)
			}
			if g.HeartbeatInterval != 3*time.Second {
				t.Fatalf("heartbeat interval from file lost: %s", g.HeartbeatInterval)
			}
		})
	}
}

func TestConfigRejectsUnknownKeys(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(file, []byte("gateway:\n  listne: 127.0.0.1:1\n"), 0o644)
	t.Setenv("HERD_CONFIG", file)
	doc := defaultDocument()
	cmd := gatewayCmd(&doc)
	if err := layerConfig(cmd, &doc); err == nil {
		t.Fatal("a misspelt key was accepted")
	}
}

// The example configuration in deploy/ must stay loadable with the current config structs.
func TestExampleConfigParses(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "deploy", "herd.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	doc := defaultDocument()
	dec := yaml.NewDecoder(bytesReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if err := doc.Gateway.Validate(); err != nil {
		t.Fatal(err)
	}
	// The tenants of the example are the ones its comments describe.
	if ts := doc.Gateway.Tenants; len(ts) != 3 || ts[0].Name != "support-app" || ts[0].RequestsPerMinute != 600 ||
		ts[1].KeySHA256 == "" || ts[2].Scopes[0] != "admin" {
		t.Fatalf("example tenants = %+v", ts)
	}
	if doc.Gateway.IdleTimeout != 2*time.Minute || doc.Gateway.BodyReadTimeout != 30*time.Second {
		t.Fatalf("example timeouts: idle %s, body %s", doc.Gateway.IdleTimeout, doc.Gateway.BodyReadTimeout)
	}
}

// A config file saved with a UTF-8 byte order mark loads like one without.
func TestConfigWithBOM(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bom.yaml")
	os.WriteFile(file, []byte("\xef\xbb\xbfgateway:\n  tenants:\n    - {name: a, key: sk-a-0123456789, requests_per_minute: 5}\n"), 0o644)
	t.Setenv("HERD_CONFIG", file)
	doc := defaultDocument()
	cmd := gatewayCmd(&doc)
	if err := layerConfig(cmd, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Gateway.Tenants) != 1 || doc.Gateway.Tenants[0].RequestsPerMinute != 5 {
		t.Fatalf("tenants = %+v", doc.Gateway.Tenants)
	}
}

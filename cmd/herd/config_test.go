package main

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/herd-llm/herd/gateway/batch"
	"github.com/herd-llm/herd/nodeagent"
	"github.com/herd-llm/herd/scheduler"
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

	// Every setting of the config structs is in the example, so it documents them all.
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	yamlPaths(root.Content[0], "", have)
	for _, want := range configPaths(reflect.TypeFor[document](), "") {
		if !have[want] {
			t.Errorf("deploy/herd.example.yaml lacks %s", want)
		}
	}
	// The sections it says hold the defaults do; the agent listens where its flag does.
	if doc.Agent.Listen != nodeagent.DefaultListen {
		t.Errorf("example agent listen %q, the default is %q", doc.Agent.Listen, nodeagent.DefaultListen)
	}
	wantBatch := batch.DefaultConfig()
	wantBatch.MaxLineBytes = 0 // the gateway's max_body_bytes
	if doc.Gateway.Batch != wantBatch {
		t.Errorf("example batch %+v, defaults %+v", doc.Gateway.Batch, wantBatch)
	}
	if sc := scheduler.DefaultConfig(); doc.Gateway.Scheduler != sc {
		t.Errorf("example scheduler %+v, defaults %+v", doc.Gateway.Scheduler, sc)
	}
	def := defaultDocument()
	def.Agent.NodeID, def.Agent.GatewayURLs, def.Agent.ClusterToken = "", doc.Agent.GatewayURLs, doc.Agent.ClusterToken // hostname; marked examples
	def.Agent.Version = doc.Agent.Version
	if !doc.Agent.Tracing.IsZero() || !doc.Gateway.Tracing.IsZero() {
		t.Errorf("example tracing sets something: %+v, %+v", doc.Gateway.Tracing, doc.Agent.Tracing)
	}
	def.Agent.Tracing = doc.Agent.Tracing // {} and nil maps alike
	if !reflect.DeepEqual(doc.Agent, def.Agent) {
		t.Errorf("example agent section %+v, defaults %+v", doc.Agent, def.Agent)
	}
}

// configPaths lists the dotted YAML keys of t's settings ("gateway.batch.concurrency"): a
// struct's tagged fields, inline structs flattened, slices of structs as their element's keys.
func configPaths(t reflect.Type, prefix string) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		ft := f.Type
		if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
			ft = ft.Elem()
		}
		if opts == "inline" {
			out = append(out, configPaths(ft, prefix)...)
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		path := prefix + name
		if ft.Kind() == reflect.Struct && ft != reflect.TypeFor[time.Time]() {
			out = append(out, configPaths(ft, path+".")...)
			continue
		}
		out = append(out, path)
	}
	return out
}

// yamlPaths records in have the dotted keys of a YAML mapping, the keys of every element of a
// sequence of mappings under its own key.
func yamlPaths(n *yaml.Node, prefix string, have map[string]bool) {
	if n.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		path := prefix + n.Content[i].Value
		have[path] = true
		switch v := n.Content[i+1]; v.Kind {
		case yaml.MappingNode:
			yamlPaths(v, path+".", have)
		case yaml.SequenceNode:
			for _, e := range v.Content {
				yamlPaths(e, path+".", have)
			}
		}
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

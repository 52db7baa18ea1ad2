package nodeagent

import (
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	good := func() Config {
		c := DefaultConfig()
		c.NodeID = "n1"
		c.ClusterToken = "tok"
		c.GatewayURLs = []string{"http://gw:8080", "https://gw2"}
		return c
	}
	if err := good().Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no node id", func(c *Config) { c.NodeID = "" }, "node id"},
		{"no token", func(c *Config) { c.ClusterToken = "" }, "cluster token"},
		{"bad listen", func(c *Config) { c.Listen = "8090" }, "listen address"},
		{"bad gateway", func(c *Config) { c.GatewayURLs = []string{"gw:8080"} }, "gateway url"},
		{"bad advertise", func(c *Config) { c.Advertise = "10.0.0.1:8090" }, "advertise"},
		{"zero heartbeat", func(c *Config) { c.HeartbeatInterval = 0 }, "heartbeat interval"},
		{"negative telemetry", func(c *Config) { c.TelemetryInterval = -time.Second }, "telemetry interval"},
		{"negative slots", func(c *Config) { c.Slots = -1 }, "slots"},
		{"zero body", func(c *Config) { c.MaxBodyBytes = 0 }, "max body"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.mod(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate = %v, want an error about %q", err, tc.want)
			}
		})
	}
	// New fills zero fields from DefaultConfig before validating.
	a, err := New(Config{NodeID: "n", ClusterToken: "t"}, &fakeBackend{}, nil)
	if err != nil {
		t.Fatalf("New with zero fields: %v", err)
	}
	if a.cfg.HeartbeatInterval != time.Second || a.cfg.Listen != DefaultListen || a.cfg.MaxBodyBytes <= 0 {
		t.Errorf("defaults not applied: %+v", a.cfg)
	}
	if _, err := New(Config{NodeID: "n"}, &fakeBackend{}, nil); err == nil {
		t.Error("New without a cluster token succeeded")
	}
	if _, err := New(Config{NodeID: "n", ClusterToken: "t"}, nil, nil); err == nil {
		t.Error("New without a backend succeeded")
	}
}

func TestDeriveAdvertise(t *testing.T) {
	for _, tc := range []struct {
		listen, want string
	}{
		{"127.0.0.1:8090", "http://127.0.0.1:8090"},
		{"10.1.2.3:9000", "http://10.1.2.3:9000"},
		{"[::1]:8090", "http://[::1]:8090"},
		{"127.0.0.1:0", ""},
		{"nonsense", ""},
	} {
		if got := deriveAdvertise(tc.listen); got != tc.want {
			t.Errorf("deriveAdvertise(%q) = %q, want %q", tc.listen, got, tc.want)
		}
	}
	// An unspecified host becomes some reachable name: a URL with a host and the same port.
	for _, listen := range []string{":8090", "0.0.0.0:8090"} {
		u, err := url.Parse(deriveAdvertise(listen))
		if err != nil || u.Hostname() == "" || u.Hostname() == "0.0.0.0" || u.Port() != "8090" {
			t.Errorf("deriveAdvertise(%q) = %v (%v)", listen, u, err)
		}
	}
}

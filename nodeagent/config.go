package nodeagent

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/herd-llm/herd/tracing"
)

// DefaultListen is the address an agent serves on when none is set: every interface, because
// the gateway reaches agents over the LAN (the backend itself stays on loopback).
const DefaultListen = ":8090"

// DefaultSlots is the number of parallel requests assumed when neither the configuration nor the
// backend says (Ollama's own default for OLLAMA_NUM_PARALLEL is 4 on most machines).
const DefaultSlots = 4

// Config is the agent's configuration. Zero values are replaced by DefaultConfig's in New.
type Config struct {
	// NodeID names the node in the cluster; it must be unique. Default: the host name.
	NodeID string `yaml:"node_id"`
	// Listen is the address the agent serves on.
	Listen string `yaml:"listen"`
	// Advertise is the URL the gateway should use to reach this agent ("http://10.0.0.5:8090").
	// Empty: derived from Listen (and from the real port when Listen's port is 0).
	Advertise string `yaml:"advertise"`
	// GatewayURLs are the gateways heartbeats go to; with none the agent only serves.
	GatewayURLs []string `yaml:"gateway_urls"`
	// ClusterToken authenticates the gateway to the agent and the agent to the gateway and peers.
	ClusterToken string `yaml:"cluster_token"`
	// HeartbeatInterval is how often heartbeats are sent.
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// TelemetryInterval is how often GPUs and the backend's model list are sampled.
	TelemetryInterval time.Duration `yaml:"telemetry_interval"`
	// Slots is how many requests the node serves at once. 0: ask the backend (SlotCounter),
	// else DefaultSlots.
	Slots int `yaml:"slots"`
	// MaxBodyBytes bounds inference request bodies (413 past it).
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// Tracing configures OpenTelemetry traces (off unless an endpoint is set here or in the
	// OTEL_* environment); the process sets the provider up and passes it with WithTracerProvider.
	Tracing tracing.Config `yaml:"tracing"`
	// Version is reported in heartbeats.
	Version string `yaml:"-"`
	// Certs, when set, are the node's certificates from joining (certs.go): the agent then serves
	// HTTPS, admits gateways by their client certificates, and reaches gateways with its own; the
	// cluster token is not needed.
	Certs *NodeCerts `yaml:"-"`
	// GatewayTLS, without Certs (the token lab mode), is the TLS client configuration for
	// https gateways, e.g. trusting their cluster CA (--ca-file); nil: the system's roots.
	GatewayTLS *tls.Config `yaml:"-"`
}

// DefaultConfig returns the configuration an agent runs with when nothing is set. The cluster
// token has no default: it must be configured.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		NodeID:            host,
		Listen:            DefaultListen,
		HeartbeatInterval: time.Second,
		TelemetryInterval: time.Second,
		MaxBodyBytes:      32 << 20,
		Version:           "dev",
	}
}

// withDefaults fills the zero fields of c from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.NodeID == "" {
		c.NodeID = d.NodeID
	}
	if c.Listen == "" {
		c.Listen = d.Listen
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = d.HeartbeatInterval
	}
	if c.TelemetryInterval == 0 {
		c.TelemetryInterval = d.TelemetryInterval
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = d.MaxBodyBytes
	}
	if c.Version == "" {
		c.Version = d.Version
	}
	return c
}

// Validate reports a configuration the agent cannot run with.
func (c Config) Validate() error {
	var errs []error
	if c.NodeID == "" {
		errs = append(errs, errors.New("node id is empty"))
	}
	if c.Listen == "" {
		errs = append(errs, errors.New("listen address is empty"))
	} else if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen address %q: %w", c.Listen, err))
	}
	if c.Advertise != "" {
		if err := checkHTTPURL(c.Advertise); err != nil {
			errs = append(errs, fmt.Errorf("advertise: %w", err))
		}
	}
	for _, g := range c.GatewayURLs {
		if err := checkHTTPURL(g); err != nil {
			errs = append(errs, fmt.Errorf("gateway url: %w", err))
		}
	}
	if c.ClusterToken == "" && c.Certs == nil {
		errs = append(errs, errors.New("cluster token is empty (or join the cluster: herd agent --join URL --token TOKEN)"))
	}
	if c.HeartbeatInterval <= 0 {
		errs = append(errs, fmt.Errorf("heartbeat interval %v is not positive", c.HeartbeatInterval))
	}
	if c.TelemetryInterval <= 0 {
		errs = append(errs, fmt.Errorf("telemetry interval %v is not positive", c.TelemetryInterval))
	}
	if c.Slots < 0 {
		errs = append(errs, fmt.Errorf("slots %d is negative", c.Slots))
	}
	if c.MaxBodyBytes <= 0 {
		errs = append(errs, fmt.Errorf("max body bytes %d is not positive", c.MaxBodyBytes))
	}
	if err := c.Tracing.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("agent config: %w", err)
	}
	return nil
}

func checkHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q: %w", s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http(s) URL with a host", s)
	}
	return nil
}

// deriveAdvertise turns a listen address into the URL peers should use. An unspecified host
// (":8090", "0.0.0.0:8090") becomes this machine's first LAN IPv4 address, or its host name.
func deriveAdvertise(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return ""
	}
	if p, err := strconv.Atoi(port); err != nil || p == 0 {
		return ""
	}
	ip := net.ParseIP(host)
	if host == "" || (ip != nil && ip.IsUnspecified()) {
		host = lanAddress()
	}
	return "http://" + net.JoinHostPort(host, port)
}

// lanAddress returns the first IPv4 address of an up, non-loopback interface, else the host
// name, else 127.0.0.1.
func lanAddress() string {
	ifaces, err := net.Interfaces()
	if err == nil {
		for _, ifc := range ifaces {
			if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
				continue
			}
			addrs, err := ifc.Addrs()
			if err != nil {
				continue
			}
			for _, a := range addrs {
				ipn, ok := a.(*net.IPNet)
				if !ok {
					continue
				}
				if v4 := ipn.IP.To4(); v4 != nil && !v4.IsLinkLocalUnicast() {
					return v4.String()
				}
			}
		}
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "127.0.0.1"
}

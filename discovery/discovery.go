// Package discovery announces a herd gateway on the LAN over mDNS/DNS-SD and finds gateways
// from an agent, so that `herd agent --join auto` needs no gateway URL (as ollama-herd finds its
// router). It uses github.com/hashicorp/mdns.
//
// A gateway is an instance of the service type _herd._tcp in the local. domain. Its SRV record
// carries the port, its A/AAAA records the addresses it serves on, and its TXT record:
//
//	scheme=https          how to reach it (http in lab mode)
//	fp=sha256:<hex>       the cluster CA's fingerprint (absent without TLS)
//	id=<gateway id>       the gateway's name
//	version=<herd version>
//
// The fingerprint lets an agent holding a join token (which pins the CA) pick its own cluster's
// gateways when several clusters share a LAN; the join itself still checks the CA by the token's
// fingerprint, so a forged announcement gains nothing.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/mdns"
)

// ServiceType is herd's DNS-SD service type.
const ServiceType = "_herd._tcp"

// Announcement is what a gateway says about itself.
type Announcement struct {
	// Instance names the gateway on the LAN (unique per gateway).
	Instance string
	Port     int
	// IPs are the addresses announced; nil: every up, multicast-capable interface's unicast
	// addresses (loopback only if there is no other).
	IPs         []net.IP
	Scheme      string // "https" or "http"
	Fingerprint string // the cluster CA's fingerprint, "" without TLS
	ID          string
	Version     string
}

// Announcer answers mDNS queries for one gateway until Close.
type Announcer struct {
	server *mdns.Server
}

// Announce starts answering queries for a. It fails when no multicast listener can be opened
// (no interface with multicast).
func Announce(a Announcement) (*Announcer, error) {
	if a.Port <= 0 || a.Port > 65535 {
		return nil, fmt.Errorf("discovery: port %d", a.Port)
	}
	if a.Scheme != "http" && a.Scheme != "https" {
		return nil, fmt.Errorf("discovery: scheme %q", a.Scheme)
	}
	ips := a.IPs
	if len(ips) == 0 {
		ips = lanIPs()
	}
	txt := []string{"scheme=" + a.Scheme}
	for _, kv := range [][2]string{{"fp", a.Fingerprint}, {"id", a.ID}, {"version", a.Version}} {
		if kv[1] != "" {
			txt = append(txt, kv[0]+"="+kv[1])
		}
	}
	instance := dnsLabel(a.Instance)
	svc, err := mdns.NewMDNSService(instance, ServiceType, "", instance+".local.", a.Port, ips, txt)
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	srv, err := mdns.NewServer(&mdns.Config{Zone: svc, Logger: quiet()})
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	return &Announcer{server: srv}, nil
}

// Close stops answering.
func (a *Announcer) Close() error { return a.server.Shutdown() }

// Gateway is one gateway found on the LAN.
type Gateway struct {
	Instance    string
	URL         string // scheme://address:port
	Fingerprint string
	ID          string
	Version     string
}

// Browse asks the LAN for herd gateways for up to timeout and returns those that answered,
// sorted by URL. When fingerprint is not empty, only gateways announcing that CA fingerprint are
// returned.
func Browse(ctx context.Context, timeout time.Duration, fingerprint string) ([]Gateway, error) {
	entries := make(chan *mdns.ServiceEntry, 16)
	params := mdns.DefaultParams(ServiceType)
	params.Entries = entries
	params.Timeout = timeout
	params.Logger = quiet()
	// IPv6 multicast needs its own route; an IPv4 query finds the gateway's v6 addresses too.
	params.DisableIPv6 = true
	done := make(chan error, 1)
	go func() {
		done <- mdns.QueryContext(ctx, params)
		close(entries)
	}()
	seen := map[string]Gateway{}
	for e := range entries {
		g, ok := parseEntry(e)
		if !ok || (fingerprint != "" && g.Fingerprint != fingerprint) {
			continue
		}
		seen[g.URL] = g
	}
	err := <-done
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	out := make([]Gateway, 0, len(seen))
	for _, g := range seen {
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b Gateway) int { return strings.Compare(a.URL, b.URL) })
	return out, nil
}

// parseEntry reads one answer; an entry of another service type, without an address or with an
// unknown scheme is not a herd gateway.
func parseEntry(e *mdns.ServiceEntry) (Gateway, bool) {
	if !strings.Contains(e.Name, "."+ServiceType+".") || e.Port <= 0 || e.Port > 65535 {
		return Gateway{}, false
	}
	txt := ParseTXT(e.InfoFields)
	scheme := txt["scheme"]
	if scheme != "http" && scheme != "https" {
		return Gateway{}, false
	}
	var ip net.IP
	switch {
	case e.AddrV4 != nil:
		ip = e.AddrV4
	case e.AddrV6IPAddr != nil && e.AddrV6IPAddr.IP != nil && !e.AddrV6IPAddr.IP.IsLinkLocalUnicast():
		ip = e.AddrV6IPAddr.IP
	default:
		return Gateway{}, false
	}
	instance, _, _ := strings.Cut(e.Name, "."+ServiceType)
	return Gateway{
		Instance: instance, URL: scheme + "://" + net.JoinHostPort(ip.String(), strconv.Itoa(e.Port)),
		Fingerprint: txt["fp"], ID: txt["id"], Version: txt["version"],
	}, true
}

// ParseTXT reads key=value TXT strings (RFC 6763 §6.3): keys are case-insensitive, the first
// occurrence of a key wins, a string without "=" is a key with no value.
func ParseTXT(fields []string) map[string]string {
	out := map[string]string{}
	for _, f := range fields {
		k, v, _ := strings.Cut(f, "=")
		k = strings.ToLower(k)
		if k == "" {
			continue
		}
		if _, dup := out[k]; !dup {
			out[k] = v
		}
	}
	return out
}

// lanIPs returns the unicast addresses of the up interfaces that can multicast, loopback last
// and only when there is nothing else.
func lanIPs() []net.IP {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var lan, loop []net.IP
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagMulticast == 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok || ipn.IP.IsLinkLocalUnicast() {
				continue
			}
			if ipn.IP.IsLoopback() {
				loop = append(loop, ipn.IP)
			} else {
				lan = append(lan, ipn.IP)
			}
		}
	}
	if len(lan) > 0 {
		return lan
	}
	return loop
}

// dnsLabel makes s a DNS label: letters, digits and hyphens, at most 63 bytes.
func dnsLabel(s string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(s) {
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
			b.WriteRune(c)
		default:
			b.WriteByte('-')
		}
	}
	l := strings.Trim(b.String(), "-")
	if len(l) > 63 {
		l = strings.TrimRight(l[:63], "-")
	}
	if l == "" {
		l = "herd-gateway"
	}
	return l
}

// quiet is the logger the mdns library writes its chatter to: nowhere. What matters is
// returned as errors and logged by the caller.
func quiet() *log.Logger { return log.New(io.Discard, "", 0) }

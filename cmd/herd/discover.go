package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/herd-llm/herd/discovery"
	"github.com/herd-llm/herd/gateway"
	"github.com/herd-llm/herd/pki"
)

// announceGateway announces the gateway listening on addr over mDNS: on the listen address when
// it is a specific one, else on every LAN address of the machine.
func announceGateway(cfg gateway.Config, addr, scheme, fingerprint string) (*discovery.Announcer, error) {
	host, portS, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, _ := strconv.Atoi(portS)
	var ips []net.IP
	if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		ips = []net.IP{ip}
	}
	id := cfg.GatewayID
	if id == "" {
		h, _ := os.Hostname()
		id = h + "-" + portS
	}
	return discovery.Announce(discovery.Announcement{Instance: id, Port: port, IPs: ips, Scheme: scheme,
		Fingerprint: fingerprint, ID: id, Version: herdVersion()})
}

// browseTimeout is how long one mDNS query waits for answers.
const browseTimeout = 2 * time.Second

// resolveJoinAuto turns --join auto into the URL of a gateway found on the LAN by mDNS, asking
// again every few seconds until one answers (or ctx ends). With a join token, only gateways
// announcing the CA it pins are taken, so an agent never wanders into another cluster on the
// same LAN; the join itself checks the CA again. Every gateway found becomes the agent's
// heartbeat list when --gateway is not given.
func resolveJoinAuto(ctx context.Context, a *agentSection, log *slog.Logger) error {
	if a.Join != "auto" {
		return nil
	}
	fp := ""
	if a.Token != "" {
		tok, err := pki.ParseJoinToken(a.Token)
		if err != nil {
			return fmt.Errorf("agent: --token: %w", err)
		}
		fp = tok.CAFingerprint
	}
	log.Info("looking for a gateway on the LAN (mDNS)", "service", discovery.ServiceType, "ca_fingerprint", fp)
	for attempt := 0; ; attempt++ {
		found, err := discovery.Browse(ctx, browseTimeout, fp)
		if err != nil {
			return fmt.Errorf("agent: --join auto: %w", err)
		}
		if len(found) > 0 {
			// HTTPS gateways first: a join needs one.
			var urls []string
			for _, g := range found {
				if g.Fingerprint != "" {
					urls = append(urls, g.URL)
				}
			}
			for _, g := range found {
				if g.Fingerprint == "" {
					urls = append(urls, g.URL)
				}
			}
			a.Join = urls[0]
			if len(a.GatewayURLs) == 0 {
				a.GatewayURLs = urls
			}
			log.Info("found the gateway by mDNS", "join", a.Join, "gateways", urls)
			return nil
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("agent: --join auto: no gateway found: %w", err)
		}
		if attempt == 0 {
			log.Warn("no gateway answered on the LAN yet (is it started with --mdns, and does this network pass multicast?); still looking")
		}
		select {
		case <-ctx.Done():
		case <-time.After(3 * time.Second):
		}
	}
}

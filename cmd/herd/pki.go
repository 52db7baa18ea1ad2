package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/herd-llm/herd/nodeagent"
	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/pki"
)

// isLoopback reports whether a listen or bound address ("host:port") is on loopback only.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkAgentModes refuses flag combinations that contradict each other.
func checkAgentModes(a agentSection) error {
	if (a.Join == "") != (a.Token == "") && a.Join != "" {
		return errors.New("agent: --join needs --token (from herd nodes join-token)")
	}
	if a.Token != "" && a.Join == "" {
		return errors.New("agent: --token needs --join https://GATEWAY")
	}
	return nil
}

// agentCerts returns the node's certificates: those in --data from an earlier join, else a new
// join when --join is given, else nil (token mode). The node ID and, when unset, the gateways
// follow the certificates.
func agentCerts(ctx context.Context, a *agentSection, ln net.Listener, log *slog.Logger) (*nodeagent.NodeCerts, error) {
	certs, err := nodeagent.LoadNodeCerts(a.DataDir)
	switch {
	case err == nil:
		if a.NodeID != certs.NodeID() {
			log.Info("node id is the certificate's", "node", certs.NodeID(), "configured", a.NodeID)
			a.NodeID = certs.NodeID()
		}
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("agent: %w", err)
	case a.Join == "":
		return nil, nil
	default:
		adv := a.Advertise
		if adv == "" {
			host, port, _ := net.SplitHostPort(ln.Addr().String())
			if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
				return nil, errors.New("agent: joining needs the address gateways reach this agent at: set --advertise https://HOST:PORT (or --listen on that address)")
			}
			adv = "https://" + net.JoinHostPort(host, port)
		}
		if certs, err = nodeagent.Join(ctx, nodeagent.JoinConfig{Gateway: a.Join, Token: a.Token, NodeID: a.NodeID, Advertise: adv, Dir: a.DataDir}); err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
		log.Info("joined the cluster: certificates written", "node", certs.NodeID(), "dir", a.DataDir, "expires", certs.ClientLeaf().NotAfter)
	}
	if len(a.GatewayURLs) == 0 && a.Join != "" {
		a.GatewayURLs = []string{a.Join}
	}
	if a.Advertise != "" {
		if u, err := urlScheme(a.Advertise); err == nil && u != "https" {
			return nil, fmt.Errorf("agent: a joined agent serves HTTPS: --advertise %q must be an https URL", a.Advertise)
		}
	}
	return certs, nil
}

func urlScheme(s string) (string, error) {
	i := 0
	for i < len(s) && s[i] != ':' {
		i++
	}
	if i == len(s) {
		return "", errors.New("no scheme")
	}
	return s[:i], nil
}

// tokenModeTLS is the agent's TLS client configuration in token mode when --ca-file asks to
// trust another CA for https gateways (nil: the system's roots).
func tokenModeTLS(a agentSection) (*tls.Config, error) {
	if a.CAFile == "" {
		return nil, nil
	}
	data, err := os.ReadFile(a.CAFile)
	if err != nil {
		return nil, fmt.Errorf("agent: --ca-file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("agent: --ca-file %s holds no PEM certificate", a.CAFile)
	}
	return agentapi.ClientTLS(pool, nil), nil
}

// clientHTTP is the client commands' HTTP client: the system's roots plus caFile's.
func clientHTTP(caFile string) (*http.Client, error) {
	if caFile == "" {
		return &http.Client{}, nil
	}
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--ca-file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("--ca-file %s holds no PEM certificate", caFile)
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	return &http.Client{Transport: t}, nil
}

func newCACmd() *cobra.Command {
	cmd := &cobra.Command{Use: "ca", Short: "The cluster's certificate authority"}
	var dir string
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Make the cluster CA in the gateway's data dir (the gateway also makes it on its first start with TLS)",
		Long: "herd ca init makes the cluster CA (ECDSA P-256, ten years) in DATA/pki: ca.crt, and ca.key\n" +
			"with mode 0600. It prints the CA's fingerprint, which join tokens carry. With several gateways\n" +
			"on Redis, the first gateway started with --ca-secret seals this CA into Redis.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pdir := filepath.Join(dir, "pki")
			if old, err := pki.LoadCA(pdir); err == nil {
				return fmt.Errorf("%s already holds a cluster CA (fingerprint %s)", pdir, old.Fingerprint())
			}
			ca, err := pki.NewCA(time.Now())
			if err != nil {
				return err
			}
			if err := ca.Save(pdir); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cluster CA written to %s\nfingerprint: %s\nclients trust %s\n",
				pdir, ca.Fingerprint(), filepath.Join(pdir, pki.CACertFile))
			return nil
		},
	}
	initCmd.Flags().StringVar(&dir, "data", "./herd-data", "the gateway's data directory")
	cmd.AddCommand(initCmd)
	return cmd
}

func newJoinTokenCmd() *cobra.Command {
	var cf clientFlags
	var ttl string
	cmd := &cobra.Command{
		Use:   "join-token",
		Short: "Make a short-lived join token for herd agent --join (admin)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.tlsClient()
			if err != nil {
				return err
			}
			t, err := c.NewJoinToken(cmd.Context(), ttl)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s\n# expires %s; CA %s\n# on the node: herd agent --join %s --token %s --advertise https://THIS-HOST:9090\n",
				t.Token, t.ExpiresAt.Format(time.RFC3339), t.CAFingerprint, cf.url, t.Token)
			return nil
		},
	}
	cf.bind(cmd.Flags())
	cmd.Flags().StringVar(&ttl, "ttl", "1h", "how long the token is valid (at most 168h)")
	return cmd
}

func newRevokeCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "revoke NODE",
		Short: "Revoke a node's certificates: every gateway refuses it at once, open connections included (admin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.tlsClient()
			if err != nil {
				return err
			}
			r, err := c.RevokeNode(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "node %s revoked\n", r.Node)
			return nil
		},
	}
	cf.bind(cmd.Flags())
	return cmd
}

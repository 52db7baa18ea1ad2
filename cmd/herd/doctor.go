package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/spf13/cobra"

	"github.com/herd-llm/herd/nodeagent"
	"github.com/herd-llm/herd/nodeagent/agentapi"
	"github.com/herd-llm/herd/nodeagent/doctor"
)

// newDoctorCmd is `herd doctor`: it takes the agent's own flags (and HERD_* variables, and the
// config file's agent section), so it checks exactly what `herd agent` would use.
func newDoctorCmd() *cobra.Command {
	doc := defaultDocument()
	doc.Agent.Backend = "ollama"
	var asJSON bool
	var agentURL string
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check this node: NVIDIA driver, GPU health, backend and models, disk, gateway, clock",
		Long: "herd doctor checks a node before (or after) it joins: the NVIDIA driver and NVML, each GPU's\n" +
			"health (XID events, ECC errors, throttling), the backend and its version, the models on it,\n" +
			"free disk for models, the gateway, and this clock against the gateway's. It takes herd agent's\n" +
			"flags and HERD_* variables, so `set -a; . /etc/herd/agent.env; herd doctor` checks what the\n" +
			"agent service uses. Every finding that is not ok says what to do. Exit status 1 when a\n" +
			"check fails.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := layerConfig(cmd, &doc); err != nil {
				return err
			}
			// The checks say what they find; the parts they use log only what is worse.
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelError}))
			a := doc.Agent
			lib := nvml.New()
			b, ts, closeFn, err := buildBackend(cmd.Context(), a, log, lib)
			if err != nil {
				return err
			}
			defer closeFn()
			cfg := doctor.Config{Backend: b, GPUs: ts, Gateways: a.GatewayURLs,
				Membership: &doctor.Membership{Dir: a.DataDir, Join: a.Join, ClusterToken: a.ClusterToken != ""}}
			// The gateway is reached as the agent would: with the node's certificates when it
			// joined (they trust the cluster CA), at --join's gateway when no --gateway is given.
			if certs, err := nodeagent.LoadNodeCerts(a.DataDir); err == nil {
				cfg.Membership.NodeID, cfg.Membership.NotAfter = certs.NodeID(), certs.ClientLeaf().NotAfter
				cfg.HTTP = agentapi.HTTPClient(certs.ClientTLS())
				cfg.HTTP.Timeout = 5 * time.Second
			} else if !errors.Is(err, os.ErrNotExist) {
				cfg.Membership.LoadErr = err
			}
			if a.Join == "auto" {
				ctx, cancel := context.WithTimeout(cmd.Context(), 3*browseTimeout)
				err := resolveJoinAuto(ctx, &a, log)
				cancel()
				if err != nil {
					fmt.Fprintln(cmd.ErrOrStderr(), "herd doctor:", err)
				}
				cfg.Gateways = a.GatewayURLs
			}
			if len(cfg.Gateways) == 0 && a.Join != "" && a.Join != "auto" {
				cfg.Gateways = []string{a.Join}
			}
			switch b.Kind() {
			case agentapi.BackendOllama:
				cfg.BackendURL = a.OllamaURL
			case agentapi.BackendOpenAI:
				cfg.BackendURL = a.OpenAIURL
			}
			if !b.Simulated() {
				cfg.Driver = lib
				if r, ok := ts.(interface{ Reason() string }); ok {
					cfg.NoGPUReason = r.Reason
				}
			}
			if agentURL != "" {
				cfg.Agent = agentapi.NewClient(agentURL, a.ClusterToken, nil)
			}
			report := doctor.Run(cmd.Context(), cfg)
			if err := printReport(cmd.OutOrStdout(), report, asJSON); err != nil {
				return err
			}
			if report.Failed() {
				return exitError{code: 1}
			}
			return nil
		},
	}
	commonFlags(cmd.Flags(), &doc)
	agentFlags(cmd.Flags(), &doc.Agent, true)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the findings as JSON")
	cmd.Flags().StringVar(&agentURL, "agent", "", "this node's running agent in the lab mode (http://127.0.0.1:9090, with --cluster-token): its XID event counts since it started join the checks (a joined agent admits only gateways' certificates)")
	return cmd
}

func printReport(w io.Writer, r doctor.Report, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	t := newTable(w)
	t.row("STATUS", "CHECK", "FINDING")
	for _, f := range r.Findings {
		status := string(f.Status)
		if f.Status == doctor.Fail || f.Status == doctor.Warn {
			status = strings.ToUpper(status)
		}
		t.row(status, f.Check, f.Detail)
		if f.Fix != "" {
			t.row("", "", "→ "+f.Fix)
		}
	}
	t.flush()
	if r.Failed() {
		fmt.Fprintln(w, "\nthis node is not ready: fix what FAILs above")
	}
	return nil
}

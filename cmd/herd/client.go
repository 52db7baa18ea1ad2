package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/herd-llm/herd/gateway/api"
)

// clientFlags binds --url and --api-key (HERD_URL, HERD_API_KEY) for the operator commands.
type clientFlags struct {
	url    string
	key    string
	caFile string
}

// defaultURL is the gateway the client commands talk to without --url or HERD_URL.
const defaultURL = "http://127.0.0.1:8080"

func (f *clientFlags) bind(fs *pflag.FlagSet) {
	fs.StringVar(&f.url, "url", envOr("HERD_URL", defaultURL), "gateway URL (HERD_URL)")
	fs.StringVar(&f.key, "api-key", os.Getenv("HERD_API_KEY"), "API key (HERD_API_KEY)")
	fs.StringVar(&f.caFile, "ca-file", os.Getenv("HERD_CA_FILE"), "CA certificate to trust for an https gateway, e.g. DATA/pki/ca.crt (HERD_CA_FILE)")
}

// client returns the API client; a --ca-file that cannot be read leaves the system's roots
// (the call then fails with the certificate error).
func (f *clientFlags) client() *api.Client {
	c, _ := f.tlsClient()
	if c == nil {
		return api.NewClient(f.url, f.key)
	}
	return c
}

// tlsClient returns the API client trusting --ca-file, or the error reading it.
func (f *clientFlags) tlsClient() (*api.Client, error) {
	hc, err := clientHTTP(f.caFile)
	if err != nil {
		return nil, err
	}
	c := api.NewClient(f.url, f.key)
	c.HTTP = hc
	return c, nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// printRaw GETs path and prints the answer as the gateway sent it (--json).
func printRaw(ctx context.Context, c *api.Client, path string, w io.Writer) error {
	var raw json.RawMessage
	if err := c.GetJSON(ctx, path, &raw); err != nil {
		return err
	}
	_, err := w.Write(append(raw, '\n'))
	return err
}

func newClientCmds() []*cobra.Command {
	return []*cobra.Command{newNodesCmd(), newDrainCmd(true), newDrainCmd(false), newModelsCmd(), newTopCmd(), newBatchCmd(), newPresetsCmd(), newKeysCmd()}
}

// ago renders an age in seconds the way the views say it: "12s ago", "3m ago".
func ago(s float64) string {
	switch {
	case s < 10:
		return fmt.Sprintf("%.1fs ago", s)
	case s < 90:
		return fmt.Sprintf("%.0fs ago", s)
	case s < 5400:
		return fmt.Sprintf("%.0fm ago", s/60)
	}
	return fmt.Sprintf("%.1fh ago", s/3600)
}

func gib(b uint64) string { return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30)) }

func gb(b uint64) string { return fmt.Sprintf("%.0f GB", float64(b)/1e9) }

// nodeState is a node's state in the words the README, the dashboard and /metrics use: up, late
// or down (by its heartbeat), then what else keeps it from work: "up, draining".
func nodeState(n api.Node) string {
	switch {
	case n.Status == api.NodeDown || n.Stale:
		return "down " + ago(n.LastSeenSeconds)
	case n.Status == api.NodeLate:
		return "late (seen " + ago(n.LastSeenSeconds) + ")"
	case n.Draining:
		return "up, draining"
	case !n.Healthy:
		return "up, unhealthy"
	case n.Circuit == "open":
		return "up, circuit open"
	}
	return "up"
}

func newNodesCmd() *cobra.Command {
	var cf clientFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "nodes",
		Short: "List the cluster's nodes with their GPUs and models",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c := cf.client()
			if asJSON {
				return printRaw(cmd.Context(), c, "/admin/v1/nodes", cmd.OutOrStdout())
			}
			nodes, err := c.Nodes(cmd.Context())
			if err != nil {
				return err
			}
			printNodes(cmd.OutOrStdout(), nodes)
			return nil
		},
	}
	cf.bind(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the raw JSON")
	cmd.AddCommand(newJoinTokenCmd(), newRevokeCmd())
	return cmd
}

func printNodes(w io.Writer, nodes []api.Node) { printNodesWidth(w, nodes, 0) }

// printNodesWidth is printNodes with every line cut to width columns (0: no limit), the cut
// marked "…": the resident models, last, are what a narrow terminal loses first.
func printNodesWidth(w io.Writer, nodes []api.Node, width int) {
	tw := newTable(&fitWriter{w: w, width: width})
	tw.row("NODE", "STATE", "BACKEND", "GPU", "VRAM USED/TOTAL", "UTIL", "TEMP", "POWER", "IN-FLIGHT", "RESIDENT MODELS")
	for _, n := range nodes {
		backend := n.Backend
		if n.Simulated {
			backend += " (simulated)"
		}
		var resident []string
		for _, m := range n.Models {
			if m.Resident {
				resident = append(resident, m.Name)
			}
		}
		flight := fmt.Sprintf("%d/%d", n.InFlight, n.Slots)
		if n.Queued > 0 {
			flight += fmt.Sprintf(" +%dq", n.Queued)
		}
		if !n.Current() {
			flight = "[" + flight + "]"
		}
		if len(n.GPUs) == 0 {
			gpu := "no GPU"
			if n.TelemetryError != "" {
				gpu = "no GPU (" + n.TelemetryError + ")"
			}
			tw.row(n.ID, nodeState(n), backend, gpu, "-", "-", "-", "-", flight, strings.Join(resident, ","))
			continue
		}
		for i, g := range n.GPUs {
			name := fmt.Sprintf("%d: %s", g.Index, g.Name)
			if g.Simulated && !strings.Contains(name, "simulated") {
				name += " (simulated)"
			}
			if !g.Healthy {
				name += " UNHEALTHY: " + g.HealthReason
			}
			mem := fmt.Sprintf("%s / %s (%s)", gib(g.MemoryUsedBytes), gib(g.MemoryTotalBytes), gb(g.MemoryTotalBytes))
			util := fmt.Sprintf("%.0f%%", g.UtilizationRatio*100)
			temp := fmt.Sprintf("%.0f°C", g.TemperatureCelsius)
			power := fmt.Sprintf("%.0f/%.0f W", g.PowerWatts, g.PowerLimitWatts)
			if !n.Current() {
				// The last figures of a node that is not reporting are old: bracketed, never as current.
				mem, util, temp, power = "["+mem+"]", "["+util+"]", "["+temp+"]", "["+power+"]"
			}
			if i == 0 {
				tw.row(n.ID, nodeState(n), backend, name, mem, util, temp, power, flight, strings.Join(resident, ","))
			} else {
				tw.row("", "", "", name, mem, util, temp, power, "", "")
			}
		}
	}
	tw.flush()
	for _, n := range nodes {
		if !n.Current() {
			fmt.Fprintln(w, "[bracketed] figures are the last a node reported before it stopped reporting; they are not current.")
			break
		}
	}
}

// printQueue prints the requests waiting in the gateway (not on a node).
func printQueue(w io.Writer, q api.Queue) {
	fmt.Fprintf(w, "gateway queue: %d interactive, %d batch waiting for a node", q.Interactive, q.Batch)
	var parts []string
	for _, m := range q.Models {
		if m.Waiting > 0 {
			parts = append(parts, fmt.Sprintf("%s %s %d/%d", m.Model, m.Class, m.Waiting, m.Capacity))
		}
	}
	if len(parts) > 0 {
		fmt.Fprintf(w, " (%s)", strings.Join(parts, ", "))
	}
	fmt.Fprintln(w)
}

func newDrainCmd(drain bool) *cobra.Command {
	var cf clientFlags
	use, short, action := "drain NODE", "Stop sending new work to a node; in-flight work finishes", "drain"
	if !drain {
		use, short, action = "undrain NODE", "Let a drained node take work again", "undrain"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := cf.client().SetDraining(cmd.Context(), args[0], drain); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "node %s: %sed\n", args[0], action)
			return nil
		},
	}
	cf.bind(cmd.Flags())
	return cmd
}

func newModelsCmd() *cobra.Command {
	var cf clientFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "models",
		Short: "Show where each model is (resident in GPU memory or on disk), and manage models",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if asJSON {
				return printRaw(cmd.Context(), cf.client(), "/admin/v1/models", cmd.OutOrStdout())
			}
			list, err := cf.client().Models(cmd.Context())
			if err != nil {
				return err
			}
			tw := newTable(cmd.OutOrStdout())
			tw.row("MODEL", "RESIDENT ON", "ON DISK ON")
			for _, m := range list {
				var res, disk []string
				for _, n := range m.Nodes {
					if n.Resident {
						res = append(res, fmt.Sprintf("%s (%s)", n.Node, gib(n.VRAMBytes)))
					} else if n.OnDisk {
						disk = append(disk, n.Node)
					}
				}
				tw.row(m.Name, dashIfEmpty(strings.Join(res, ", ")), dashIfEmpty(strings.Join(disk, ", ")))
			}
			tw.flush()
			return nil
		},
	}
	cf.bind(cmd.PersistentFlags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the raw JSON")

	progress := func(cmd *cobra.Command) func(api.Progress) {
		return func(p api.Progress) {
			parts := []string{}
			for _, v := range []string{p.Node, p.Status, p.Digest} {
				if v != "" {
					parts = append(parts, v)
				}
			}
			if p.Total > 0 {
				parts = append(parts, fmt.Sprintf("%.0f%%", 100*float64(p.Completed)/float64(p.Total)))
			}
			if p.Error != "" {
				parts = append(parts, "error: "+p.Error)
			}
			fmt.Fprintln(cmd.OutOrStdout(), strings.Join(parts, "  "))
		}
	}
	var pullNodes []string
	pull := &cobra.Command{
		Use:   "pull MODEL",
		Short: "Pull a model onto nodes' disks from the backend's registry (every live node unless --nodes)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.client().Pull(cmd.Context(), api.PullRequest{Model: args[0], Nodes: pullNodes}, progress(cmd))
		},
	}
	listFlag(pull.Flags(), &pullNodes, "nodes", "node ids to pull onto (default: every live node)")
	var loadNode string
	load := &cobra.Command{
		Use:   "load MODEL [--node NODE]",
		Short: "Load a model into GPU memory (placed by the scheduler unless --node)",
		Long: "Load a model into a node's GPU memory. Without --node the gateway's placement planner\n" +
			"picks a node that has the weights on disk and room for it (VRAM estimate), unloading the\n" +
			"idle models the plan evicts (least recently used first); a model already resident stays\n" +
			"where it is. With --node it is loaded there, nothing evicted.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := cf.client().Load(cmd.Context(), api.LoadRequest{Model: args[0], Node: loadNode})
			if err != nil {
				return err
			}
			for _, e := range r.Evicted {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: evicted %s (%s)\n", r.Node, e.Model, gib(e.VRAMBytes))
			}
			if r.Status == "already_resident" {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: already resident on %s\n", args[0], r.Node)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: loaded on %s\n", args[0], r.Node)
			return nil
		},
	}
	load.Flags().StringVar(&loadNode, "node", "", "node id to load on (default: the scheduler's placement among the nodes that have the model on disk)")
	var unloadNode string
	unload := &cobra.Command{
		Use:   "unload MODEL [--node NODE]",
		Short: "Unload a model from GPU memory (from every node it is resident on unless --node)",
		Long: "Unload a model from GPU memory. Without --node it is unloaded from every live node where\n" +
			"it is resident; with --node from that node only. The weights stay on disk (herd models rm\n" +
			"deletes them).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cf.client().Unload(cmd.Context(), api.UnloadRequest{Model: args[0], Node: unloadNode}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: unloaded\n", args[0])
			return nil
		},
	}
	unload.Flags().StringVar(&unloadNode, "node", "", "node id to unload from (default: every live node where the model is resident)")
	var from, to string
	cp := &cobra.Command{
		Use:   "copy MODEL --from NODE --to NODE",
		Short: "Copy a model from one node to another over the LAN, no internet needed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if from == "" || to == "" {
				return errors.New("copy needs --from and --to")
			}
			return cf.client().Copy(cmd.Context(), api.CopyRequest{Model: args[0], From: from, To: to}, progress(cmd))
		},
	}
	cp.Flags().StringVar(&from, "from", "", "node that has the model")
	cp.Flags().StringVar(&to, "to", "", "node that gets it")
	var rmNode string
	rm := &cobra.Command{
		Use:   "rm MODEL --node NODE",
		Short: "Delete a model from a node's disk",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if rmNode == "" {
				return errors.New("rm needs --node")
			}
			if err := cf.client().DeleteModel(cmd.Context(), args[0], rmNode); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: deleted from %s\n", args[0], rmNode)
			return nil
		},
	}
	rm.Flags().StringVar(&rmNode, "node", "", "node id to delete the model from (required: deleting loses the weights)")
	cmd.AddCommand(pull, load, unload, cp, rm)
	return cmd
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newTopCmd() *cobra.Command {
	var cf clientFlags
	var every time.Duration
	var count int
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Watch the cluster's GPUs and load, refreshed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c := cf.client()
			for i := 0; count <= 0 || i < count; i++ {
				if i > 0 {
					select {
					case <-cmd.Context().Done():
						return nil
					case <-time.After(every):
					}
				}
				nodes, err := c.Nodes(cmd.Context())
				if err != nil {
					return err
				}
				if count != 1 {
					fmt.Fprint(cmd.OutOrStdout(), "\033[H\033[2J")
				}
				q, err := c.Queue(cmd.Context())
				if err != nil {
					return err
				}
				// Every line fits the terminal (a refreshed view that wraps is unreadable).
				width := terminalWidth(cmd.OutOrStdout())
				fw := &fitWriter{w: cmd.OutOrStdout(), width: width}
				fmt.Fprintf(fw, "herd top — %s — %s\n", c.BaseURL, time.Now().Format(time.TimeOnly))
				printQueue(fw, q)
				fmt.Fprintln(fw)
				printNodesWidth(fw, nodes, width)
			}
			return nil
		},
	}
	cf.bind(cmd.Flags())
	cmd.Flags().DurationVar(&every, "interval", 2*time.Second, "refresh interval")
	cmd.Flags().IntVarP(&count, "count", "n", 0, "stop after this many refreshes (0: until interrupted)")
	return cmd
}

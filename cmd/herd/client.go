package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// apiClient talks to a gateway's HTTP API the way any client would.
type apiClient struct {
	base string
	key  string
	hc   *http.Client
}

// clientFlags binds --url and --api-key (HERD_URL, HERD_API_KEY) for the operator commands.
type clientFlags struct {
	url string
	key string
}

// defaultURL is the gateway the client commands talk to without --url or HERD_URL.
const defaultURL = "http://127.0.0.1:8080"

func (f *clientFlags) bind(fs *pflag.FlagSet) {
	fs.StringVar(&f.url, "url", envOr("HERD_URL", defaultURL), "gateway URL (HERD_URL)")
	fs.StringVar(&f.key, "api-key", os.Getenv("HERD_API_KEY"), "API key (HERD_API_KEY)")
}

func (f *clientFlags) client() *apiClient {
	return &apiClient{base: strings.TrimRight(f.url, "/"), key: f.key, hc: &http.Client{}}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// apiError is a non-2xx answer in the OpenAI error shape.
type apiError struct {
	Status  int
	Message string
}

func (e *apiError) Error() string { return fmt.Sprintf("gateway answered %d: %s", e.Status, e.Message) }

func (c *apiClient) do(ctx context.Context, method, path string, body io.Reader, contentType string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the gateway at %s: %w", c.base, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var e struct {
			Error struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		msg := strings.TrimSpace(string(data))
		if json.Unmarshal(data, &e) == nil && e.Error.Message != "" {
			msg = e.Error.Message
		}
		return nil, &apiError{Status: resp.StatusCode, Message: msg}
	}
	return resp, nil
}

// getJSON GETs path and decodes the answer into out.
func (c *apiClient) getJSON(ctx context.Context, path string, out any) error {
	resp, err := c.do(ctx, http.MethodGet, path, nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(out)
}

// sendJSON sends in as JSON and decodes the answer into out (if not nil).
func (c *apiClient) sendJSON(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(data)
	}
	resp, err := c.do(ctx, method, path, body, "application/json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// streamNDJSON posts in and calls line for each JSON line of the streamed answer.
func (c *apiClient) streamNDJSON(ctx context.Context, path string, in any, line func(map[string]any)) error {
	data, err := json.Marshal(in)
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, http.MethodPost, path, bytes.NewReader(data), "application/json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var failed []string
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		if e, _ := m["error"].(string); e != "" {
			failed = append(failed, fmt.Sprintf("%v: %s", m["node"], e))
		}
		line(m)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if len(failed) > 0 {
		return errors.New(strings.Join(failed, "; "))
	}
	return nil
}

func newClientCmds() []*cobra.Command {
	return []*cobra.Command{newNodesCmd(), newDrainCmd(true), newDrainCmd(false), newModelsCmd(), newTopCmd(), newBatchCmd(), newPresetsCmd()}
}

// nodeJSON is the part of /admin/v1/nodes the CLI prints.
type nodeJSON struct {
	ID        string `json:"id"`
	Address   string `json:"address"`
	Healthy   bool   `json:"healthy"`
	Draining  bool   `json:"draining"`
	Stale     bool   `json:"stale"`
	Simulated bool   `json:"simulated"`
	Backend   string `json:"backend"`
	Circuit   string `json:"circuit"`
	GPUs      []struct {
		Index              int      `json:"index"`
		Name               string   `json:"name"`
		MemoryTotalBytes   uint64   `json:"memory_total_bytes"`
		MemoryUsedBytes    uint64   `json:"memory_used_bytes"`
		UtilizationRatio   float64  `json:"utilization_ratio"`
		TemperatureCelsius float64  `json:"temperature_celsius"`
		PowerWatts         float64  `json:"power_watts"`
		PowerLimitWatts    float64  `json:"power_limit_watts"`
		ThrottleReasons    []string `json:"throttle_reasons"`
		Healthy            bool     `json:"healthy"`
		HealthReason       string   `json:"health_reason"`
		Simulated          bool     `json:"simulated"`
	} `json:"gpus"`
	Models []struct {
		Name            string  `json:"name"`
		Resident        bool    `json:"resident"`
		OnDisk          bool    `json:"on_disk"`
		VRAMBytes       uint64  `json:"vram_bytes"`
		SizeBytes       uint64  `json:"size_bytes"`
		TokensPerSecond float64 `json:"tokens_per_second"`
	} `json:"models"`
	InFlight       int       `json:"in_flight"`
	Queued         int       `json:"queued"`
	Slots          int       `json:"slots"`
	LastHeartbeat  time.Time `json:"last_heartbeat"`
	TelemetryError string    `json:"telemetry_error"`
	// LastSeenSeconds is the heartbeat's age; Status is "up", "late" or "down".
	LastSeenSeconds float64 `json:"last_seen_seconds"`
	Status          string  `json:"status"`
}

// live reports whether the node's figures are current (its heartbeat fresh).
func (n nodeJSON) live() bool { return n.Status != "down" && n.Status != "late" && !n.Stale }

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

func nodeState(n nodeJSON) string {
	switch {
	case n.Status == "down" || n.Stale:
		return "down " + ago(n.LastSeenSeconds)
	case n.Status == "late":
		return "late (seen " + ago(n.LastSeenSeconds) + ")"
	case n.Draining:
		return "draining"
	case !n.Healthy:
		return "unhealthy"
	case n.Circuit == "open":
		return "circuit-open"
	}
	return "ready"
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
				var raw json.RawMessage
				if err := c.getJSON(cmd.Context(), "/admin/v1/nodes", &raw); err != nil {
					return err
				}
				_, err := cmd.OutOrStdout().Write(append(raw, '\n'))
				return err
			}
			var resp struct {
				Nodes []nodeJSON `json:"nodes"`
			}
			if err := c.getJSON(cmd.Context(), "/admin/v1/nodes", &resp); err != nil {
				return err
			}
			printNodes(cmd.OutOrStdout(), resp.Nodes)
			return nil
		},
	}
	cf.bind(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the raw JSON")
	return cmd
}

func printNodes(w io.Writer, nodes []nodeJSON) {
	tw := newTable(w)
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
		if !n.live() {
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
			if !n.live() {
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
		if !n.live() {
			fmt.Fprintln(w, "[bracketed] figures are the last a node reported before it stopped reporting; they are not current.")
			break
		}
	}
}

// queueJSON is /admin/v1/queue.
type queueJSON struct {
	Interactive int `json:"interactive"`
	Batch       int `json:"batch"`
	Models      []struct {
		Model    string `json:"model"`
		Class    string `json:"class"`
		Waiting  int    `json:"waiting"`
		Capacity int    `json:"capacity"`
	} `json:"models"`
}

// printQueue prints the requests waiting in the gateway (not on a node).
func printQueue(w io.Writer, q queueJSON) {
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
			if err := cf.client().sendJSON(cmd.Context(), http.MethodPost, "/admin/v1/nodes/"+url.PathEscape(args[0])+"/"+action, nil, nil); err != nil {
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
			var resp struct {
				Models []struct {
					Name  string `json:"name"`
					Nodes []struct {
						Node      string `json:"node"`
						Resident  bool   `json:"resident"`
						OnDisk    bool   `json:"on_disk"`
						VRAMBytes uint64 `json:"vram_bytes"`
					} `json:"nodes"`
				} `json:"models"`
			}
			if asJSON {
				var raw json.RawMessage
				if err := cf.client().getJSON(cmd.Context(), "/admin/v1/models", &raw); err != nil {
					return err
				}
				_, err := cmd.OutOrStdout().Write(append(raw, '\n'))
				return err
			}
			if err := cf.client().getJSON(cmd.Context(), "/admin/v1/models", &resp); err != nil {
				return err
			}
			tw := newTable(cmd.OutOrStdout())
			tw.row("MODEL", "RESIDENT ON", "ON DISK ON")
			for _, m := range resp.Models {
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

	progress := func(cmd *cobra.Command) func(map[string]any) {
		return func(m map[string]any) {
			parts := []string{}
			for _, k := range []string{"node", "status", "digest"} {
				if v, ok := m[k]; ok && v != "" {
					parts = append(parts, fmt.Sprint(v))
				}
			}
			if t, ok := m["total"].(float64); ok && t > 0 {
				c, _ := m["completed"].(float64)
				parts = append(parts, fmt.Sprintf("%.0f%%", 100*c/t))
			}
			if e, ok := m["error"].(string); ok && e != "" {
				parts = append(parts, "error: "+e)
			}
			fmt.Fprintln(cmd.OutOrStdout(), strings.Join(parts, "  "))
		}
	}
	var pullNodes []string
	pull := &cobra.Command{
		Use:   "pull MODEL",
		Short: "Pull a model onto nodes (all nodes unless --nodes)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.client().streamNDJSON(cmd.Context(), "/admin/v1/models/pull", map[string]any{"model": args[0], "nodes": pullNodes}, progress(cmd))
		},
	}
	listFlag(pull.Flags(), &pullNodes, "nodes", "node ids")
	var node string
	loadCmd := func(action string) *cobra.Command {
		c := &cobra.Command{
			Use:   action + " MODEL",
			Short: strings.ToUpper(action[:1]) + action[1:] + " a model (into / out of GPU memory)",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				if err := cf.client().sendJSON(cmd.Context(), http.MethodPost, "/admin/v1/models/"+action, map[string]any{"model": args[0], "node": node}, nil); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %sed\n", args[0], action)
				return nil
			},
		}
		c.Flags().StringVar(&node, "node", "", "node id (load: default the node with the most free VRAM)")
		return c
	}
	var from, to string
	cp := &cobra.Command{
		Use:   "copy MODEL --from NODE --to NODE",
		Short: "Copy a model from one node to another over the LAN, no internet needed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if from == "" || to == "" {
				return errors.New("copy needs --from and --to")
			}
			return cf.client().streamNDJSON(cmd.Context(), "/admin/v1/models/copy", map[string]any{"model": args[0], "from": from, "to": to}, progress(cmd))
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
			path := "/admin/v1/models/" + url.PathEscape(args[0]) + "?node=" + url.QueryEscape(rmNode)
			if err := cf.client().sendJSON(cmd.Context(), http.MethodDelete, path, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: deleted from %s\n", args[0], rmNode)
			return nil
		},
	}
	rm.Flags().StringVar(&rmNode, "node", "", "node id")
	cmd.AddCommand(pull, loadCmd("load"), loadCmd("unload"), cp, rm)
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
				var resp struct {
					Nodes []nodeJSON `json:"nodes"`
				}
				if err := c.getJSON(cmd.Context(), "/admin/v1/nodes", &resp); err != nil {
					return err
				}
				if count != 1 {
					fmt.Fprint(cmd.OutOrStdout(), "\033[H\033[2J")
				}
				var q queueJSON
				if err := c.getJSON(cmd.Context(), "/admin/v1/queue", &q); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "herd top — %s — %s\n", c.base, time.Now().Format(time.TimeOnly))
				printQueue(cmd.OutOrStdout(), q)
				fmt.Fprintln(cmd.OutOrStdout())
				printNodes(cmd.OutOrStdout(), resp.Nodes)
			}
			return nil
		},
	}
	cf.bind(cmd.Flags())
	cmd.Flags().DurationVar(&every, "interval", 2*time.Second, "refresh interval")
	cmd.Flags().IntVarP(&count, "count", "n", 0, "stop after this many refreshes (0: until interrupted)")
	return cmd
}

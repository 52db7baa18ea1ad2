package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/herd-llm/herd/atomicfile"
	"github.com/herd-llm/herd/loadtest"
)

func newToolCmds() []*cobra.Command {
	return []*cobra.Command{newSimCmd(), newLoadtestCmd(), newFakeBackendCmd(), newFakeFleetCmd(), newPlanCmd()}
}

// The models of a `herd sim` cluster: the README's quickstart models (the same as `herd up`'s
// simulated node) and the load test's default model, so every example works against it as is.
var (
	simModels  = []string{"llama3.2:1b", loadtest.DefaultModel, "qwen2.5:7b", "nomic-embed-text"}
	simPreload = []string{"llama3.2:1b", loadtest.DefaultModel, "nomic-embed-text"}
)

func newSimCmd() *cobra.Command {
	var o loadtest.SimClusterOptions
	var keepLogs bool
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Run a simulated GPU cluster on this machine: a gateway and one simulated agent per GPU group",
		Long: "herd sim starts a gateway and one simulated agent per comma-separated GPU group as separate\n" +
			"processes on loopback (\"2xt4,a40,3090\" is three agents, the first with two T4s) and\n" +
			"prints the URL. Everything it serves is simulated: the GPUs are models of real cards, the\n" +
			"text is generated, and every figure it reports is labelled simulated.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Binary == "" {
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				o.Binary = exe
			}
			if len(o.Models) == 0 {
				o.Models = simModels
			}
			if len(o.Preload) == 0 {
				o.Preload = simPreload
			}
			o.KeepLogs = keepLogs
			if o.LogLevel == "" {
				o.LogLevel = "info"
			}
			c, err := loadtest.StartSimCluster(cmd.Context(), o)
			if err != nil {
				return err
			}
			defer c.Stop()
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "herd sim: SIMULATED cluster up — point the OpenAI SDK at %s/v1\n", c.URL)
			for _, a := range c.Agents {
				fmt.Fprintf(out, "  node %-14s simulated GPUs %-8s %s (pid %d)\n", a.NodeID, a.GPUs, a.URL, a.PID)
			}
			fmt.Fprintf(out, "  logs: %s\n  herd nodes --url %s    herd loadtest --target %s\n", c.LogDir, c.URL, c.URL)
			select {
			case <-cmd.Context().Done():
			case <-c.Gateway.Done():
				return errors.New("herd sim: the gateway exited; see its log in " + c.LogDir)
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.GPUs, "gpus", "2xt4,a40,3090", "simulated GPU groups, one agent per group")
	listFlag(fs, &o.Models, "models", "models on every agent's disk (default "+strings.Join(simModels, ",")+")")
	listFlag(fs, &o.Preload, "preload", "models resident at start (default "+strings.Join(simPreload, ",")+"; the rest load on first use)")
	fs.StringVar(&o.Policy, "policy", "", "scheduling policy: herd, least_inflight, round_robin or chwbl (KubeAI's consistent hashing with bounded loads)")
	fs.StringVar(&o.Listen, "listen", "127.0.0.1:8080", "gateway address")
	fs.Float64Var(&o.SimSpeed, "sim-speed", 1, "simulated time runs this many times faster than real time")
	fs.StringVar(&o.DataDir, "data", "", "gateway data directory (default: a temporary one)")
	fs.StringVar(&o.LogDir, "log-dir", "", "directory for the processes' logs (default: a temporary one)")
	fs.BoolVar(&keepLogs, "keep-logs", false, "keep the logs after exit")
	fs.StringVar(&o.LogLevel, "log-level", "info", "the processes' log level")
	return cmd
}

type loadtestFlags struct {
	target, apiKey, model, workload, ramp, scenario, jsonOut, svgOut, killNode string
	rps                                                                        float64
	duration, sloTTFT, sloTPOT, killNodeAt                                     time.Duration
	concurrency, maxTokens                                                     int
	stream                                                                     bool
	seed                                                                       uint64
	policies                                                                   []string
	gpus                                                                       string
	simSpeed                                                                   float64
	quiet                                                                      bool
	attainment, capStart, capTolerance                                         float64
	capProbes, batchLines                                                      int
	logDir, promptTokens, outputTokens                                         string
	simEngine                                                                  string
	nodes                                                                      []int
	streams                                                                    int
	streamInterval                                                             time.Duration
	redisURL                                                                   string
}

func newLoadtestCmd() *cobra.Command {
	var f loadtestFlags
	cmd := &cobra.Command{
		Use:   "loadtest",
		Short: "Load test an OpenAI-compatible endpoint, or run a benchmark scenario (" + strings.Join(loadtest.Scenarios(), ", ") + ")",
		Long: "Without --scenario, herd loadtest sends a seeded workload to --target (any OpenAI-compatible\n" +
			"endpoint, herd or not) and reports TTFT, inter-token latency, end-to-end latency, throughput,\n" +
			"goodput at the SLO and errors by kind.\n\n" +
			"--scenario hetero  starts a fresh simulated T4 + A40 + 3090 cluster per policy and runs the same\n" +
			"                   workload against each, side by side (--compare-policies).\n" +
			"--scenario overhead compares a fast fake backend called directly with the same backend behind\n" +
			"                   a herd gateway and agent.\n" +
			"--scenario fault   kills one simulated agent mid-run (--kill-node-at) and reports the errors.\n" +
			"--scenario capacity searches, per policy, the highest Poisson rate at which --attainment of the\n" +
			"                   requests meet --slo-ttft and --slo-tpot (bisection over fresh simulated\n" +
			"                   clusters, at most --capacity-probes probes of --duration each). Rates,\n" +
			"                   durations, SLOs and latencies are simulated time (see --sim-speed).\n" +
			"                   --workload multi-turn (preset users in long conversations, think time\n" +
			"                   between turns) or multi-model (8 models, Zipf popularity, 4 nodes keeping\n" +
			"                   one model loaded each) adds, per policy, the prefill the engines did and\n" +
			"                   their model loads, counted from the simulated engines' logs.\n" +
			"--scenario batch-mix runs interactive chat-short at --rps alone and then beside a bulk job of\n" +
			"                   --batch-lines lines, and reports the batch's share of the tokens/s and the\n" +
			"                   interactive TTFT tail of both runs.\n" +
			"--scenario scale   runs a fake fleet of --nodes nodes (another process, 1 Hz heartbeats, 8 GPUs and\n" +
			"                   10 of 200 models a node) against a gateway and reports the gateway's heartbeat\n" +
			"                   CPU, Pick and snapshot-build times, RSS and /admin/v1/nodes latency per size\n" +
			"                   (with --redis-url, also two gateways sharing it).\n" +
			"--scenario streams holds --streams slow SSE streams (a token a second from a fake backend in a\n" +
			"                   process of its own) through one gateway and agent (h2c between them) and\n" +
			"                   reports memory and goroutines per stream, and a full-speed probe's\n" +
			"                   inter-token latency p50/p99 through herd against the same probe sent direct.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runLoadtest(cmd, f) },
	}
	fs := cmd.Flags()
	fs.StringVar(&f.target, "target", "", "base URL of the endpoint under test (http://host:port)")
	fs.StringVar(&f.apiKey, "api-key", os.Getenv("HERD_API_KEY"), "API key for the target")
	fs.StringVar(&f.model, "model", "", "model to ask for (default "+loadtest.DefaultModel+")")
	var wl []string
	for _, w := range loadtest.Workloads() {
		wl = append(wl, string(w))
	}
	fs.StringVar(&f.workload, "workload", "", "workload: "+strings.Join(wl, ", "))
	fs.Float64Var(&f.rps, "rps", 0, "mean Poisson arrival rate (open loop)")
	fs.StringVar(&f.ramp, "ramp", "", "arrival rate ramp FROM:TO requests/s over the duration")
	fs.IntVar(&f.concurrency, "concurrency", 0, "closed loop with this many workers instead of arrivals")
	fs.DurationVar(&f.duration, "duration", 0, "how long requests are sent (default 30s)")
	fs.BoolVar(&f.stream, "stream", true, "stream responses (needed for TTFT and inter-token latency)")
	fs.IntVar(&f.maxTokens, "max-tokens", 0, "override the workload's max_tokens")
	fs.DurationVar(&f.sloTTFT, "slo-ttft", 0, "goodput SLO on time to first token")
	fs.DurationVar(&f.sloTPOT, "slo-tpot", 0, "goodput SLO on time per output token")
	fs.Uint64Var(&f.seed, "seed", 1, "seed of the workload and arrivals")
	fs.StringVar(&f.jsonOut, "json", "", "write the JSON report to this file")
	fs.StringVar(&f.svgOut, "svg", "", "write an SVG plot to this file")
	fs.StringVar(&f.scenario, "scenario", "", "benchmark scenario: "+strings.Join(loadtest.Scenarios(), ", "))
	listFlag(fs, &f.policies, "compare-policies", "policies the hetero scenario compares")
	fs.StringVar(&f.gpus, "gpus", "", "simulated GPU groups of the scenario cluster (default t4,a40,3090)")
	fs.Float64Var(&f.simSpeed, "sim-speed", 0, "simulated time speed-up of the scenario cluster")
	fs.DurationVar(&f.killNodeAt, "kill-node-at", 0, "kill one simulated agent this far into the run (SIGKILL)")
	fs.StringVar(&f.killNode, "kill-node", "", "which agent --kill-node-at kills (default: the last)")
	fs.Float64Var(&f.attainment, "attainment", 0, "capacity: share of requests that must meet the SLO (default 0.9)")
	fs.Float64Var(&f.capStart, "capacity-start", 0, fmt.Sprintf("capacity: first rate probed, simulated req/s (default %g)", loadtest.CapacityDefaultStartRPS))
	fs.IntVar(&f.capProbes, "capacity-probes", 0, fmt.Sprintf("capacity: most probes per policy (default %d)", loadtest.CapacityDefaultProbes))
	fs.Float64Var(&f.capTolerance, "capacity-tolerance", 0, fmt.Sprintf("capacity: stop bisecting at this relative bracket width (default %g)", loadtest.DefaultSearchTolerance))
	fs.StringVar(&f.promptTokens, "prompt-tokens", "", "synthetic workload: prompt length distribution (N, uniform:MIN:MAX, normal:MEAN:SD, lognormal:MEAN:SD; default 256)")
	fs.StringVar(&f.outputTokens, "output-tokens", "", "synthetic workload: output length distribution, as max_tokens (default 128)")
	fs.IntVar(&f.batchLines, "batch-lines", 0, "lines of the bulk job of the mixed workload and batch-mix (default 200; batch-mix 2000)")
	fs.StringVar(&f.logDir, "log-dir", "", "keep the scenario processes' logs in this directory")
	fs.StringVar(&f.simEngine, "sim-engine", "", "capacity: the model server the simulated nodes behave like, ollama or vllm (default "+loadtest.CapacityDefaultEngine+")")
	fs.IntSliceVar(&f.nodes, "nodes", nil, "scale: fleet sizes to measure (default 10,100,1000)")
	fs.StringVar(&f.redisURL, "redis-url", "", "scale: also measure two gateways sharing this Redis")
	fs.IntVar(&f.streams, "streams", 0, fmt.Sprintf("streams: slow streams held open at once (default %d)", loadtest.StreamsDefaultCount))
	fs.DurationVar(&f.streamInterval, "stream-interval", 0, "streams: pause between two tokens of a slow stream (default 1s)")
	fs.BoolVarP(&f.quiet, "quiet", "q", false, "no progress lines")
	return cmd
}

func runLoadtest(cmd *cobra.Command, f loadtestFlags) error {
	var progress io.Writer = cmd.ErrOrStderr()
	if f.quiet {
		progress = nil
	}
	opts := loadtest.Options{
		Target: f.target, APIKey: f.apiKey, Model: f.model, Workload: loadtest.Workload(f.workload),
		Stream: f.stream, MaxTokens: f.maxTokens, RPS: f.rps, Concurrency: f.concurrency,
		Duration: f.duration, Seed: f.seed, SLOTTFT: f.sloTTFT, SLOTPOT: f.sloTPOT, Progress: progress,
		BatchLines: f.batchLines,
	}
	for _, d := range []struct {
		flag, v string
		into    *loadtest.TokenDist
	}{{"prompt-tokens", f.promptTokens, &opts.PromptTokens}, {"output-tokens", f.outputTokens, &opts.OutputTokens}} {
		if d.v == "" {
			continue
		}
		if opts.Workload != loadtest.WorkloadSynthetic {
			return fmt.Errorf("--%s shapes the synthetic workload: add --workload synthetic", d.flag)
		}
		td, err := loadtest.ParseTokenDist(d.v)
		if err != nil {
			return fmt.Errorf("--%s: %w", d.flag, err)
		}
		*d.into = td
	}
	if f.ramp != "" {
		from, to, err := loadtest.ParseRamp(f.ramp)
		if err != nil {
			return err
		}
		opts.RampFrom, opts.RampTo = from, to
	}
	type report interface {
		WriteText(io.Writer) error
		WriteJSON(io.Writer) error
		WriteSVG(io.Writer) error
	}
	var rep report
	if f.scenario != "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		r, err := loadtest.RunScenario(cmd.Context(), f.scenario, loadtest.ScenarioOptions{
			Binary: exe, Load: opts, Policies: f.policies, GPUs: f.gpus, SimSpeed: f.simSpeed,
			KillNodeAt: f.killNodeAt, KillNode: f.killNode, Progress: progress, LogDir: f.logDir,
			Attainment: f.attainment, Engine: f.simEngine, Nodes: f.nodes, RedisURL: f.redisURL,
			Streams: f.streams, StreamInterval: f.streamInterval,
			Search: loadtest.SearchOptions{Start: f.capStart, MaxProbes: f.capProbes, Tolerance: f.capTolerance},
		})
		if err != nil {
			return err
		}
		rep = r
	} else {
		if f.target == "" {
			return errors.New("loadtest needs --target URL (or --scenario)")
		}
		if f.killNodeAt > 0 {
			return errors.New("--kill-node-at needs a cluster herd started: use --scenario fault or hetero")
		}
		// Figures from simulated GPUs are labelled so: the nodes' own heartbeats say whether they are.
		nodes, err := loadtest.ProbeTarget(cmd.Context(), nil, f.target, f.apiKey)
		if err != nil {
			return err
		}
		switch {
		case nodes.AnySimulated():
			opts.Simulated = true
			noteLine(progress, "target nodes %v are SIMULATED (from /admin/v1/nodes): every figure is labelled simulated", nodes.Simulated)
		case !nodes.Known:
			noteLine(progress, "could not tell whether the target's nodes are simulated (%s): figures are not labelled", nodes.Reason)
		}
		r, err := loadtest.Run(cmd.Context(), opts)
		if err != nil && (r == nil || !errors.Is(err, context.Canceled)) {
			return err
		}
		// Interrupted: the partial report is still worth printing.
		rep = r
	}
	if err := rep.WriteText(cmd.OutOrStdout()); err != nil {
		return err
	}
	write := func(path string, fn func(io.Writer) error) error {
		if path == "" {
			return nil
		}
		var buf strings.Builder
		if err := fn(&buf); err != nil {
			return err
		}
		if err := atomicfile.Write(path, []byte(buf.String()), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s\n", path)
		return nil
	}
	if err := write(f.jsonOut, rep.WriteJSON); err != nil {
		return err
	}
	return write(f.svgOut, rep.WriteSVG)
}

func newFakeBackendCmd() *cobra.Command {
	var addr, mode string
	var opts loadtest.FakeOptions
	cmd := &cobra.Command{
		Use:    "fake-backend",
		Short:  "Serve a fast fake OpenAI-compatible backend (for benchmarks and fault drills)",
		Args:   cobra.NoArgs,
		Hidden: false,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := loadtest.ParseFaultMode(mode)
			if err != nil {
				return err
			}
			return loadtest.ServeFake(cmd.Context(), addr, m, opts, func(url string) {
				fmt.Fprintf(cmd.OutOrStdout(), "fake OpenAI backend (%s) on %s/v1\n", m, url)
			})
		},
	}
	cmd.Flags().StringVar(&addr, "listen", "127.0.0.1:8000", "address")
	cmd.Flags().StringVar(&mode, "mode", "ok", "fault mode: ok, error, slow, hang or flaky")
	cmd.Flags().IntVar(&opts.Chunks, "chunks", 20, "content chunks per response (a smaller max_tokens lowers it)")
	cmd.Flags().DurationVar(&opts.ChunkDelay, "chunk-delay", 0, "pause between streamed chunks (a slow GPU's tokens)")
	listFlag(cmd.Flags(), &opts.Models, "models", "models /v1/models lists (default "+loadtest.DefaultFakeModel+"; any name is served)")
	listFlag(cmd.Flags(), &opts.FastModels, "fast-models", "models streamed with --fast-chunk-delay instead of --chunk-delay")
	cmd.Flags().DurationVar(&opts.FastChunkDelay, "fast-chunk-delay", 0, "pause between streamed chunks of --fast-models")
	return cmd
}

func newFakeFleetCmd() *cobra.Command {
	var gateways string
	var o loadtest.FleetOptions
	cmd := &cobra.Command{
		Use:   "fake-fleet",
		Short: "Serve a fleet of fake nodes that heartbeat to a gateway (for the scale benchmark)",
		Long: "fake-fleet pretends to be --nodes agents in one process: each heartbeats to --gateway every\n" +
			"--interval with 8 GPUs and 10 of 200 models (Zipf popularity), and answers inference with the\n" +
			"fake backend under its own path prefix. No GPU and no model: it measures the gateway's cost.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Gateways = splitList(gateways)
			return loadtest.ServeFleet(cmd.Context(), o, func(url string) {
				fmt.Fprintf(cmd.OutOrStdout(), "fake fleet of %d nodes serving on %s\n", o.Nodes, url)
			})
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&gateways, "gateway", "http://127.0.0.1:8080", "gateway URL(s), comma-separated")
	fs.StringVar(&o.Token, "cluster-token", os.Getenv("HERD_CLUSTER_TOKEN"), "cluster token")
	fs.IntVar(&o.Nodes, "nodes", 100, "how many nodes")
	fs.StringVar(&o.Listen, "listen", "127.0.0.1:0", "inference listener")
	fs.DurationVar(&o.Interval, "interval", loadtest.FleetDefaultInterval, "heartbeat interval of each node")
	fs.Uint64Var(&o.Seed, "seed", 1, "seed of the fleet's layout")
	fs.BoolVar(&o.FullHeartbeats, "full-heartbeats", false, "send every heartbeat in full (as agents before delta heartbeats did)")
	return cmd
}

// noteLine writes one line to w unless w is nil (--quiet).
func noteLine(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}

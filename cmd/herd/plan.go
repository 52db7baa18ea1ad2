package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/herd-llm/herd/atomicfile"
	"github.com/herd-llm/herd/models"
	"github.com/herd-llm/herd/plan"
)

func newPlanCmd() *cobra.Command {
	spec := plan.DefaultSpec()
	var file, catalogue, jsonOut, svgOut, logDir string
	var noVerify, quiet bool
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Plan a cluster for a workload: ranked, costed options, each verified on a simulated cluster",
		Long: "herd plan answers \"what should I buy for this workload\". From the workload (requests/s, prompt\n" +
			"and output token distributions, model, SLO) and a hardware catalogue with prices and power (T4,\n" +
			"A40, RTX 3090, L4, A100, H100; the built-in prices and their sources are in the JSON output), it\n" +
			"enumerates cluster options (1..--max-nodes nodes of one GPU type, and mixes of two types up to\n" +
			"--max-mix-nodes), estimates analytically which can meet the SLO, then verifies the cheapest of\n" +
			"those by a capacity search on a SIMULATED cluster of that size (the herd binary itself, one\n" +
			"simulated agent per node, the herd policy), and ranks the options by cost. Per option: capex,\n" +
			"power at the workload's rate, energy and cost per million output tokens (capex amortised over\n" +
			"--amortize-years plus electricity at --electricity-price), estimated and verified capacity, and a\n" +
			"verdict: pass / fail (verified) or likely / no (estimate only). Verified figures are simulated.\n\n" +
			"Token distributions: N, uniform:MIN:MAX, normal:MEAN:SD or lognormal:MEAN:SD.\n\n" +
			"Settings come, lowest precedence first, from the defaults, a plan file (--file, YAML with the keys\n" +
			"workload{rps,model,prompt_tokens,output_tokens,slo{ttft,tpot},attainment}, gpus, catalogue,\n" +
			"max_nodes, max_mix_nodes, electricity_usd_per_kwh, amortize_years, verify, verify_probes,\n" +
			"probe_duration, sim_speed, seed, top), HERD_PLAN_* environment variables (HERD_PLAN_RPS, ...)\n" +
			"and the flags. A catalogue file (--catalogue) lists {gpu, price_usd, host_power_watts, source}\n" +
			"entries that replace the built-in prices of those GPUs.",
		Example: "  herd plan --rps 6 --prompt-tokens lognormal:600:300 --output-tokens uniform:64:256 --slo-ttft 2s --slo-tpot 100ms\n" +
			"  herd plan --file workload.yaml --catalogue prices.yaml --json plan.json --svg plan.svg",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fs := cmd.Flags()
			if err := layerPlan(fs, &spec, file); err != nil {
				return err
			}
			if catalogue != "" {
				data, err := os.ReadFile(catalogue)
				if err != nil {
					return fmt.Errorf("catalogue: %w", err)
				}
				list, err := plan.ParseCatalogue(data)
				if err != nil {
					return fmt.Errorf("%s: %w", catalogue, err)
				}
				spec.Catalogue = append(spec.Catalogue, list...)
			}
			if noVerify {
				spec.Verify = -1
			}
			if err := spec.Validate(); err != nil {
				return err
			}
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			var progress io.Writer = cmd.ErrOrStderr()
			if quiet {
				progress = nil
			}
			v := &plan.SimVerifier{Binary: exe, LogDir: logDir, Progress: progress}
			res, err := plan.Run(cmd.Context(), spec, v, func(format string, args ...any) {
				if progress != nil {
					fmt.Fprintf(progress, format+"\n", args...)
				}
			})
			if err != nil {
				return err
			}
			if err := res.WriteText(cmd.OutOrStdout()); err != nil {
				return err
			}
			for _, out := range []struct {
				path string
				fn   func(io.Writer) error
			}{{jsonOut, res.WriteJSON}, {svgOut, res.WriteSVG}} {
				if out.path == "" {
					continue
				}
				var buf strings.Builder
				if err := out.fn(&buf); err != nil {
					return err
				}
				if err := atomicfile.Write(out.path, []byte(buf.String()), 0o644); err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s\n", out.path)
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&file, "file", "", "plan file (YAML; also HERD_PLAN_FILE)")
	fs.StringVar(&catalogue, "catalogue", "", "catalogue file of node prices (YAML; also HERD_PLAN_CATALOGUE)")
	w := &spec.Workload
	fs.Float64Var(&w.RPS, "rps", w.RPS, "requests/s the cluster must serve (Poisson)")
	fs.StringVar(&w.Model, "model", w.Model, "model every request asks for")
	fs.StringVar(&w.PromptTokens, "prompt-tokens", w.PromptTokens, "prompt length distribution, tokens")
	fs.StringVar(&w.OutputTokens, "output-tokens", w.OutputTokens, "output length distribution, tokens")
	fs.DurationVar(&w.SLO.TTFT, "slo-ttft", w.SLO.TTFT, "SLO on time to first token")
	fs.DurationVar(&w.SLO.TPOT, "slo-tpot", w.SLO.TPOT, "SLO on time per output token")
	fs.Float64Var(&w.Attainment, "attainment", w.Attainment, "share of requests that must meet the SLO")
	listFlag(fs, &spec.GPUs, "gpus", "GPU types to consider (default: every priced one: "+strings.Join(pricedGPUs(), ",")+")")
	fs.IntVar(&spec.MaxNodes, "max-nodes", spec.MaxNodes, "largest homogeneous option, nodes")
	fs.IntVar(&spec.MaxMixNodes, "max-mix-nodes", spec.MaxMixNodes, "largest two-type mix, nodes (default min(max-nodes, 6))")
	fs.Float64Var(&spec.ElectricityUSDPerKWh, "electricity-price", spec.ElectricityUSDPerKWh, "electricity price, $/kWh")
	fs.Float64Var(&spec.AmortizeYears, "amortize-years", spec.AmortizeYears, "years the capex is spread over in $/Mtok")
	fs.IntVar(&spec.Verify, "verify", spec.Verify, "verify this many passing candidates by simulation")
	fs.IntVar(&spec.VerifyMax, "verify-max", spec.VerifyMax, "most simulated verifications in all (default 2 × --verify)")
	fs.IntVar(&spec.VerifyProbes, "verify-probes", spec.VerifyProbes, "most probes per verification (the first, at --rps, decides pass/fail)")
	fs.DurationVar(&spec.ProbeDuration, "probe-duration", spec.ProbeDuration, "length of one probe, simulated time")
	fs.Float64Var(&spec.SimSpeed, "sim-speed", spec.SimSpeed, "time scale of the simulated clusters")
	fs.IntVar(&spec.MaxSimNodes, "max-sim-nodes", spec.MaxSimNodes, "largest option verified by simulation, nodes")
	fs.Uint64Var(&spec.Seed, "seed", spec.Seed, "seed of the simulated workload")
	fs.IntVar(&spec.Top, "top", spec.Top, "options listed")
	fs.BoolVar(&noVerify, "no-verify", false, "analytic estimate only: start no simulated cluster")
	fs.StringVar(&jsonOut, "json", "", "write the JSON result to this file")
	fs.StringVar(&svgOut, "svg", "", "write an SVG plot (capacity against price) to this file")
	fs.StringVar(&logDir, "log-dir", "", "keep the simulated processes' logs in this directory")
	fs.BoolVarP(&quiet, "quiet", "q", false, "no progress lines")
	return cmd
}

func pricedGPUs() []string {
	var out []string
	for _, p := range models.NodePrices() {
		out = append(out, p.GPU)
	}
	return out
}

// planEnv maps a plan flag to its environment variable: "rps" → "HERD_PLAN_RPS".
func planEnv(flag string) string {
	return "HERD_PLAN_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// layerPlan applies, over the defaults, the plan file (file, else HERD_PLAN_FILE), then the
// HERD_PLAN_* environment, then the flags the user typed.
func layerPlan(fs *pflag.FlagSet, spec *plan.Spec, file string) error {
	typed := map[string]string{}
	fs.Visit(func(f *pflag.Flag) { typed[f.Name] = f.Value.String() })
	if file == "" {
		file = os.Getenv(planEnv("file"))
	}
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("plan file: %w", err)
		}
		if err := plan.ParseSpec(data, spec); err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
	}
	var errs []string
	fs.VisitAll(func(f *pflag.Flag) {
		if _, ok := typed[f.Name]; ok || f.Name == "file" || f.Name == "help" {
			return
		}
		if v, ok := os.LookupEnv(planEnv(f.Name)); ok {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Sprintf("%s=%q: %v", planEnv(f.Name), v, err))
			}
		}
	})
	for name, v := range typed {
		if err := fs.Lookup(name).Value.Set(v); err != nil {
			errs = append(errs, fmt.Sprintf("--%s: %v", name, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("plan: %s", strings.Join(errs, "; "))
	}
	return nil
}

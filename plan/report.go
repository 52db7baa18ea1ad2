package plan

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/herd-llm/herd/loadtest"
)

// WriteJSON writes the result as indented JSON.
func (r *Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func verifiedText(o Option) string {
	v := o.Verified
	if v == nil {
		return "-"
	}
	if v.Error != "" {
		return "error"
	}
	switch {
	case !v.Bounded:
		return fmt.Sprintf("≥ %.2f", v.CapacityRPS)
	case v.FailRPS > 0:
		return fmt.Sprintf("%.2f (fails %.2f)", v.CapacityRPS, v.FailRPS)
	}
	return fmt.Sprintf("%.2f", v.CapacityRPS)
}

// WriteText writes the result as a markdown table, best option first.
func (r *Result) WriteText(w io.Writer) error {
	var b strings.Builder
	wl := r.Workload
	fmt.Fprintf(&b, "### herd plan — %g req/s of %s, prompt %s tokens, output %s tokens, ≥ %g%% within TTFT ≤ %s and TPOT ≤ %s\n\n",
		wl.RPS, wl.Model, wl.PromptTokens, wl.OutputTokens, 100*wl.Attainment, wl.SLO.TTFT, wl.SLO.TPOT)
	fmt.Fprintf(&b, "%d options considered, %d verified on SIMULATED clusters (sim speed %g×, figures in simulated time); electricity $%g/kWh, capex over %g years.\n\n",
		r.Considered, r.Verified, r.SimSpeed, r.ElectricityUSDPerKWh, r.AmortizeYears)
	b.WriteString("| # | option | nodes | capex $ | power W | estimate req/s | verified req/s (simulated) | verdict | tok/s | kWh / Mtok | $ / Mtok |\n")
	b.WriteString("| ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |\n")
	for i, o := range r.Options {
		fmt.Fprintf(&b, "| %d | %s | %d | %.0f | %.0f | %.2f | %s | %s | %.0f | %.3f | %.3f |\n", i+1, o.Name, o.NodeCount, o.CapexUSD, o.PowerW,
			o.Estimate.CapacityRPS, verifiedText(o), o.Verdict, o.TokS, o.KWhPerMTok, o.USDPerMTok)
	}
	b.WriteByte('\n')
	if r.Recommendation != "" {
		fmt.Fprintf(&b, "Recommendation: **%s**, the cheapest option that met the SLO at %g req/s in a simulated run.\n", r.Recommendation, wl.RPS)
	} else {
		b.WriteString("No option was verified to meet the SLO (verdict pass); \"likely\" options pass the analytic estimate only.\n")
	}
	b.WriteString("\nverdict: pass / fail = verified by a capacity search on a simulated cluster of that size; likely / no = analytic estimate only.\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteSVG plots every listed option's capacity (verified when it was, else estimated) against
// its price, with the workload's rate as a dashed line.
func (r *Result) WriteSVG(w io.Writer) error {
	var pts []loadtest.ScatterPoint
	for _, o := range r.Options {
		y, kind := o.Estimate.CapacityRPS, "estimate"
		if v := o.Verified; v != nil && v.Error == "" {
			y, kind = v.CapacityRPS, o.Verdict
		}
		pts = append(pts, loadtest.ScatterPoint{Label: o.Name, X: o.CapexUSD / 1000, Y: y, Kind: kind})
	}
	return loadtest.WriteScatterSVG(w, fmt.Sprintf("herd plan: capacity against price for %g req/s of %s", r.Workload.RPS, r.Workload.Model),
		"capex (thousand $)", "capacity within the SLO (req/s)", r.Workload.RPS, fmt.Sprintf("workload %g req/s", r.Workload.RPS), pts)
}

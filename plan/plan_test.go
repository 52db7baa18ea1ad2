package plan

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/herd-llm/herd/loadtest"

	"github.com/herd-llm/herd/internal/golden"
)

// fakeVerifier answers from a table of capacities by option name, and records what it was asked.
type fakeVerifier struct {
	capacity map[string]float64
	asked    []string
	err      map[string]error
}

var _ Verifier = (*fakeVerifier)(nil)

func (f *fakeVerifier) Verify(_ context.Context, o *Option, w VerifyWorkload) (*Verification, error) {
	f.asked = append(f.asked, o.Name)
	if err := f.err[o.Name]; err != nil {
		return nil, err
	}
	c, ok := f.capacity[o.Name]
	if !ok {
		c = o.Estimate.CapacityRPS // the estimate was right
	}
	return &Verification{Simulated: true, CapacityRPS: c, Bounded: true, FailRPS: c * 1.2, Pass: c >= w.RPS, TokS: c * w.OutputTokens.Mean()}, nil
}

func smallSpec() Spec {
	s := DefaultSpec()
	s.Workload.RPS = 3
	s.GPUs = []string{"t4", "3090", "a40"}
	s.MaxNodes, s.MaxMixNodes = 6, 3
	s.Top = 8
	return s
}

func TestEnumerate(t *testing.T) {
	p, err := smallSpec().parse()
	if err != nil {
		t.Fatal(err)
	}
	opts := p.enumerate()
	// 3 types × 6 counts, plus 3 pairs × the (na, nb) with na+nb ≤ 3: (1,1), (1,2), (2,1).
	if len(opts) != 3*6+3*3 {
		t.Fatalf("%d options", len(opts))
	}
	per := map[string]nodeModel{}
	for _, g := range p.gpus {
		per[g.Key] = p.perNode(g)
	}
	names := map[string]bool{}
	for i := range opts {
		p.cost(&opts[i], per)
		if names[opts[i].Name] {
			t.Errorf("duplicate option %s", opts[i].Name)
		}
		names[opts[i].Name] = true
	}
	for _, want := range []string{"t4", "6x3090", "t4,2x3090", "2x3090,a40"} {
		if !names[want] {
			t.Errorf("no option %s among %v", want, names)
		}
	}
}

func TestPerNodeEstimate(t *testing.T) {
	cases := []struct {
		name     string
		edit     func(*Spec)
		gpu      string
		wantRate bool
		why      string
	}{
		{"3090 serves the default workload", nil, "3090", true, ""},
		{"a T4 cannot hold a 70B model", func(s *Spec) { s.Workload.Model = "llama3.1:70b" }, "t4", false, "needs"},
		{"a tight TPOT rules out a T4", func(s *Spec) { s.Workload.SLO.TPOT = 20 * time.Millisecond }, "t4", false, "TPOT"},
		{"a tight TTFT rules out long prompts", func(s *Spec) { s.Workload.SLO.TTFT = 100 * time.Millisecond }, "t4", false, "prefill"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := smallSpec()
			if tc.edit != nil {
				tc.edit(&s)
			}
			p, err := s.parse()
			if err != nil {
				t.Fatal(err)
			}
			var nm nodeModel
			for _, g := range p.gpus {
				if g.Key == tc.gpu {
					nm = p.perNode(g)
				}
			}
			if (nm.rate > 0) != tc.wantRate || !strings.Contains(nm.why, tc.why) {
				t.Errorf("rate %v why %q", nm.rate, nm.why)
			}
		})
	}
}

func TestRankAndVerify(t *testing.T) {
	cases := []struct {
		name      string
		capacity  map[string]float64
		verify    int
		wantAsked []string
		wantRec   string
	}{
		{"the cheapest likely option verifies", nil, 1, []string{"3x3090"}, "3x3090"},
		{"a failed verification moves on to the next", map[string]float64{"3x3090": 2.5}, 1, []string{"3x3090", "2x3090,a40"}, "2x3090,a40"},
		{"no verification: no recommendation", nil, -1, nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := smallSpec()
			s.Verify = tc.verify
			v := &fakeVerifier{capacity: tc.capacity}
			res, err := Run(context.Background(), s, v, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(v.asked, tc.wantAsked) || res.Recommendation != tc.wantRec {
				t.Fatalf("asked %v recommendation %q, want %v %q\n%+v", v.asked, res.Recommendation, tc.wantAsked, tc.wantRec, res.Options)
			}
			// Ranked: verdicts in order, capex ascending within a verdict.
			for i := 1; i < len(res.Options); i++ {
				a, b := res.Options[i-1], res.Options[i]
				if verdictRank(a.Verdict) > verdictRank(b.Verdict) || (a.Verdict == b.Verdict && a.CapexUSD > b.CapexUSD) {
					t.Errorf("options %d and %d out of order: %s %s $%v, %s %s $%v", i-1, i, a.Name, a.Verdict, a.CapexUSD, b.Name, b.Verdict, b.CapexUSD)
				}
			}
		})
	}
}

func TestVerifierErrorIsRecorded(t *testing.T) {
	s := smallSpec()
	s.Verify = 1
	v := &fakeVerifier{err: map[string]error{"3x3090": errors.New("no free port")}}
	res, err := Run(context.Background(), s, v, nil)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, o := range res.Options {
		if o.Name == "3x3090" {
			found = true
			if o.Verified == nil || o.Verified.Error == "" || o.Verdict != "likely" {
				t.Errorf("option %+v", o)
			}
		}
	}
	if !found || res.Recommendation == "3x3090" {
		t.Errorf("recommendation %q", res.Recommendation)
	}
}

func TestCosts(t *testing.T) {
	s := smallSpec()
	s.GPUs = []string{"3090"}
	s.MaxNodes, s.MaxMixNodes = 4, 1
	s.ElectricityUSDPerKWh, s.AmortizeYears = 0.2, 1
	s.Verify = -1
	res, err := Run(context.Background(), s, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var o Option
	for _, x := range res.Options {
		if x.Name == "4x3090" {
			o = x
		}
	}
	if o.CapexUSD != 4*4700 || o.NodeCount != 4 {
		t.Fatalf("option %+v", o)
	}
	// Peak: 4 × (100 W host + 350 W board); serving 3 of ~4.9 req/s draws less.
	if o.PeakPowerW != 1800 || !(o.PowerW < o.PeakPowerW && o.PowerW > 4*(100+25)) {
		t.Errorf("power %v peak %v", o.PowerW, o.PeakPowerW)
	}
	tokS := 3 * 160.0 // rate × mean output of uniform:64:256
	if o.TokS != tokS {
		t.Errorf("tok/s %v", o.TokS)
	}
	wantKWh := o.PowerW * 1e6 / tokS / 3.6e6
	wantUSD := (o.CapexUSD/(365.25*24*3600) + o.PowerW/1000*0.2/3600) * 1e6 / tokS
	if d := o.KWhPerMTok - wantKWh; d > 0.001 || d < -0.001 {
		t.Errorf("kWh/Mtok %v, want %v", o.KWhPerMTok, wantKWh)
	}
	if d := o.USDPerMTok - wantUSD; d > 0.001 || d < -0.001 {
		t.Errorf("$/Mtok %v, want %v", o.USDPerMTok, wantUSD)
	}
}

func TestCatalogueOverridesPrice(t *testing.T) {
	s := smallSpec()
	s.Verify = -1
	s.Workload.RPS = 1
	s.Catalogue = append(s.Catalogue, loadtestPrice("t4", 900))
	res, err := Run(context.Background(), s, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range res.Prices {
		if p.GPU == "t4" && (p.PriceUSD != 900 || p.Source != "catalogue file" || p.HostPowerWatts != 100) {
			t.Errorf("t4 price %+v", p)
		}
	}
	// 1 req/s needs three T4s (0.43 req/s each), at $2,700 cheaper than any 3090.
	if res.Options[0].Name != "3xt4" {
		t.Errorf("cheap T4s should lead: %s", res.Options[0].Name)
	}
}

func TestPlanGolden(t *testing.T) {
	s := smallSpec()
	s.Verify = 2
	v := &fakeVerifier{capacity: map[string]float64{"3x3090": 2.5}}
	res, err := Run(context.Background(), s, v, nil)
	if err != nil {
		t.Fatal(err)
	}
	var txt, js, svg bytes.Buffer
	if err := res.WriteText(&txt); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "testdata/plan.golden.md", txt.Bytes())
	if err := res.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "testdata/plan.golden.json", js.Bytes())
	var doc map[string]any
	if err := json.Unmarshal(js.Bytes(), &doc); err != nil || doc["simulated"] != true {
		t.Fatalf("JSON %v %v", err, doc["simulated"])
	}
	if err := res.WriteSVG(&svg); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "testdata/plan.golden.svg", svg.Bytes())
	if !strings.Contains(svg.String(), "SIMULATED") || !strings.Contains(txt.String(), "SIMULATED") {
		t.Error("not labelled simulated")
	}
}

// The verifier the binary uses must satisfy the interface with real loadtest types.
var _ = loadtest.SimProbe{}

package loadtest

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/herd-llm/herd/internal/golden"
)

// fixtureReport is a fixed, varied run: streaming requests on two nodes, slower over time,
// with a few failures of different kinds.
func fixtureReport(label string, slow time.Duration) *Report {
	ms := time.Millisecond
	var samples []Sample
	for i := range 60 {
		s := Sample{
			Index: uint64(i), Start: time.Duration(i) * 100 * ms, Streamed: true,
			TTFT: time.Duration(40+(i*37)%200)*ms + slow, PromptTokens: 30 + i%7, OutputTokens: 16,
			Status: 200, Node: []string{"sim1-t4", "sim2-a40"}[i%2],
		}
		s.Latency = s.TTFT + time.Duration(15*(15+i%5))*ms
		for k := range 15 {
			s.ITL = append(s.ITL, time.Duration(12+(i+k)%7)*ms)
		}
		switch i {
		case 13:
			s = Sample{Index: 13, Start: s.Start, Latency: 3 * ms, Err: ErrHTTP5xx, Status: 503, ErrMsg: "HTTP 503: no node can serve", Streamed: true}
		case 41:
			s.Err, s.ErrMsg = ErrStreamBroken, "stream error: node lost"
		case 57:
			s = Sample{Index: 57, Start: s.Start, Latency: 2 * ms, Err: ErrConnect, ErrMsg: "connection refused", Streamed: true}
		}
		samples = append(samples, s)
	}
	o := Options{Target: "http://127.0.0.1:8080", Label: label, Simulated: true, Stream: true, RPS: 10,
		Duration: 6 * time.Second, Seed: 42, Workload: WorkloadSharedPrefix,
		SLOTTFT: 200 * ms, SLOTPOT: 18 * ms}
	r := summarize(samples, 6200*ms, o)
	r.OfferedRPS = 10
	r.Events = []EventMark{{Name: "kill sim2-a40", AtS: 3}}
	r.samples = samples
	return r
}

func TestReportJSONGolden(t *testing.T) {
	var b bytes.Buffer
	if err := fixtureReport("herd", 0).WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "testdata/report.golden.json", b.Bytes())
	// The shape others rely on: these keys exist at the top level.
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"simulated", "goodput_rps", "throughput_rps", "output_tok_s", "ttft_ms", "tpot_ms", "itl_ms", "e2e_ms", "errors", "nodes", "slo"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON lacks %q", k)
		}
	}
}

func TestReportTextGolden(t *testing.T) {
	var b bytes.Buffer
	if err := fixtureReport("herd", 0).WriteText(&b); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "testdata/report.golden.txt", b.Bytes())
	if !strings.Contains(b.String(), "SIMULATED") {
		t.Error("a simulated run's table does not say so")
	}
}

// wellFormed parses an XML document to its end.
func wellFormed(t *testing.T, b []byte) {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(b))
	root := ""
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	if root != "svg" {
		t.Fatalf("root element %q, want svg", root)
	}
}

func TestSVGGolden(t *testing.T) {
	var b bytes.Buffer
	if err := WriteSVG(&b, "hetero <test> & co", fixtureReport("round_robin", 80*time.Millisecond), fixtureReport("herd", 0)); err != nil {
		t.Fatal(err)
	}
	wellFormed(t, b.Bytes())
	golden.Check(t, "testdata/plot.golden.svg", b.Bytes())
	if !strings.Contains(b.String(), "SIMULATED") || !strings.Contains(b.String(), "&lt;test&gt; &amp; co") {
		t.Error("title not labelled simulated or not escaped")
	}
}

func TestSVGEdgeCasesStayWellFormed(t *testing.T) {
	empty := summarize(nil, 0, Options{Target: "http://x", RPS: 1})
	allFailed := summarize([]Sample{{Err: ErrConnect, Latency: time.Millisecond}}, time.Millisecond, Options{Target: "http://x", RPS: 1})
	allFailed.samples = []Sample{{Err: ErrConnect, Latency: time.Millisecond}}
	for _, r := range []*Report{empty, allFailed} {
		var b bytes.Buffer
		if err := r.WriteSVG(&b); err != nil {
			t.Fatal(err)
		}
		wellFormed(t, b.Bytes())
		if strings.Contains(b.String(), "NaN") || strings.Contains(b.String(), "Inf") {
			t.Errorf("SVG has non-numbers:\n%s", b.String())
		}
	}
}

func TestNiceScale(t *testing.T) {
	tests := []struct{ v, max, step float64 }{
		{0, 1, 0.25}, {7, 8, 2}, {10, 10, 2}, {0.37, 0.4, 0.1}, {1234, 1500, 500}, {99, 100, 20},
	}
	for _, tt := range tests {
		s := niceScale(tt.v)
		if s.max != tt.max || s.step != tt.step {
			t.Errorf("niceScale(%v) = %+v, want max %v step %v", tt.v, s, tt.max, tt.step)
		}
	}
}

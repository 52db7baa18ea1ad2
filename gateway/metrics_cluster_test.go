package gateway

import (
	"bytes"
	"compress/gzip"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/herd-llm/herd/gateway/admission"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// oddFleet fills env's registry with nodes whose IDs, GPU names and model names need escaping
// (quotes, backslashes, line feeds, non-ASCII), one of each kind that is not valid UTF-8 (its
// series are left out), a stale node, a drained one and odd queue labels.
func oddFleet(env *adminEnv) {
	gpus := func(name string, n int) []agentapi.GPU {
		var out []agentapi.GPU
		for i := range n {
			out = append(out, agentapi.GPU{Index: i, Name: name, MemoryTotalBytes: 16106127360, MemoryUsedBytes: uint64(i) << 30,
				UtilizationRatio: float64(i) / 8, TemperatureCelsius: 40.5 + float64(i), PowerWatts: 52.25, PowerLimitWatts: 70,
				Healthy: i != 1, ThrottleReasons: map[bool][]string{true: {agentapi.ThrottleHWThermal}}[i == 2]})
		}
		return out
	}
	models := []agentapi.Model{
		{Name: "llama3.1:8b", Resident: true, PromptTokens: 900, CachedPromptTokens: 300},
		{Name: `we"ird\model` + "\nname", PromptTokens: 7},
		{Name: "qwen2.5"}, {Name: "qwen2.5:latest", Resident: true}, // one series, resident
		{Name: "modèle/日本"},
		{Name: "bad\xff"},
	}
	beats := []agentapi.Heartbeat{
		{NodeID: "stale", Address: "http://s:1", Backend: agentapi.BackendOllama, GPUs: gpus("NVIDIA A40", 1), Models: models[:1]},
		{NodeID: "a", Address: "http://a:1", Backend: agentapi.BackendOllama, Simulated: true, Slots: 4, InFlight: 2, Queued: 1,
			GPUs: gpus("Tesla T4", 3), Models: models},
		{NodeID: `n"o\de` + "\n2", Address: "http://b:1", Backend: agentapi.BackendOllama, GPUs: gpus(`G"P\U`+"\nx", 2), Models: models[1:3]},
		{NodeID: "ünï", Address: "http://c:1", Backend: agentapi.BackendSim, GPUs: gpus("bad\xfe", 1)},
		{NodeID: "bad\xff", Address: "http://d:1", Backend: agentapi.BackendOllama, GPUs: gpus("Tesla T4", 1), Models: models[:1]},
		{NodeID: "idle", Address: "http://e:1", Backend: agentapi.BackendOllama},
	}
	env.reg.Observe(beats[0])
	env.clock.Advance(5 * time.Second)
	for _, b := range beats[1:] {
		env.reg.Observe(b)
	}
	env.reg.Acquire("a")
	if err := env.reg.SetDraining("idle", true); err != nil {
		env.t.Fatal(err)
	}
	env.queue.depths = []admission.QueueDepth{
		{Model: "llama3.1:8b", Class: "interactive", Waiting: 3, Capacity: 256},
		{Model: `q"m\` + "\n", Class: "batch", Waiting: 0, Capacity: 1},
		{Model: "bad\xff", Class: "batch", Waiting: 1, Capacity: 1},
	}
	env.clock.Advance(1250 * time.Millisecond)
}

// sampleSet is a scrape's samples, keyed by name and sorted labels, with their family's type.
type sampleSet map[string]float64

// samplesOf turns gathered families into a sampleSet (gauges and counters only: the cluster
// series have no other kind), failing on a series that appears twice.
func samplesOf(t *testing.T, mfs []*dto.MetricFamily) sampleSet {
	t.Helper()
	out := sampleSet{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := make([]string, 0, len(m.GetLabel()))
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+strconvQuote(l.GetValue()))
			}
			sort.Strings(labels)
			key := mf.GetType().String() + " " + mf.GetName() + "{" + strings.Join(labels, ",") + "}"
			if _, dup := out[key]; dup {
				t.Errorf("series %s appears twice", key)
			}
			switch mf.GetType() {
			case dto.MetricType_GAUGE:
				out[key] = m.GetGauge().GetValue()
			case dto.MetricType_COUNTER:
				out[key] = m.GetCounter().GetValue()
			default:
				out[key] = m.GetUntyped().GetValue()
			}
		}
	}
	return out
}

func strconvQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s) + `"`
}

// parseText parses a text exposition, failing the test on what the format forbids: a
// family whose HELP, TYPE or samples appear twice or apart, or a line the parser refuses.
func parseText(t *testing.T, text []byte) []*dto.MetricFamily {
	t.Helper()
	seen := map[string]bool{}
	current := ""
	for line := range strings.SplitSeq(strings.TrimSuffix(string(text), "\n"), "\n") {
		var name string
		if rest, ok := strings.CutPrefix(line, "# HELP "); ok {
			name, _, _ = strings.Cut(rest, " ")
		} else if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, _, _ = strings.Cut(rest, " ")
		} else {
			name = line[:strings.IndexAny(line, "{ ")]
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(name, suffix); ok && seen[base] && current == base {
					name = base
				}
			}
		}
		if name != current {
			if seen[name] {
				t.Errorf("family %s is not contiguous (line %q)", name, line)
			}
			seen[name], current = true, name
		}
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		t.Fatalf("the exposition does not parse: %v\n%s", err, text)
	}
	out := make([]*dto.MetricFamily, 0, len(fams))
	for _, mf := range fams {
		out = append(out, mf)
	}
	return out
}

// TestClusterWriterMatchesCollector: for the same registry state, the direct writer exports
// exactly the samples (names, labels, values, types) the client_golang collector did.
func TestClusterWriterMatchesCollector(t *testing.T) {
	env := newAdminEnv(t)
	oddFleet(env)
	pr := prometheus.NewPedanticRegistry()
	pr.MustRegister(newRefClusterCollector(env.reg, env.queue, env.clock.Now))
	ref, err := pr.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := samplesOf(t, ref)

	var out bytes.Buffer
	w := newClusterWriter(env.reg, env.queue, env.clock.Now)
	buf, err := w.write(&out, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := samplesOf(t, parseText(t, out.Bytes()))
	if len(want) < 60 {
		t.Fatalf("the reference has only %d samples: the fleet is not what the test means", len(want))
	}
	for k, v := range want {
		if g, ok := got[k]; !ok {
			t.Errorf("missing %s %v", k, v)
		} else if g != v {
			t.Errorf("%s = %v, want %v", k, g, v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("extra %s", k)
		}
	}
	for _, line := range []string{
		`herd_gpu_utilization_ratio{gpu="1",name="G\"P\\U\nx",node="n\"o\\de\n2",simulated="false"} 0.125`,
		`herd_model_resident{model="we\"ird\\model\nname:latest",node="a"} 0`,
		`herd_gateway_queue_depth{class="batch",model="q\"m\\\n"} 0`,
	} {
		if !bytes.Contains(out.Bytes(), []byte("\n"+line+"\n")) {
			t.Errorf("exposition lacks %s", line)
		}
	}

	// A second scrape into the returned buffer writes the same bytes.
	var again bytes.Buffer
	if _, err := w.write(&again, buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Bytes(), out.Bytes()) {
		t.Error("a second scrape differs")
	}
}

// TestMetricsScrapeIsValidText: the whole /metrics answer (registry families, then the
// cluster's) passes `promtool check metrics` and Go's parser, gzipped or not.
func TestMetricsScrapeIsValidText(t *testing.T) {
	env := newAdminEnv(t)
	oddFleet(env)
	env.srv.metrics.observeRequest("llama3.1:8b", "a", "200", time.Second)
	env.srv.metrics.observeStream("llama3.1:8b", "a", 100*time.Millisecond, 20*time.Millisecond)
	env.srv.metrics.observeTokens("llama3.1:8b", `n"o\de`+"\n2", "default", 5, 6)

	status, plain := env.do(http.MethodGet, "/metrics", "")
	if status != http.StatusOK {
		t.Fatalf("%d %s", status, plain)
	}
	parseText(t, plain)

	req, _ := http.NewRequest(http.MethodGet, env.http.URL+"/metrics", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	req.Header.Set("Accept", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3")
	resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ce, ct := resp.Header.Get("Content-Encoding"), resp.Header.Get("Content-Type"); ce != "gzip" || !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Fatalf("Content-Encoding %q, Content-Type %q", ce, ct)
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	unzipped, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	// Process and Go runtime figures move between two scrapes; the herd series do not.
	herdLines := func(b []byte) string {
		var keep []string
		for l := range strings.SplitSeq(string(b), "\n") {
			if strings.Contains(l, "herd_") {
				keep = append(keep, l)
			}
		}
		return strings.Join(keep, "\n")
	}
	if herdLines(unzipped) != herdLines(plain) {
		t.Error("the gzipped scrape's herd series differ from the plain one's")
	}

	bin, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("HERD_REQUIRE_PROMTOOL") == "1" {
			t.Fatal("HERD_REQUIRE_PROMTOOL is set but promtool is not installed (scripts/test-deps.sh installs it)")
		}
		t.Skip("no promtool: the exposition was parsed by Go only (set HERD_REQUIRE_PROMTOOL=1 to require it)")
	}
	path := filepath.Join(t.TempDir(), "metrics.txt")
	if err := os.WriteFile(path, plain, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(bin, "check", "metrics")
	cmd.Stdin = f
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

func TestAcceptsGzip(t *testing.T) {
	for _, tc := range []struct {
		header []string
		want   bool
	}{
		{nil, false},
		{[]string{""}, false},
		{[]string{"gzip"}, true},
		{[]string{"GZIP"}, true},
		{[]string{"identity"}, false},
		{[]string{"br, gzip;q=0.5"}, true},
		{[]string{"zstd,gzip; q=0"}, false},
		{[]string{"deflate", "gzip"}, true},
		{[]string{"gzipx"}, false},
	} {
		if got := acceptsGzip(tc.header); got != tc.want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", tc.header, got, tc.want)
		}
	}
}

// checkClusterMatchesCollector fails t unless the direct writer's samples for nodes are the
// client_golang collector's, read at the same instant, and parse as the text format.
func checkClusterMatchesCollector(t *testing.T, nodes nodeLister) {
	t.Helper()
	at := time.Now()
	now := func() time.Time { return at }
	pr := prometheus.NewPedanticRegistry()
	pr.MustRegister(newRefClusterCollector(nodes, nil, now))
	ref, err := pr.Gather()
	if err != nil {
		t.Fatalf("the collector's series do not gather: %v", err)
	}
	var out bytes.Buffer
	if _, err := newClusterWriter(nodes, nil, now).write(&out, nil); err != nil {
		t.Fatal(err)
	}
	want, got := samplesOf(t, ref), samplesOf(t, parseText(t, out.Bytes()))
	if len(got) != len(want) {
		t.Fatalf("%d samples written, the collector's %d", len(got), len(want))
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || (g != v && !(math.IsNaN(g) && math.IsNaN(v))) {
			t.Fatalf("%s = %v (%v), want %v", k, g, ok, v)
		}
	}
}

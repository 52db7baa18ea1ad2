package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/herd-llm/herd/gateway/api"

	"github.com/herd-llm/herd/internal/golden"
)

// TestNodesView is what `herd nodes` and `herd top` print: a node that stopped reporting says
// "down 12s ago" and its last figures are bracketed, never shown as current; the gateway's own
// queue is shown.
func TestNodesView(t *testing.T) {
	var doc struct {
		Nodes []api.Node `json:"nodes"`
	}
	data := `{"nodes":[
	 {"id":"gpu-1","backend":"ollama","healthy":true,"circuit":"closed","status":"up","last_seen_seconds":0.3,"in_flight":2,"slots":4,
	  "gpus":[{"index":0,"name":"NVIDIA A40","memory_total_bytes":48305799168,"memory_used_bytes":20000000000,"utilization_ratio":0.62,
	           "temperature_celsius":55,"power_watts":210,"power_limit_watts":300,"healthy":true}],
	  "models":[{"name":"llama3.1:8b","resident":true}]},
	 {"id":"gpu-2","backend":"ollama","healthy":true,"circuit":"closed","status":"down","stale":true,"last_seen_seconds":12.4,"in_flight":4,"slots":4,
	  "gpus":[{"index":0,"name":"NVIDIA RTX 3090","memory_total_bytes":25769803776,"memory_used_bytes":24000000000,"utilization_ratio":1,
	           "temperature_celsius":83,"power_watts":333,"power_limit_watts":350,"healthy":true}]},
	 {"id":"sim1-t4","backend":"sim","simulated":true,"healthy":true,"circuit":"closed","status":"late","last_seen_seconds":2.1,"slots":2,
	  "gpus":[{"index":0,"name":"Tesla T4","memory_total_bytes":16106127360,"memory_used_bytes":1073741824,"utilization_ratio":0.1,
	           "temperature_celsius":40,"power_watts":30,"power_limit_watts":70,"healthy":true,"simulated":true}]},
	 {"id":"cpu-1","backend":"openai","healthy":true,"draining":true,"circuit":"closed","status":"up","telemetry_error":"NVML not available"}
	]}`
	if err := json.Unmarshal([]byte(data), &doc); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	var q api.Queue
	if err := json.Unmarshal([]byte(`{"interactive":3,"batch":40,"models":[
	  {"model":"llama3.1:8b","class":"batch","waiting":40,"capacity":256},
	  {"model":"llama3.1:8b","class":"interactive","waiting":3,"capacity":256},
	  {"model":"qwen2.5:7b","class":"interactive","waiting":0,"capacity":256}]}`), &q); err != nil {
		t.Fatal(err)
	}
	printQueue(&b, q)
	printNodes(&b, doc.Nodes)
	golden.Check(t, "testdata/nodes.golden.txt", b.Bytes())

	for _, tc := range []struct {
		s    float64
		want string
	}{{0.24, "0.2s ago"}, {12.4, "12s ago"}, {600, "10m ago"}, {7200, "2.0h ago"}} {
		if got := ago(tc.s); got != tc.want {
			t.Errorf("ago(%v) = %q, want %q", tc.s, got, tc.want)
		}
	}
}

func TestProgressLineRates(t *testing.T) {
	i64 := func(v int64) *int64 { return &v }
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	finished := api.BatchObject{Status: "completed", InProgressAt: i64(1000), FinalizingAt: i64(1060), CompletedAt: i64(1061)}
	finished.RequestCounts.Total, finished.RequestCounts.Completed = 10, 10
	finished.Usage.OutputTokens = 1200
	running := api.BatchObject{Status: "in_progress", InProgressAt: i64(1000)}
	running.RequestCounts.Total, running.RequestCounts.Completed = 10, 6
	running.Usage.OutputTokens = 900
	instant := finished
	instant.FinalizingAt, instant.CompletedAt = i64(1000), i64(1000)
	for _, tc := range []struct {
		name    string
		b       api.BatchObject
		first   watchStart
		now     time.Time
		want    string
		without string
	}{
		// Fetched long after it ended (get --wait on a finished batch): its own run time counts,
		// not the command's few milliseconds.
		{"finished", finished, watchStart{at: t0, tokens: 1200, done: 10}, t0.Add(5 * time.Millisecond), "20 tok/s over 1m0s", "ETA"},
		{"finished within a second", instant, watchStart{at: t0}, t0, "10/10 done", "tok/s"},
		// Watched for 10 s while it went from 4 to 6 lines and 600 to 900 tokens.
		{"running", running, watchStart{at: t0, tokens: 600, done: 4}, t0.Add(10 * time.Second), "30 tok/s, ETA 20s", "over"},
		{"just started watching", running, watchStart{at: t0, tokens: 900, done: 6}, t0.Add(time.Second), "6/10 done", "tok/s"},
	} {
		got := progressLine(tc.b, &tc.first, tc.now)
		if !strings.Contains(got, tc.want) || (tc.without != "" && strings.Contains(got, tc.without)) {
			t.Errorf("%s: %q, want %q and no %q", tc.name, got, tc.want, tc.without)
		}
	}
}

// TestFitLine: `herd top` cuts each line to the terminal's width, marking the cut.
func TestFitLine(t *testing.T) {
	for _, tc := range []struct {
		line  string
		width int
		want  string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"a longer line here", 10, "a longer…"},
		{"°C °C °C °C", 5, "°C °…"},
		{"trailing    ", 8, "trailing"},
	} {
		if got := string(fitLine([]byte(tc.line), tc.width)); got != tc.want {
			t.Errorf("fitLine(%q, %d) = %q, want %q", tc.line, tc.width, got, tc.want)
		}
	}
	var b bytes.Buffer
	fw := &fitWriter{w: &b, width: 6}
	fw.Write([]byte("abc"))
	fw.Write([]byte("defgh\nxy\n"))
	if b.String() != "abcde…\nxy\n" {
		t.Errorf("fitWriter wrote %q", b.String())
	}
}

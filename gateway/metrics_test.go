package gateway

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/herd-llm/herd/gateway/admission"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

func TestMetricsScrape(t *testing.T) {
	env := newAdminEnv(t)
	a := agentapi.Heartbeat{
		NodeID: "a", Address: "http://a:9090", Backend: agentapi.BackendSim, Simulated: true,
		IntervalMS: 1000, InFlight: 1, Queued: 3, Slots: 4,
		GPUs: []agentapi.GPU{
			{Index: 0, Name: "Tesla T4", MemoryTotalBytes: 16106127360, MemoryUsedBytes: 6442450944, UtilizationRatio: 0.5,
				TemperatureCelsius: 61, PowerWatts: 52.5, PowerLimitWatts: 70, Healthy: true, Simulated: true},
			{Index: 1, Name: "Tesla T4", MemoryTotalBytes: 16106127360, MemoryUsedBytes: 0, UtilizationRatio: 0,
				TemperatureCelsius: 92, PowerWatts: 70, PowerLimitWatts: 70, ThrottleReasons: []string{agentapi.ThrottleHWThermal},
				Healthy: false, HealthReason: "thermal", Simulated: true},
		},
		Models: []agentapi.Model{
			{Name: "llama3.1:8b", Resident: true, OnDisk: true, PromptTokens: 900, CachedPromptTokens: 700},
			{Name: "qwen2.5", OnDisk: true, PromptTokens: 100, CachedPromptTokens: 100},
			{Name: "Qwen2.5:latest", OnDisk: true}, // one series for both spellings
		},
	}
	b := agentapi.Heartbeat{
		NodeID: "b", Address: "http://b:9090", Backend: agentapi.BackendOllama, IntervalMS: 1000,
		GPUs: []agentapi.GPU{{Index: 0, Name: "NVIDIA A40", MemoryTotalBytes: 48305799168, MemoryUsedBytes: 1 << 30,
			UtilizationRatio: 0.25, TemperatureCelsius: 40, PowerWatts: 80, PowerLimitWatts: 300, Healthy: true}},
	}
	env.reg.Observe(b)
	env.clock.Advance(4 * time.Second) // b is stale
	env.reg.Observe(a)
	for range 2 {
		env.reg.Acquire("a")
	}
	env.srv.metrics.observeRequest("llama3.1:8b", "a", "200", 1500*time.Millisecond)
	env.srv.metrics.observeStream("llama3.1:8b", "a", 120*time.Millisecond, 30*time.Millisecond)
	env.srv.metrics.observeRequest("llama3.1:8b", "a", "200", 3*time.Second)
	env.srv.metrics.observeRequest("qwen2.5:latest", "", "503", time.Millisecond)
	env.srv.metrics.observeTokens("llama3.1:8b", "a", "default", 12, 40)
	env.srv.metrics.observeTokens("llama3.1:8b", "a", "default", 3, 0)
	env.srv.metrics.observePredicted("llama3.1:8b", "a", 640)
	env.srv.metrics.observeLine(false)
	env.srv.metrics.observeLine(true)
	env.srv.metrics.observeBatch("completed")
	env.queue.depths = []admission.QueueDepth{{Model: "llama3.1:8b", Class: "interactive", Waiting: 7, Capacity: 256}, {Model: "llama3.1:8b", Class: "batch", Capacity: 256}}
	env.clock.Advance(1500 * time.Millisecond) // a's heartbeat is 1.5 s old, b's 5.5 s

	status, body := env.do(http.MethodGet, "/metrics", "")
	if status != http.StatusOK {
		t.Fatalf("%d %s", status, body)
	}
	text := string(body)
	for _, line := range []string{
		`herd_prefix_cache_hit_ratio{node="a"} 0.8`,
		`herd_prefill_tokens_saved_total{node="a"} 800`,
		`herd_node_prompt_tokens_total{node="a"} 1000`,
		`herd_prefix_predicted_tokens_total{model="llama3.1:8b",node="a"} 640`,
		`herd_gpu_utilization_ratio{gpu="0",name="Tesla T4",node="a",simulated="true"} 0.5`,
		`herd_gpu_memory_used_bytes{gpu="0",name="Tesla T4",node="a",simulated="true"} 6.442450944e+09`,
		`herd_gpu_memory_total_bytes{gpu="1",name="Tesla T4",node="a",simulated="true"} 1.610612736e+10`,
		`herd_gpu_temperature_celsius{gpu="1",name="Tesla T4",node="a",simulated="true"} 92`,
		`herd_gpu_power_watts{gpu="0",name="Tesla T4",node="a",simulated="true"} 52.5`,
		`herd_gpu_power_limit_watts{gpu="0",name="Tesla T4",node="a",simulated="true"} 70`,
		`herd_gpu_healthy{gpu="0",name="Tesla T4",node="a",simulated="true"} 1`,
		`herd_gpu_healthy{gpu="1",name="Tesla T4",node="a",simulated="true"} 0`,
		`herd_gpu_throttled{gpu="1",name="Tesla T4",node="a",simulated="true"} 1`,
		`herd_gpu_throttled{gpu="0",name="Tesla T4",node="a",simulated="true"} 0`,
		`herd_gpu_utilization_ratio{gpu="0",name="NVIDIA A40",node="b",simulated="false"} 0.25`,
		`herd_model_resident{model="llama3.1:8b",node="a"} 1`,
		`herd_model_resident{model="qwen2.5:latest",node="a"} 0`,
		`herd_node_in_flight{node="a"} 3`, // the scheduler's count: the gateway's 2 plus the heartbeat's 1 from before them
		`herd_node_queued{node="a"} 3`,
		`herd_node_up{node="a"} 1`,
		`herd_node_up{node="b"} 0`,
		`herd_node_healthy{node="a"} 0`,
		`herd_node_draining{node="a"} 0`,
		`herd_node_circuit_open{node="a"} 0`,
		`herd_requests_total{model="llama3.1:8b",node="a",status="200"} 2`,
		`herd_requests_total{model="qwen2.5:latest",node="",status="503"} 1`,
		`herd_request_duration_seconds_bucket{model="llama3.1:8b",node="a",status="200",le="2"} 1`,
		`herd_request_duration_seconds_bucket{model="llama3.1:8b",node="a",status="200",le="4"} 2`,
		`herd_request_duration_seconds_count{model="llama3.1:8b",node="a",status="200"} 2`,
		`herd_time_to_first_token_seconds_count{model="llama3.1:8b",node="a"} 1`,
		`herd_time_to_first_token_seconds_bucket{model="llama3.1:8b",node="a",le="0.1"} 0`,
		`herd_time_to_first_token_seconds_bucket{model="llama3.1:8b",node="a",le="0.2"} 1`,
		`herd_time_per_output_token_seconds_count{model="llama3.1:8b",node="a"} 1`,
		`herd_prompt_tokens_total{model="llama3.1:8b",node="a",tenant="default"} 15`,
		`herd_completion_tokens_total{model="llama3.1:8b",node="a",tenant="default"} 40`,
		`herd_batch_lines_total{outcome="completed"} 1`,
		`herd_batch_lines_total{outcome="failed"} 1`,
		`herd_batches_finished_total{status="completed"} 1`,
		`herd_node_last_seen_seconds{node="a"} 1.5`,
		`herd_node_last_seen_seconds{node="b"} 5.5`,
		`herd_gateway_queue_depth{class="interactive",model="llama3.1:8b"} 7`,
		`herd_gateway_queue_depth{class="batch",model="llama3.1:8b"} 0`,
		`herd_gateway_queue_capacity{class="interactive",model="llama3.1:8b"} 256`,
	} {
		if !strings.Contains(text, "\n"+line+"\n") {
			t.Errorf("scrape lacks %s", line)
		}
	}
	for _, absent := range []string{
		`model="qwen2.5"`, // only the normalised name
		`herd_time_to_first_token_seconds_count{model="qwen2.5:latest"`, // no first token, no TTFT
	} {
		if strings.Contains(text, absent) {
			t.Errorf("scrape has %s", absent)
		}
	}
	for _, family := range []string{"go_goroutines", "process_", "# TYPE herd_gpu_utilization_ratio gauge", "# TYPE herd_request_duration_seconds histogram"} {
		if !strings.Contains(text, family) {
			t.Errorf("scrape lacks %s", family)
		}
	}
	if n := strings.Count(text, `herd_model_resident{model="qwen2.5:latest",node="a"}`); n != 1 {
		t.Errorf("qwen2.5:latest resident series appears %d times", n)
	}

	// A node forgotten after long silence loses its series.
	env.clock.Advance(11 * time.Minute)
	_, body = env.do(http.MethodGet, "/metrics", "")
	if strings.Contains(string(body), `node="b"}`) || strings.Contains(string(body), `node="b",`) {
		t.Error("forgotten node b still exported")
	}
}

// Package loadtest measures an OpenAI-compatible endpoint — herd's gateway or anything else that
// speaks the API — and proves two claims about herd with numbers: that its routing beats the
// baseline policies on a heterogeneous (simulated) cluster, and that the gateway adds little
// latency and CPU on the way to a backend.
//
// It has four parts:
//
//   - Run, the load generator: open-loop Poisson arrivals at a rate or along a linear ramp, or a
//     closed loop of N workers; streaming and non-streaming chat; workloads chat-short, chat-long,
//     shared-prefix, mixed (interactive chat while a bulk job runs through /v1/files and
//     /v1/batches) and synthetic (prompt and output lengths drawn from TokenDists). Every request of a workload is a pure function of the seed and its index, so
//     the same workload can be replayed against several targets byte for byte.
//   - Report: TTFT, inter-token latency, time per output token and end-to-end latency
//     percentiles, throughput, goodput at an SLO, errors by kind, requests per node; printed as a
//     text table, JSON, or an SVG drawn by hand.
//   - NewFakeBackend / StartFake: a very fast OpenAI-compatible server with fault modes, used as
//     the backend of the overhead benchmark and by tests.
//   - RunScenario and StartSimCluster: scenarios that start herd processes themselves (a gateway
//     and simulated GPU agents, or a gateway and an agent in front of the fake backend) from the
//     herd binary, measure, and stop exactly the processes they started: hetero, overhead, fault,
//     capacity (SearchCapacity's bracket-and-bisect over SimProbe's fresh simulated clusters: the
//     highest rate at which a share of requests meets the SLO) and batch-mix (interactive load
//     alone and beside a bulk job).
//
// Decisions worth knowing:
//
//   - Percentiles are exact nearest-rank values over the sorted samples, not estimates.
//   - TTFT of a streaming request is the time to the first non-empty content delta. A
//     non-streaming request has no first token, so its TTFT is its end-to-end latency and it has no
//     TPOT; an SLO on TPOT does not exclude it from goodput.
//   - TPOT of a request is (end − first token) ÷ (output tokens − 1); ITL is the distribution of
//     gaps between consecutive content deltas over all requests.
//   - Output tokens come from the server's usage (stream_options.include_usage); where a server
//     sends none, content deltas are counted instead.
//   - Throughput, goodput and output tokens/s are divided by the run's wall time, from the first
//     request sent to the last one finished.
//   - Open-loop arrivals never wait for the server: a request that would exceed MaxInFlight
//     outstanding requests is not sent and counts as error kind "dropped", so an overloaded target
//     shows up as errors instead of silently lowering the offered rate.
//   - In shared-prefix conversations the assistant turns of the history are the generator's own
//     deterministic text, not the server's replies, so every target receives identical requests.
//   - The capacity and batch-mix scenarios run the simulated cluster faster than real time and
//     scale every duration they set with it (arrivals, probe length, SLOs, the agents' heartbeat
//     interval), then convert what they measured back, so their figures are in simulated time: a
//     capacity does not depend on the speed-up chosen, up to the gateway's own few milliseconds,
//     which are scaled up with the rest.
//   - A capacity probe bounds each request at TTFT SLO + max tokens × TPOT SLO: a request still
//     running then has missed the SLO already, so an overloaded probe ends instead of draining a
//     queue that grows for minutes.
//   - Child processes run with the HERD_* environment variables removed, so a user's HERD_API_KEYS
//     or HERD_CONFIG cannot change the cluster a scenario measures.
package loadtest

# herd — the two set-up commands are `make run` and `make test`; `make help` lists the rest.
SHELL := /bin/bash
GO ?= go
BIN := bin/herd
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# nomsgpack leaves gin's MessagePack binding (github.com/ugorji/go/codec) out of the binary: herd
# speaks no MessagePack, and the codec's tables were 9 MB of every gateway's and agent's mapped
# pages (docs/BENCHMARKS.md, "Memory under the overhead scenario's c50 load").
TAGS := nomsgpack
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
LISTEN ?= 127.0.0.1:8080
DATA ?= ./herd-data
PKGS ?= ./...
# go-nvml is cgo; its headers use deprecated declarations that only add noise to every build.
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations

.PHONY: help build dist run test test-short deps lint bench sim loadtest-hetero loadtest-overhead loadtest-streams loadtest-capacity loadtest-capacity-multi-turn loadtest-capacity-multi-model bench-real-ollama loadtest-batch-mix loadtest-scale plan clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

build: ## build bin/herd
	$(GO) build -tags $(TAGS) -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/herd

dist: ## linux/amd64 and linux/arm64 binaries and .deb packages in dist/ (arm64 needs gcc-aarch64-linux-gnu, libc6-dev-arm64-cross)
	$(GO) run ./cmd/herd-dist --out dist --version "$(VERSION)"

run: build ## gateway + a local agent (real Ollama on 127.0.0.1:11434 if one answers, else a simulated GPU)
	$(BIN) up --listen $(LISTEN) --data $(DATA)

deps: ## install what the tests need: redis-server, chromium, promtool, nodejs/npm (apt) and real Ollama built from the Go module proxy
	@scripts/test-deps.sh

test: deps ## all tests with -race: real redis-server, real Ollama, the dashboard in headless Chromium, promtool on the alert rules, the JS client suite
	HERD_OLLAMA_BIN="$$(scripts/build-ollama.sh)" HERD_VERSITYGW_BIN="$$(scripts/build-versitygw.sh)" HERD_REQUIRE_OLLAMA=1 HERD_REQUIRE_REDIS=1 HERD_BIN=build \
		HERD_REQUIRE_CHROMIUM=1 HERD_REQUIRE_PROMTOOL=1 HERD_REQUIRE_NODE_CLIENTS=1 HERD_REQUIRE_DIST=1 \
		$(GO) test -race -timeout 20m -count=1 $(PKGS)

test-short: ## unit tests only (no processes, no Ollama)
	$(GO) test -race -short -count=1 $(PKGS)

lint: ## gofmt, go vet, staticcheck
	@out="$$(gofmt -l $$(git ls-files '*.go') 2>/dev/null)"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

bench: ## scheduler, hot-path and store benchmarks
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./scheduler/ ./gateway/ ./gateway/registry/ ./jsonspan/

sim: build ## a simulated cluster: gateway + agents for 2xt4,a40,3090
	$(BIN) sim --gpus 2xt4,a40,3090 --listen $(LISTEN)

loadtest-hetero: build ## round_robin vs least_inflight vs herd on a simulated heterogeneous cluster
	$(BIN) loadtest --scenario hetero --compare-policies round_robin,least_inflight,herd --json bench-hetero.json

loadtest-overhead: build ## herd's added latency and CPU against a direct call to a fast fake backend
	$(BIN) loadtest --scenario overhead --json bench-overhead.json

loadtest-streams: build ## 10,000 slow SSE streams through one gateway + agent (h2c): memory and goroutines per stream, a probe's added inter-token latency
	$(BIN) loadtest --scenario streams --streams 10000 --json bench-streams.json

loadtest-capacity: build ## capacity at SLO per policy (bisection over fresh simulated T4 + A40 + 3090 clusters); prints the table
	$(BIN) loadtest --scenario capacity --json bench-capacity.json --svg bench-capacity.svg

loadtest-capacity-multi-turn: build ## capacity at SLO per policy, multi-turn preset users on Ollama-like simulated T4 + A40 + 3090; prefill done per policy
	$(BIN) loadtest --scenario capacity --workload multi-turn --compare-policies round_robin,least_inflight,chwbl,herd --sim-speed 8 --capacity-start 1 --json bench-capacity-multi-turn.json --svg bench-capacity-multi-turn.svg

loadtest-capacity-multi-model: build ## capacity at SLO per policy, 8 models (Zipf) over 4 simulated nodes keeping one model each; model loads per policy
	$(BIN) loadtest --scenario capacity --workload multi-model --compare-policies round_robin,least_inflight,chwbl,herd --sim-speed 8 --capacity-start 1 --json bench-capacity-multi-model.json --svg bench-capacity-multi-model.svg

bench-real-ollama: build ## the policies on three real ollama serve (tiny models) behind herd: prefill from the runners' logs, loads, TTFT
	HERD_OLLAMA_BIN="$$(scripts/build-ollama.sh)" HERD_BIN=$(CURDIR)/$(BIN) HERD_REAL_OLLAMA_OUT=$(CURDIR)/bench-real-ollama.md \
		$(GO) test -run '^$$' -bench RealOllamaRouting -benchtime 1x -timeout 30m ./loadtest/

loadtest-batch-mix: build ## interactive load alone and beside a large batch on a simulated cluster: batch share of tok/s, interactive TTFT tail
	$(BIN) loadtest --scenario batch-mix --json bench-batch-mix.json --svg bench-batch-mix.svg

loadtest-scale: build ## the gateway's cost at 10, 100 and 1,000 fake nodes (1 Hz heartbeats): heartbeat CPU, Pick and snapshot times, RSS, /admin/v1/nodes latency
	$(BIN) loadtest --scenario scale --nodes 10,100,1000 --json bench-scale.json

plan: build ## herd plan for the default workload: ranked, costed cluster options, the cheapest verified on simulated clusters
	$(BIN) plan --json plan.json --svg plan.svg

clean: ## remove build outputs
	rm -rf bin dist

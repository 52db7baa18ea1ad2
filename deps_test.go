// Package herd_test holds the rules of direction between herd's packages (docs/DESIGN.md,
// "Rules of direction"), so that a change that breaks one fails here rather than in review.
package herd_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/herd-llm/herd"

// pkgInfo is a package's direct imports and its whole dependency closure, as go list says.
type pkgInfo struct {
	imports []string
	deps    []string
}

// listPackages runs go list over the module once (no build, no test packages).
func listPackages(t *testing.T) map[string]pkgInfo {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to check the package graph: %v", err)
	}
	cmd := exec.Command(goBin, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}|{{join .Imports \" \"}}|{{join .Deps \" \"}}{{end}}", "./...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	pkgs := map[string]pkgInfo{}
	for line := range strings.Lines(string(out)) {
		parts := strings.Split(strings.TrimSpace(line), "|")
		if len(parts) != 3 || !strings.HasPrefix(parts[0], module) {
			continue
		}
		pkgs[strings.TrimPrefix(strings.TrimPrefix(parts[0], module), "/")] = pkgInfo{
			imports: strings.Fields(parts[1]), deps: strings.Fields(parts[2]),
		}
	}
	if len(pkgs) < 10 {
		t.Fatalf("go list found only %d herd packages: %v", len(pkgs), pkgs)
	}
	return pkgs
}

// herdDeps returns the herd packages among deps, relative to the module.
func herdDeps(deps []string) []string {
	var out []string
	for _, d := range deps {
		if d == module || strings.HasPrefix(d, module+"/") {
			out = append(out, strings.TrimPrefix(strings.TrimPrefix(d, module), "/"))
		}
	}
	return out
}

// under reports whether pkg is dir or inside it.
func under(pkg, dir string) bool { return pkg == dir || strings.HasPrefix(pkg, dir+"/") }

// ioPackages are what a pure package (scheduler, models) must not reach: network, processes,
// HTTP frameworks, Redis, NVML and the bolt store.
var ioPackages = []string{
	"net", "net/http", "os/exec",
	"github.com/gin-gonic/gin", "github.com/redis/go-redis/v9", "github.com/NVIDIA/go-nvml/pkg/nvml", "go.etcd.io/bbolt",
}

func TestRulesOfDirection(t *testing.T) {
	pkgs := listPackages(t)
	must := func(pkg string) pkgInfo {
		t.Helper()
		p, ok := pkgs[pkg]
		if !ok {
			t.Fatalf("package %s not found by go list", pkg)
		}
		return p
	}

	// The graph is read: the gateway is known to use the scheduler and the agents' wire package.
	if d := herdDeps(must("gateway").deps); !slices.Contains(d, "scheduler") || !slices.Contains(d, "nodeagent/agentapi") {
		t.Fatalf("gateway's herd dependencies %v lack scheduler or nodeagent/agentapi: go list output not understood", d)
	}

	// The scheduler is a pure function of (request, snapshot); models is data. Neither does I/O
	// nor imports any herd package but models.
	for _, pkg := range []string{"scheduler", "models"} {
		p := must(pkg)
		for _, d := range herdDeps(p.deps) {
			if d != "models" {
				t.Errorf("%s imports %s: it may import no herd package but models", pkg, d)
			}
		}
		for _, io := range ioPackages {
			if slices.Contains(p.deps, io) {
				t.Errorf("%s depends on %s: it must do no I/O", pkg, io)
			}
		}
	}

	// Leaves: wire and file packages everyone may use, which use nothing of herd's engines. The
	// OpenAI error shape (openaierr) and the clock interface (clock) are declared once, there.
	leaves := map[string][]string{
		"openaierr":          nil,
		"clock":              nil,
		"nodeagent/agentapi": {"openaierr"},
		"atomicfile":         nil,
		"jsonspan":           nil,
		// The cluster CA's crypto and files: no network, nothing of the engines.
		"pki":             {"atomicfile"},
		"discovery":       nil,
		"gateway/s3files": nil,
		"cmd/herd-dist":   nil,
		// The translations between Ollama's API, the Responses API and chat completions are
		// pure functions over bytes (and the ResponseWriters the agent hands its backend).
		"nodeagent/ollamacompat": nil,
		"gateway/api":            {"models", "nodeagent/agentapi", "openaierr"},
		// Admission is given its pick function, capacity source and clock.
		"gateway/admission": {"scheduler", "models", "clock", "openaierr"},
		// The prefix index models engines' caches from what it is told; it reads snapshots.
		"gateway/prefixcache": {"scheduler", "models"},
	}
	for pkg, allowed := range leaves {
		p := must(pkg)
		for _, d := range herdDeps(p.deps) {
			if !slices.Contains(allowed, d) {
				t.Errorf("%s imports %s: it is a leaf (allowed: %v)", pkg, d, allowed)
			}
		}
	}
	// Parts of the gateway with a bounded reach: the store is the data layer and knows nothing of
	// the engines that use it; presets are data and their admin routes, over the store (they
	// never see the scheduler, the registry or the batch engine); the dashboard is a page that
	// reads the admin API from the browser.
	bounded := map[string][]string{
		"gateway/store":     {"models"},
		"gateway/presets":   {"models", "nodeagent/agentapi", "gateway/api", "gateway/apierr", "gateway/store", "openaierr"},
		"gateway/dashboard": nil,
	}
	for pkg, allowed := range bounded {
		p := must(pkg)
		for _, d := range herdDeps(p.deps) {
			if !slices.Contains(allowed, d) {
				t.Errorf("%s imports %s (allowed: %v)", pkg, d, allowed)
			}
		}
	}
	if p := must("gateway/api"); slices.Contains(p.deps, "github.com/gin-gonic/gin") {
		t.Errorf("gateway/api depends on gin: the wire package must not pull in the server's framework")
	}

	for pkg, p := range pkgs {
		for _, d := range herdDeps(p.deps) {
			// The gateway's root wires its sub-packages; none of them reaches back into it.
			if under(pkg, "gateway") && pkg != "gateway" && d == "gateway" {
				t.Errorf("%s imports gateway: the root uses its sub-packages, never the other way", pkg)
			}
			// The gateway talks to agents only through their wire package.
			if under(pkg, "gateway") && under(d, "nodeagent") && d != "nodeagent/agentapi" {
				t.Errorf("%s imports %s: the gateway may use only nodeagent/agentapi", pkg, d)
			}
			// The agent is the only translator between wire formats: the gateway relays bytes.
			if (d == "nodeagent/ollamacompat" || d == "nodeagent/responses") && !under(pkg, "nodeagent") && !under(pkg, "cmd") {
				t.Errorf("%s imports %s: translation between APIs is the agent's alone", pkg, d)
			}
			if under(pkg, "nodeagent") && under(d, "gateway") {
				t.Errorf("%s imports %s: the node agent never imports the gateway", pkg, d)
			}
			// The load tester drives a gateway from outside, as a client would.
			if under(pkg, "loadtest") && under(d, "gateway") && d != "gateway/api" {
				t.Errorf("%s imports %s: the load tester may use only gateway/api of the gateway", pkg, d)
			}
			// The client side of bulk generation speaks the API; it does not embed the engine.
			if under(pkg, "bulk") && under(d, "gateway") && d != "gateway/api" {
				t.Errorf("%s imports %s: bulk may use only gateway/api of the gateway", pkg, d)
			}
		}
	}

	// The packaging tool's library stays out of the binary it packages.
	for _, d := range must("cmd/herd").deps {
		if strings.HasPrefix(d, "github.com/goreleaser/nfpm") {
			t.Errorf("cmd/herd depends on %s: packaging belongs to cmd/herd-dist alone", d)
		}
	}

	// The CLI is wiring: it runs the gateway, but its client commands speak the API and do not
	// reach into the batch engine or the store.
	for _, d := range herdDeps(must("cmd/herd").imports) {
		if d == "gateway/batch" || under(d, "gateway/store") || d == "gateway/registry" {
			t.Errorf("cmd/herd imports %s directly: the CLI uses gateway/api (and gateway to serve)", d)
		}
	}
}

// TestHotBinaryLinks keeps out of cmd/herd (the one binary every gateway and agent runs) what
// doubled its size before (docs/BENCHMARKS.md, "Memory under the overhead scenario's c50
// load"): gRPC, whose golang.org/x/net/trace executes html/template, and text/template's
// executor in herd's own code. Either makes the linker keep every exported method of every
// type, because the executor looks methods up by name; every process maps the result.
// Built as shipped (the Makefile's tags), gin's MessagePack codec is out too.
func TestHotBinaryLinks(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "-tags", "nomsgpack", "-f", "{{.ImportPath}}|{{join .Imports \" \"}}", "./cmd/herd")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	banned := []string{"google.golang.org/grpc", "golang.org/x/net/trace", "github.com/ugorji/go/codec",
		"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc", "go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"}
	seen := 0
	for line := range strings.Lines(string(out)) {
		pkg, imports, _ := strings.Cut(strings.TrimSpace(line), "|")
		seen++
		if slices.Contains(banned, pkg) {
			t.Errorf("cmd/herd links %s", pkg)
		}
		if pkg != module && !strings.HasPrefix(pkg, module+"/") {
			continue
		}
		for _, imp := range strings.Fields(imports) {
			// bulk parses --template with text/template and evaluates it itself (rowtemplate.go).
			if (imp == "text/template" && pkg != module+"/bulk") || imp == "html/template" {
				t.Errorf("%s imports %s: its executor would stop the linker from dropping unused methods", pkg, imp)
			}
		}
	}
	if seen < 50 {
		t.Fatalf("go list listed %d packages: output not understood", seen)
	}
	files, err := filepath.Glob("bulk/*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("bulk's files: %v", err)
	}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(f, "_test.go") && bytes.Contains(src, []byte(".Execute(")) {
			t.Errorf("%s calls an Execute: a --template runs through rowTemplate.Apply, not text/template's executor", f)
		}
	}
}

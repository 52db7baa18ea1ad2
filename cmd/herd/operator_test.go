package main

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/herd-llm/herd/internal/logbuf"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herd-llm/herd/gateway/api"
)

// TestOperatorViewsTellTheTruth runs a simulated cluster through a batch, a load test and a node
// failure, and checks that every view an operator has (herd nodes, herd top, /metrics, the
// dashboard in a real headless Chromium) says what is really happening: the dead node is down
// since a given age with its last figures marked old, the batch and preset are listed, and the
// load test knows its figures are simulated.
func TestOperatorViewsTellTheTruth(t *testing.T) {
	dir := t.TempDir()
	presets := filepath.Join(dir, "presets.yaml")
	os.WriteFile(presets, []byte("presets:\n  - {name: poet, model: llama3.2:1b, system: Rhyme., description: short poems, version: 4}\n"), 0o644)
	c := startGateway(t, "--presets", presets, "--history-interval", "250ms", "--heartbeat-interval", "250ms")
	// The survivor beats less often than the default 250 ms, so that a loaded test machine does
	// not make it miss beats; the one that dies keeps 250 ms, so its death is seen fast.
	c.addSimAgent("sim1-t4", "t4", "--agent-heartbeat-interval", "500ms")
	c.addSimAgent("sim2-a40", "a40")
	c.waitNodes(2)

	// Applying the file the gateway started with changes nothing: same version, twice. A changed
	// preset without version: is numbered after it.
	for range 2 {
		if out, err := runCLI(t, "presets", "apply", "-f", presets, "--url", c.url); err != nil || !strings.Contains(out, "preset poet version 4 ") {
			t.Fatalf("presets apply of an unchanged preset: %v %q", err, out)
		}
	}
	changed := filepath.Join(dir, "changed.yaml")
	os.WriteFile(changed, []byte("presets:\n  - {name: poet, model: llama3.2:1b, system: Rhyme., description: short poems, max_tokens: 64}\n"), 0o644)
	if out, err := runCLI(t, "presets", "apply", "-f", changed, "--url", c.url); err != nil || !strings.Contains(out, "preset poet version 5 ") {
		t.Fatalf("presets apply of a changed preset: %v %q", err, out)
	}

	prompts := filepath.Join(dir, "prompts.txt")
	os.WriteFile(prompts, []byte("autumn leaves\nthe sea at night\n"), 0o644)
	out, err := runCLI(t, "batch", "submit", prompts, "--preset", "poet", "--url", c.url)
	if err != nil {
		t.Fatal(err)
	}
	batchID := regexp.MustCompile(`batch_\S+`).FindString(out)
	if batchID == "" {
		t.Fatalf("no batch ID in %q", out)
	}
	waitFor(t, time.Minute, "the batch to complete", func() bool { return batchStatus(t, c, batchID).Status == "completed" })

	// A load test against a simulated cluster knows it from the nodes' heartbeats.
	report := filepath.Join(dir, "run.json")
	if _, err := runCLI(t, "loadtest", "--target", c.url, "--model", "llama3.2:1b", "--rps", "4", "--duration", "1s",
		"--max-tokens", "8", "--json", report, "-q"); err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Simulated bool `json:"simulated"`
	}
	if data, err := os.ReadFile(report); err != nil || json.Unmarshal(data, &rep) != nil || !rep.Simulated {
		t.Fatalf("loadtest report against a simulated cluster: simulated=%v (%v)", rep.Simulated, err)
	}

	// One node dies.
	c.agents["sim2-a40"].kill9()
	waitFor(t, 30*time.Second, "sim2-a40 to be down", func() bool {
		nodes, err := c.nodes()
		if err != nil {
			return false
		}
		for _, n := range nodes {
			if n.ID == "sim2-a40" {
				return n.Status == "down" && n.LastSeenSeconds > 0
			}
		}
		return false
	})

	nodesOut, err := runCLI(t, "nodes", "--url", c.url)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`sim2-a40\s+down [0-9.]+s ago`).MatchString(nodesOut) || !strings.Contains(nodesOut, "[") ||
		!regexp.MustCompile(`sim1-t4\s+(up|late)`).MatchString(nodesOut) {
		t.Errorf("herd nodes does not show the dead node as down with old figures:\n%s", nodesOut)
	}
	topOut, err := runCLI(t, "top", "-n", "1", "--url", c.url)
	if err != nil || !strings.Contains(topOut, "gateway queue: 0 interactive, 0 batch") || !strings.Contains(topOut, "down ") {
		t.Errorf("herd top: %v\n%s", err, topOut)
	}

	resp, err := http.Get(c.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, re := range []string{
		`\nherd_node_up\{node="sim2-a40"\} 0\n`,
		`\nherd_node_up\{node="sim1-t4"\} 1\n`,
		`\nherd_node_last_seen_seconds\{node="sim2-a40"\} [0-9.e+]+\n`,
		`\nherd_gateway_queue_depth\{class="interactive",model="llama3.2:1b"\} 0\n`,
		`\nherd_completion_tokens_total\{model="llama3.2:1b",node="sim[12]-[a-z0-9]+",tenant="default"\} [1-9]`,
		`\nherd_completion_tokens_total\{model="poet",node="sim[12]-[a-z0-9]+",tenant="default"\} [1-9]`,
		`\nherd_batch_lines_total\{outcome="completed"\} 2\n`,
		`\nherd_batches_finished_total\{status="completed"\} 1\n`,
		`\nherd_time_to_first_token_seconds_count\{model="llama3.2:1b",node="sim[12]-[a-z0-9]+"\} [1-9]`,
		`\nherd_inter_token_latency_seconds_count\{model="llama3.2:1b",node="sim[12]-[a-z0-9]+"\} [1-9]`,
	} {
		if !regexp.MustCompile(re).Match(metrics) {
			t.Errorf("/metrics lacks %s", re)
		}
	}
	// The batch's lines are not streamed: they have tokens but no time to first token.
	if regexp.MustCompile(`herd_time_to_first_token_seconds_count\{model="poet"`).Match(metrics) {
		t.Error("non-streamed batch lines were observed as time to first token")
	}

	// get --wait on a finished batch: the rate is the batch's own, never its tokens over the
	// command's few milliseconds.
	getOut, getErr := runCLIBoth(t, "batch", "get", batchID, "--wait", "--url", c.url)
	var finished api.BatchObject
	if err := json.Unmarshal([]byte(getOut), &finished); err != nil {
		t.Fatalf("batch get --wait: %v\n%s", err, getOut)
	}
	if m := regexp.MustCompile(`([0-9]+) tok/s`).FindStringSubmatch(getErr); m != nil {
		if rate, _ := strconv.ParseFloat(m[1], 64); rate > float64(finished.Usage.OutputTokens) {
			t.Errorf("get --wait on a finished batch of %d tokens says %s", finished.Usage.OutputTokens, m[0])
		}
	}

	checkWatchInterrupt(t, c, dir)
	checkDashboardInChromium(t, c.url, batchID) // last: it skips without a browser
}

// runCLIBoth runs a client command and returns its stdout and stderr.
func runCLIBoth(t *testing.T, args ...string) (string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, herdBinary(t), args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("herd %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), stderr.String()
}

// checkWatchInterrupt interrupts `herd batch submit --watch` (SIGINT, as Ctrl-C does) and checks
// that it says the batch goes on and how to follow it, that it does go on, and that the cancel
// command it suggests works.
func checkWatchInterrupt(t *testing.T, c *cluster, dir string) {
	t.Helper()
	prompts := filepath.Join(dir, "many.txt")
	os.WriteFile(prompts, []byte(strings.Repeat("write a long story\n", 200)), 0o644)
	cmd := exec.Command(herdBinary(t), "batch", "submit", prompts, "--model", "llama3.1:8b", "--max-tokens", "400", "--watch", "--url", c.url)
	var stdout, stderr logbuf.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the watch to show progress", func() bool { return strings.Contains(stderr.String(), "in_progress [") })
	cmd.Process.Signal(os.Interrupt)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("interrupted watch: %v, want exit status 130\n%s", err, stderr.String())
	}
	id := regexp.MustCompile(`batch_\S+`).FindString(stdout.String())
	msg := stderr.String()
	for _, want := range []string{
		"batch " + id + " goes on in the gateway",
		"herd batch get " + id + " --wait --url " + c.url,
		"herd batch cancel " + id + " --url " + c.url,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("interrupted watch does not say %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "context canceled") {
		t.Errorf("interrupted watch prints the bare context error:\n%s", msg)
	}
	if b := batchStatus(t, c, id); b.Terminal() {
		t.Fatalf("the batch stopped with the watch: %s", b.Status)
	}
	out, err := runCLI(t, "batch", "cancel", id, "--url", c.url)
	if err != nil || !strings.Contains(out, "cancel") {
		t.Fatalf("herd batch cancel: %v %s", err, out)
	}
	waitFor(t, time.Minute, "the batch to be cancelled", func() bool { return batchStatus(t, c, id).Status == "cancelled" })
}

// chromiumBinary finds a headless Chromium: HERD_CHROMIUM, else chromium or chromium-browser on
// PATH. Without one the dashboard check is skipped, unless HERD_REQUIRE_CHROMIUM=1 (make test
// sets it; scripts/test-deps.sh installs the Debian package).
func chromiumBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("HERD_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("HERD_REQUIRE_CHROMIUM") != "" {
		t.Fatal("HERD_REQUIRE_CHROMIUM is set but no chromium is installed (scripts/test-deps.sh installs it)")
	}
	t.Skip("no chromium on PATH: dashboard not checked in a browser (set HERD_REQUIRE_CHROMIUM=1 to require it)")
	return ""
}

// checkDashboardInChromium loads the dashboard in headless Chromium, lets its scripts run (virtual
// time), and checks the DOM they built; the screenshot goes to HERD_DASHBOARD_SCREENSHOT when set.
func checkDashboardInChromium(t *testing.T, url, batchID string) {
	t.Helper()
	bin := chromiumBinary(t)
	profile := t.TempDir()
	run := func(args ...string) []byte {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		all := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
			"--user-data-dir=" + profile, "--window-size=1280,1900", "--virtual-time-budget=6000"}, args...)
		cmd := exec.CommandContext(ctx, bin, append(all, url+"/")...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("chromium %v: %v\n%s", args, err, stderr.String())
		}
		return out
	}
	dom := string(run("--dump-dom"))
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`data-node="sim1-t4" data-status="(up|late)"`),
		regexp.MustCompile(`data-node="sim2-a40" data-status="down"`),
		regexp.MustCompile(`down [0-9.]+s ago`),
		regexp.MustCompile(`class="badge sim">simulated<`),
		regexp.MustCompile(`data-chart="gpu"[^>]*>[\s\S]*?<path d="M[0-9.]+ [0-9.]+ L`),
		regexp.MustCompile(`data-chart="queue"`),
		regexp.MustCompile(`class="batch" data-batch="` + regexp.QuoteMeta(batchID) + `"`),
		regexp.MustCompile(`2 done of 2`),
		regexp.MustCompile(`class="preset"><td>poet</td><td>v5</td>`),
		regexp.MustCompile(`id="queue-interactive">0<`),
		regexp.MustCompile(`class="drain" data-node="sim1-t4" data-action="drain"`),
	} {
		if !want.MatchString(dom) {
			t.Errorf("dashboard DOM after its scripts ran lacks %s", want)
		}
	}
	if m := regexp.MustCompile(`<div id="err">([^<]+)</div>`).FindStringSubmatch(dom); m != nil {
		t.Errorf("dashboard shows an API error: %s", m[1])
	}
	shot := os.Getenv("HERD_DASHBOARD_SCREENSHOT")
	if shot == "" {
		shot = filepath.Join(t.TempDir(), "dashboard.png")
	}
	run("--screenshot=" + shot)
	if st, err := os.Stat(shot); err != nil || st.Size() < 10<<10 {
		t.Fatalf("screenshot %s: %v", shot, err)
	}
	if t.Failed() {
		t.Logf("dashboard DOM:\n%s", dom)
	}
}

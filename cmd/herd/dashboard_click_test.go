package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/herd-llm/herd/gateway/api"
)

// Keys of TestDashboardDrainClicks: the admin key may drain, the client key may not.
const (
	clickAdminKey  = "dash-admin-key"
	clickClientKey = "dash-client-key"
)

// TestDashboardDrainClicks drives the dashboard in a real headless Chromium over the DevTools
// protocol, as an operator would: it pastes the admin key into the page, clicks "drain" on a
// node, checks through the admin API that the node is draining and that the page shows it so,
// clicks "undrain" and checks it is back; then, with a client (non-admin) key in the field, it
// clicks "drain" again and checks that the page shows the refusal, keeps showing it across
// refreshes, and that nothing changed.
func TestDashboardDrainClicks(t *testing.T) {
	herdBinary(t) // skips under -short
	bin := chromiumBinary(t)

	c := startGateway(t, "--api-keys", clickClientKey, "--admin-keys", clickAdminKey)
	c.addSimAgent("click-t4", "t4")
	c.addSimAgent("click-a40", "a40")
	waitFor(t, 60*time.Second, "2 nodes registered", func() bool { return healthyNodes(c, clickAdminKey) >= 2 })

	ctx := newBrowser(t, bin)
	var exceptions lockedStrings
	if err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*runtime.EventExceptionThrown); ok && e.ExceptionDetails != nil {
			d := e.ExceptionDetails
			msg := fmt.Sprintf("%s (line %d)", d.Text, d.LineNumber+1)
			if d.Exception != nil {
				msg += ": " + d.Exception.Description
			}
			exceptions.add(msg)
		}
	}); err != nil {
		t.Fatal(err)
	}
	// fail ends the test with what the page showed.
	fail := func(what string, err error) {
		t.Helper()
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		dom, _ := chromedp.Run(dctx, chromedp.OuterHTML(chromedp.CSS("body")))
		cancel()
		t.Fatalf("%s: %v\npage exceptions: %v\nDOM:\n%s", what, err, exceptions.list(), dom)
	}
	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			fail(what, err)
		}
	}
	// until waits for a JavaScript condition on the page.
	until := func(expr string) chromedp.Action[chromedp.Void] {
		return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second))
	}
	card := func(id string) string { return fmt.Sprintf(`document.querySelector('#nodes .node[data-node=%q]')`, id) }
	button := func(id, action string) chromedp.CSS {
		return chromedp.CSS(fmt.Sprintf(`#nodes button.drain[data-node=%q][data-action=%q]`, id, action))
	}
	// pasteKey does what an operator replacing the key does: click in the field, select all
	// (Ctrl+A), paste the key over it (Input.insertText: text that comes from no key press) and
	// press Enter.
	pasteKey := func(key string) chromedp.Action[chromedp.Void] {
		selectAll := chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			for _, typ := range []input.DispatchKeyEventType{input.DispatchKeyEventTypeRawKeyDown, input.DispatchKeyEventTypeKeyUp} {
				if _, err := cdp.Call(ctx, t, input.DispatchKeyEvent, input.DispatchKeyEventParams{Type: typ, Key: "a", Code: "KeyA",
					Modifiers: int64(chromedp.ModifierCtrl), WindowsVirtualKeyCode: 65, Commands: []string{"selectAll"}}); err != nil {
					return err
				}
			}
			return nil
		})
		paste := chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := cdp.Call(ctx, t, input.InsertText, input.InsertTextParams{Text: key})
			return err
		})
		return chromedp.Steps(chromedp.Click(chromedp.ID("key")), selectAll, paste, chromedp.SendKeys(chromedp.ID("key"), "\n"),
			until(fmt.Sprintf(`document.querySelector("#key").value === %q`, key)))
	}

	// A batch with one good line and two the gateway refuses (400): its bar must show the
	// failures as failures.
	batchID := submitMixedBatch(t, c.url, clickAdminKey)

	step("open the dashboard", chromedp.Navigate(c.url+"/dashboard"), chromedp.WaitVisible(chromedp.ID("key")))
	// Without a key the gateway refuses every read (401), and the page asks for a key once: one
	// sentence, not one per refused read; no "loading…" left; the key box no longer claims none
	// is needed.
	step("the page to ask for a key, once",
		until(`document.querySelector("#err").textContent.startsWith("This gateway needs an API key")`),
		until(`Number(document.body.dataset.refreshed) > 0`))
	type pageState struct {
		Err         string `json:"err"`
		Summary     string `json:"summary"`
		Placeholder string `json:"placeholder"`
		Needed      bool   `json:"needed"`
	}
	readCtx, cancelRead := context.WithTimeout(ctx, 10*time.Second)
	noKey, err := chromedp.Run(readCtx, chromedp.Evaluate[pageState](`({err: document.querySelector("#err").textContent, summary: document.querySelector("#summary").textContent,
		placeholder: document.querySelector("#key").placeholder, needed: document.querySelector("#key").classList.contains("needed")})`))
	cancelRead()
	if err != nil {
		fail("read the page without a key", err)
	}
	if strings.Count(noKey.Err, "key") != 2 || strings.Contains(noKey.Err, "/admin/v1") || strings.Contains(noKey.Err, "401") ||
		noKey.Summary == "loading…" || strings.Contains(noKey.Placeholder, "none") || !noKey.Needed {
		t.Errorf("dashboard without a key: err %q, summary %q, key placeholder %q, key box marked %v; want one prompt for a key, no loading…, no \"none\" placeholder",
			noKey.Err, noKey.Summary, noKey.Placeholder, noKey.Needed)
	}

	step("paste the admin key and see both nodes",
		pasteKey(clickAdminKey),
		until(`document.querySelector("#nodes").dataset.current === "true" && document.querySelectorAll("#nodes .node").length === 2`),
		until(card("click-t4")+`.dataset.draining === "false"`),
		chromedp.WaitVisible(button("click-t4", "drain")))

	// The batch: 1 done (blue), 2 failed (red), never a full bar of progress.
	row := fmt.Sprintf(`document.querySelector('#batches tr.batch[data-batch=%q]')`, batchID)
	step("the batch's bar to show its failures",
		until(row+` && `+row+`.querySelector(".progress").textContent.includes("1 done, 2 failed of 3")`),
		until(row+`.querySelector(".bar .completed").style.width === "33%" && `+row+`.querySelector(".bar .failed").style.width === "67%"`))

	step("click drain on click-t4", chromedp.Click(button("click-t4", "drain")))
	waitFor(t, 20*time.Second, "the admin API to show click-t4 draining", func() bool { return draining(t, c, "click-t4") == 1 })
	if draining(t, c, "click-a40") != 0 {
		t.Fatal("drain on click-t4 drained click-a40 too")
	}
	step("the page to show click-t4 draining",
		until(card("click-t4")+`.dataset.draining === "true" && `+card("click-t4")+`.querySelector(".node-state").textContent === "up, draining"`),
		chromedp.WaitVisible(button("click-t4", "undrain")),
		until(card("click-a40")+`.dataset.draining === "false"`),
		until(`document.querySelector("#action-error").textContent === "" && document.querySelector("#err").textContent === ""`))

	step("click undrain on click-t4", chromedp.Click(button("click-t4", "undrain")))
	waitFor(t, 20*time.Second, "the admin API to show click-t4 undrained", func() bool { return draining(t, c, "click-t4") == 0 })
	step("the page to show click-t4 up again",
		until(card("click-t4")+`.dataset.draining === "false" && `+card("click-t4")+`.querySelector(".node-state").textContent === "up"`),
		chromedp.WaitVisible(button("click-t4", "drain")))

	// A client key: the page can no longer read the nodes, so their cards stay but are marked as
	// not current, and a click on drain is refused by the gateway, visibly.
	step("paste a client key",
		pasteKey(clickClientKey),
		until(`document.querySelector("#nodes").dataset.current === "false"`),
		until(`document.querySelector("#err").textContent.includes("Missing scopes: admin")`),
		until(`document.querySelector("#nodes-note").textContent.includes("not current")`))
	step("click drain on click-t4 with the client key", chromedp.Click(button("click-t4", "drain")))
	const refusal = `document.querySelector("#action-error").textContent.startsWith("drain click-t4 failed: ") && document.querySelector("#action-error").textContent.includes("Missing scopes: admin")`
	step("the page to show the refusal", until(refusal), chromedp.WaitVisible(chromedp.ID("action-error")))
	// The refusal must outlast the page's own refreshes (every 2 s), which used to overwrite it.
	evalCtx, cancelEval := context.WithTimeout(ctx, 10*time.Second)
	defer cancelEval()
	mark, err := chromedp.Run(evalCtx, chromedp.Evaluate[float64](`Number(document.body.dataset.refreshed)`))
	if err != nil {
		fail("read the refresh mark", err)
	}
	step("two more refreshes", until(fmt.Sprintf(`Number(document.body.dataset.refreshed) > %d + 2500`, int64(mark))))
	step("the refusal still shown after the refreshes", until(refusal))
	enabled, err := chromedp.Run(evalCtx, chromedp.Evaluate[bool](fmt.Sprintf(`!document.querySelector(%q).disabled`, string(button("click-t4", "drain")))))
	if err != nil {
		fail("read the button", err)
	}
	if !enabled {
		t.Error("the drain button stays disabled after a refused click")
	}
	if draining(t, c, "click-t4") != 0 || draining(t, c, "click-a40") != 0 {
		t.Fatal("a drain clicked with a client key changed a node")
	}
	if ex := exceptions.list(); len(ex) > 0 {
		t.Errorf("the page threw: %v", ex)
	}
}

// submitMixedBatch starts a batch of three lines, two of which the gateway refuses (a negative
// max_tokens), and waits for it to complete; it returns the batch's ID.
func submitMixedBatch(t *testing.T, url, key string) string {
	t.Helper()
	lines := `{"custom_id":"ok","method":"POST","url":"/v1/chat/completions","body":{"model":"llama3.2:1b","max_tokens":4,"messages":[{"role":"user","content":"hi"}]}}
{"custom_id":"bad-1","method":"POST","url":"/v1/chat/completions","body":{"model":"llama3.2:1b","max_tokens":-1,"messages":[{"role":"user","content":"hi"}]}}
{"custom_id":"bad-2","method":"POST","url":"/v1/chat/completions","body":{"model":"llama3.2:1b","max_tokens":-1,"messages":[{"role":"user","content":"hi"}]}}
`
	c := api.NewClient(url, key)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	f, err := c.UploadFile(ctx, "mixed.jsonl", "batch", []byte(lines))
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.CreateBatch(ctx, api.CreateBatchRequest{InputFileID: f.ID, Endpoint: "/v1/chat/completions", CompletionWindow: "24h"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the mixed batch to complete", func() bool {
		got, err := c.Batch(ctx, b.ID)
		return err == nil && got.Status == "completed"
	})
	got, _ := c.Batch(ctx, b.ID)
	if rc := got.RequestCounts; rc.Completed != 1 || rc.Failed != 2 {
		t.Fatalf("mixed batch counts %+v, want 1 completed and 2 failed", rc)
	}
	return b.ID
}

// draining returns 1 when the admin API shows node id draining, 0 when not, and fails the test
// when it cannot say.
func draining(t *testing.T, c *cluster, id string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, c.url+"/admin/v1/nodes", nil)
	req.Header.Set("Authorization", "Bearer "+clickAdminKey)
	resp, err := httpClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out api.NodeList
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&out) != nil {
		t.Fatalf("GET /admin/v1/nodes with the admin key: status %d", resp.StatusCode)
	}
	for _, n := range out.Nodes {
		if n.ID == id {
			if n.Draining {
				return 1
			}
			return 0
		}
	}
	t.Fatalf("node %s not listed by the admin API", id)
	return -1
}

// newBrowser starts headless Chromium (bin) under chromedp with a fresh profile in a temporary
// directory and returns a tab's context, bounded to two minutes. At cleanup the browser is
// closed and the test fails if any process still runs with that profile (they are then killed,
// by PID).
func newBrowser(t *testing.T, bin string) context.Context {
	t.Helper()
	profile := t.TempDir()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.NoSandbox, // tests run as root in CI
		chromedp.UserDataDir(profile),
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 1000),
	)
	limit, cancelLimit := context.WithTimeout(context.Background(), 2*time.Minute)
	alloc, cancelAlloc := chromedp.NewExecAllocator(limit, opts...)
	ctx, cancelTab := chromedp.NewContext(alloc)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // kills the browser and waits for it
		cancelLimit()
		if left := processesUsing("--user-data-dir=" + profile); len(left) > 0 {
			for _, pid := range left {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			t.Errorf("chromium processes left running after the test: %v", left)
		}
	})
	// The first run starts the browser, which lives as long as that run's context: ctx itself
	// (bounded by limit), never a shorter one.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium %s: %v", bin, err)
	}
	return ctx
}

// processesUsing returns the PIDs of the processes with arg on their command line.
func processesUsing(arg string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		for a := range bytes.SplitSeq(cmdline, []byte{0}) {
			if string(a) == arg {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// lockedStrings collects strings from the browser's event goroutine for the test's reads.
type lockedStrings struct {
	mu sync.Mutex
	s  []string
}

func (l *lockedStrings) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.s = append(l.s, strings.TrimSpace(s))
}

func (l *lockedStrings) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.s...)
}

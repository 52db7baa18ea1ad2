package loadtest

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/herd-llm/herd/openaierr"
)

func post(t *testing.T, ctx context.Context, url, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

const chatBody = `{"model":"m1","messages":[{"role":"user","content":"hello"}]}`

func TestFakeBackendOK(t *testing.T) {
	srv := httptest.NewServer(NewFakeBackend(FaultOK, FakeOptions{Models: []string{"m1", "m2"}, Chunks: 7}))
	defer srv.Close()
	ctx := context.Background()

	t.Run("chat non-stream", func(t *testing.T) {
		resp, b := post(t, ctx, srv.URL+"/v1/chat/completions", chatBody)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
		var c struct {
			Object  string `json:"object"`
			Model   string `json:"model"`
			Choices []struct {
				Message      struct{ Role, Content string } `json:"message"`
				FinishReason string                         `json:"finish_reason"`
			} `json:"choices"`
			Usage struct {
				PromptTokens, CompletionTokens, TotalTokens int
			} `json:"usage"`
		}
		if err := json.Unmarshal(b, &c); err != nil {
			t.Fatalf("%v: %s", err, b)
		}
		if c.Object != "chat.completion" || c.Model != "m1" || len(c.Choices) != 1 || c.Choices[0].Message.Content != strings.Repeat("tok ", 7) || c.Choices[0].FinishReason != "stop" {
			t.Errorf("unexpected completion %s", b)
		}
		if !strings.Contains(string(b), `"completion_tokens":7`) || !strings.Contains(string(b), `"prompt_tokens":`+itoa(len(chatBody)/4)) {
			t.Errorf("usage wrong: %s", b)
		}
	})

	t.Run("chat stream with usage, parsed by the load generator", func(t *testing.T) {
		body := `{"model":"m1","messages":[],"stream":true,"stream_options":{"include_usage":true}}`
		resp, b := post(t, ctx, srv.URL+"/v1/chat/completions", body)
		if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
			t.Errorf("content type %q", ct)
		}
		st, err := parseStream(strings.NewReader(string(b)), tickClock())
		if err != nil {
			t.Fatalf("%v\n%s", err, b)
		}
		if st.Deltas != 7 || st.Usage == nil || st.Usage.CompletionTokens != 7 {
			t.Errorf("deltas %d usage %+v\n%s", st.Deltas, st.Usage, b)
		}
		if strings.Count(string(b), "data: ") != 1+7+1+1+1 { // role, 7 tokens, finish, usage, [DONE]
			t.Errorf("unexpected chunk count:\n%s", b)
		}
	})

	t.Run("stream without include_usage has no usage chunk", func(t *testing.T) {
		_, b := post(t, ctx, srv.URL+"/v1/chat/completions", `{"model":"m1","stream":true}`)
		if strings.Contains(string(b), "usage") {
			t.Errorf("usage sent without include_usage:\n%s", b)
		}
	})

	t.Run("max_tokens cuts the answer with finish_reason length", func(t *testing.T) {
		_, b := post(t, ctx, srv.URL+"/v1/chat/completions", `{"model":"m1","max_tokens":3}`)
		if !strings.Contains(string(b), `"finish_reason":"length"`) || !strings.Contains(string(b), `"completion_tokens":3`) {
			t.Errorf("got %s", b)
		}
	})

	t.Run("completions", func(t *testing.T) {
		_, b := post(t, ctx, srv.URL+"/v1/completions", `{"model":"m2","prompt":"hi"}`)
		if !strings.Contains(string(b), `"object":"text_completion"`) || !strings.Contains(string(b), `"text":"tok `) {
			t.Errorf("got %s", b)
		}
		_, b = post(t, ctx, srv.URL+"/v1/completions", `{"model":"m2","prompt":"hi","stream":true}`)
		st, err := parseStream(strings.NewReader(string(b)), tickClock())
		if err != nil || st.Deltas != 7 {
			t.Errorf("stream: %v %+v\n%s", err, st, b)
		}
	})

	t.Run("embeddings", func(t *testing.T) {
		for in, n := range map[string]int{`"a"`: 1, `["a","b","c"]`: 3, `[1,2,3]`: 1, `[[1,2],[3]]`: 2} {
			_, b := post(t, ctx, srv.URL+"/v1/embeddings", `{"model":"e","input":`+in+`}`)
			var e struct {
				Data []struct {
					Index     int       `json:"index"`
					Embedding []float64 `json:"embedding"`
				} `json:"data"`
			}
			if err := json.Unmarshal(b, &e); err != nil || len(e.Data) != n || len(e.Data[0].Embedding) != 16 {
				t.Errorf("input %s: %v %s", in, err, b)
			}
		}
		resp, _ := post(t, ctx, srv.URL+"/v1/embeddings", `{"model":"e"}`)
		if resp.StatusCode != 400 {
			t.Errorf("missing input: status %d", resp.StatusCode)
		}
	})

	t.Run("models", func(t *testing.T) {
		resp, err := http.Get(srv.URL + "/v1/models")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var l struct {
			Data []struct{ ID string } `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&l); err != nil || len(l.Data) != 2 || l.Data[1].ID != "m2" {
			t.Errorf("models: %v %+v", err, l)
		}
	})

	t.Run("bad requests in the OpenAI error shape", func(t *testing.T) {
		for _, c := range []struct{ path, body string }{
			{"/v1/chat/completions", "{"},
			{"/v1/chat/completions", `{"messages":[]}`},
			{"/v1/nope", `{}`},
		} {
			resp, b := post(t, ctx, srv.URL+c.path, c.body)
			var e struct {
				Error *openaierr.Detail `json:"error"`
			}
			if resp.StatusCode < 400 || json.Unmarshal(b, &e) != nil || e.Error == nil || e.Error.Message == "" {
				t.Errorf("%s %s: status %d body %s", c.path, c.body, resp.StatusCode, b)
			}
		}
	})
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func TestFakeBackendFaults(t *testing.T) {
	ctx := context.Background()
	t.Run("error", func(t *testing.T) {
		srv := httptest.NewServer(NewFakeBackend(FaultError, FakeOptions{}))
		defer srv.Close()
		resp, b := post(t, ctx, srv.URL+"/v1/chat/completions", chatBody)
		if resp.StatusCode != 500 || errorMessage(b) != "fake backend: injected error" {
			t.Errorf("status %d body %s", resp.StatusCode, b)
		}
		// Listing still works so an agent can register.
		r, err := http.Get(srv.URL + "/v1/models")
		if err != nil || r.StatusCode != 200 {
			t.Errorf("models in error mode: %v", err)
		}
		r.Body.Close()
	})
	t.Run("flaky fails every k-th", func(t *testing.T) {
		srv := httptest.NewServer(NewFakeBackend(FaultFlaky, FakeOptions{FailEvery: 3}))
		defer srv.Close()
		var got []int
		for range 9 {
			resp, _ := post(t, ctx, srv.URL+"/v1/chat/completions", chatBody)
			got = append(got, resp.StatusCode)
		}
		want := []int{200, 200, 500, 200, 200, 500, 200, 200, 500}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("statuses %v, want %v", got, want)
			}
		}
	})
	t.Run("slow waits its delay", func(t *testing.T) {
		srv := httptest.NewServer(NewFakeBackend(FaultSlow, FakeOptions{Delay: 50 * time.Millisecond}))
		defer srv.Close()
		start := time.Now()
		resp, _ := post(t, ctx, srv.URL+"/v1/chat/completions", chatBody)
		if resp.StatusCode != 200 || time.Since(start) < 50*time.Millisecond {
			t.Errorf("status %d after %v", resp.StatusCode, time.Since(start))
		}
	})
	t.Run("hang answers nothing until the client gives up", func(t *testing.T) {
		fb := NewFakeBackend(FaultHang, FakeOptions{})
		srv := httptest.NewServer(fb)
		defer srv.Close()
		cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		resp, _ := post(t, cctx, srv.URL+"/v1/chat/completions", chatBody)
		if resp != nil {
			t.Errorf("hang answered with %d", resp.StatusCode)
		}
		if all, inf := fb.Requests(); all != 1 || inf != 1 {
			t.Errorf("requests = %d/%d", all, inf)
		}
	})
}

func TestParseFaultMode(t *testing.T) {
	for _, s := range []string{"ok", "error", "slow", "hang", "flaky", ""} {
		if _, err := ParseFaultMode(s); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
	if _, err := ParseFaultMode("broken"); err == nil {
		t.Error("unknown mode accepted")
	}
}

func TestStartFakeAndServeFake(t *testing.T) {
	s, err := StartFake("127.0.0.1:0", FaultOK, FakeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	resp, b := post(t, context.Background(), s.URL+"/v1/chat/completions", chatBody)
	if resp == nil || resp.StatusCode != 200 {
		t.Fatalf("StartFake: %v %s", resp, b)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	urls := make(chan string, 1)
	errc := make(chan error, 1)
	go func() { errc <- ServeFake(ctx, "127.0.0.1:0", FaultOK, FakeOptions{}, func(u string) { urls <- u }) }()
	u := <-urls
	if resp, _ := post(t, context.Background(), u+"/v1/chat/completions", chatBody); resp == nil || resp.StatusCode != 200 {
		t.Fatal("ServeFake did not answer")
	}
	cancel()
	if err := <-errc; err != nil {
		t.Errorf("ServeFake returned %v", err)
	}
}

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"plain", `q"uo\te`, "ctl\x00\x1f\n", "ünïcode ✓"} {
		var back string
		if err := json.Unmarshal(appendJSONString(nil, s), &back); err != nil || back != s {
			t.Errorf("%q → %q (%v)", s, back, err)
		}
	}
}

// BenchmarkFakeBackendStream measures the fake's own cost per streamed response, which the
// overhead scenario counts on the direct side.
func BenchmarkFakeBackendStream(b *testing.B) {
	fb := NewFakeBackend(FaultOK, FakeOptions{})
	body := `{"model":"fake-llm","messages":[{"role":"user","content":"hello there"}],"stream":true,"stream_options":{"include_usage":true}}`
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(body))
		w := httptest.NewRecorder()
		fb.ServeHTTP(w, req)
		if w.Code != 200 {
			b.Fatal(w.Code)
		}
	}
}

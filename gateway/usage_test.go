package gateway

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestLastIntField(t *testing.T) {
	for _, tc := range []struct {
		in, key string
		want    int64
		ok      bool
	}{
		{`{"usage":{"prompt_tokens":5,"completion_tokens":3}}`, "completion_tokens", 3, true},
		{`{"usage":{"prompt_tokens": 12 ,"completion_tokens":3}}`, "prompt_tokens", 12, true},
		{"\"completion_tokens\":1 ... \"completion_tokens\"\n:\n 44}", "completion_tokens", 44, true},
		{`"completion_tokens":null`, "completion_tokens", 0, false},
		{`"completion_tokens":7, "completion_tokens":"x"`, "completion_tokens", 7, true}, // the last valid one
		{`"completion_tokens"`, "completion_tokens", 0, false},
		{`"completion_tokens":-3`, "completion_tokens", 0, false},
		{`"completion_tokens":99999999999999999999`, "completion_tokens", 0, false},
		{`"completion_tokens_details":{"x":1}`, "completion_tokens", 0, false},
		{``, "prompt_tokens", 0, false},
	} {
		got, ok := lastIntField([]byte(tc.in), tc.key)
		if got != tc.want || ok != tc.ok {
			t.Errorf("lastIntField(%q, %q) = %d %v, want %d %v", tc.in, tc.key, got, ok, tc.want, tc.ok)
		}
	}
}

func FuzzLastIntField(f *testing.F) {
	f.Add([]byte(`{"usage":{"prompt_tokens":5,"completion_tokens":3}}`))
	f.Add([]byte(`"prompt_tokens" :   `))
	f.Fuzz(func(t *testing.T, b []byte) {
		if v, ok := lastIntField(b, "prompt_tokens"); ok && v < 0 {
			t.Fatalf("negative count %d", v)
		}
	})
}

func chunk(content string) string {
	return `data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"` + content + `"}}]}` + "\n\n"
}

func TestMeter(t *testing.T) {
	t0 := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	usage := `data: {"object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}` + "\n\n"
	role := `data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}` + "\n\n"
	for _, tc := range []struct {
		name               string
		stream, ndjson     bool
		reads              []string
		prompt, completion int64
		textEvents         int
		tpot               time.Duration
	}{
		{"non-streamed", false, false, []string{`{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":5,`, `"completion_tokens":3,"total_tokens":8}}`}, 5, 3, 0, 0},
		{"non-streamed, huge body", false, false, []string{`{"data":[` + strings.Repeat("0.1,", 4000), `0.2]`, `,"usage":{"prompt_tokens":7,"total_tokens":7}}`}, 7, 0, 0, 0},
		{"stream with usage", true, false, []string{role + chunk("a"), chunk("b"), chunk("c") + usage + "data: [DONE]\n\n"}, 9, 3, 3, 20 * time.Millisecond},
		{"stream without usage", true, false, []string{role, chunk("a") + chunk("b"), chunk("c"), chunk("d") + "data: [DONE]\n\n"}, 0, 4, 4, 40 * time.Millisecond / 3},
		{"ollama native chat stream", true, true, []string{`{"message":{"role":"assistant","content":"Hi"},"done":false}` + "\n" + `{"message":{"role":"assistant","content":" there"},"done":false}` + "\n",
			`{"message":{"role":"assistant","content":""},"done":true,"prompt_eval_count":11,"eval_count":2}` + "\n"}, 11, 2, 2, 0},
		{"ollama native generate, not streamed", false, false, []string{`{"response":"Hi there","done":true,"prompt_eval_count":11,"eval_count":3}`}, 11, 3, 0, 0},
		{"completions stream", true, false, []string{`data: {"choices":[{"text":"x"}]}` + "\n\n", `data: {"choices":[{"text":"y"}]}` + "\n\n"}, 0, 2, 2, 20 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m meter
			for i, r := range tc.reads {
				m.body([]byte(r))
				if tc.stream {
					sep := sseEventEnd
					if tc.ndjson {
						sep = ndjsonLineEnd
					}
					m.events([]byte(r), sep, t0.Add(time.Duration(i)*20*time.Millisecond))
				}
			}
			p, c := m.tokens(tc.stream)
			if p != tc.prompt || c != tc.completion || m.textEvents != tc.textEvents {
				t.Fatalf("tokens %d/%d, text events %d; want %d/%d, %d", p, c, m.textEvents, tc.prompt, tc.completion, tc.textEvents)
			}
			if got := m.tpot(c); got != tc.tpot {
				t.Fatalf("tpot %s, want %s", got, tc.tpot)
			}
			m.reset()
			if p, c := m.tokens(true); p != 0 || c != 0 {
				t.Fatal("reset kept counts")
			}
		})
	}
}

func FuzzMeterEvents(f *testing.F) {
	f.Add([]byte(chunk("a") + chunk("") + "data: [DONE]\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var m meter
		m.body(b)
		m.events(b, sseEventEnd, time.Unix(0, 0))
		m.events(b, ndjsonLineEnd, time.Unix(0, 0))
		if p, c := m.tokens(true); p < 0 || c < 0 || m.tailN > usageTail {
			t.Fatalf("tokens %d %d tail %d", p, c, m.tailN)
		}
	})
}

// TestRequestMetering drives requests through the gateway and reads /metrics: tokens by model,
// node and tenant, time to first token for streams only, inter-token latency and time per output
// token from the relayed events, on the fake clock.
func TestRequestMetering(t *testing.T) {
	g := newCoreGW(t, nil)
	a := newWireAgent(t, "a", wireOK)
	g.beat("a", a.srv.URL, 2, testModel)
	for _, body := range []string{
		`{"model":"llama3.1:8b","messages":[{"role":"user","content":"hi"}]}`,               // usage 5 + 3
		`{"model":"llama3.1:8b","stream":true,"messages":[{"role":"user","content":"hi"}]}`, // no usage: 4 text chunks
	} {
		resp := g.post(t, "/v1/chat/completions", body)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	resp := g.post(t, "/v1/embeddings", `{"model":"llama3.1:8b","input":"x"}`) // usage 2 + 0
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	// A stream paced on the fake clock: first event after 100 ms, then one every 20 ms.
	a.mu.Lock()
	a.mode = wireSlowEachStep
	a.mu.Unlock()
	for range 3 { // the requests above arrived
		recv(t, a.entered)
	}
	got := make(chan *http.Response, 1)
	go func() {
		got <- g.post(t, "/v1/chat/completions", `{"model":"llama3.1:8b","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`)
	}()
	recv(t, a.entered)
	g.clock.Advance(100 * time.Millisecond)
	send(t, a.step, struct{}{})
	resp = recv(t, got)
	br := bufio.NewReader(resp.Body)
	for i := range wireWords {
		if i > 0 {
			g.clock.Advance(20 * time.Millisecond)
			send(t, a.step, struct{}{})
		}
		br.ReadString('\n')
		br.ReadString('\n')
	}
	io.Copy(io.Discard, br)
	resp.Body.Close()

	mresp := g.get(t, "/metrics", "")
	text, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	for _, line := range []string{
		`herd_prompt_tokens_total{model="llama3.1:8b",node="a",tenant="default"} 12`,     // 5 + 2 + 5
		`herd_completion_tokens_total{model="llama3.1:8b",node="a",tenant="default"} 11`, // 3 + 4 + 4
		// The paced stream only: the non-streamed requests have none, and the unpaced stream's
		// first token took no time on the fake clock, which is not a measurement.
		`herd_time_to_first_token_seconds_count{model="llama3.1:8b",node="a"} 1`,
		`herd_time_to_first_token_seconds_bucket{model="llama3.1:8b",node="a",le="0.1"} 1`,
		`herd_time_to_first_token_seconds_bucket{model="llama3.1:8b",node="a",le="0.05"} 0`,
		`herd_inter_token_latency_seconds_bucket{model="llama3.1:8b",node="a",le="0.01"} 3`, // unpaced stream: 0 gaps
		`herd_inter_token_latency_seconds_bucket{model="llama3.1:8b",node="a",le="0.02"} 6`,
		`herd_inter_token_latency_seconds_count{model="llama3.1:8b",node="a"} 6`,
		`herd_time_per_output_token_seconds_count{model="llama3.1:8b",node="a"} 1`, // the unpaced one has no span
		`herd_time_per_output_token_seconds_bucket{model="llama3.1:8b",node="a",le="0.02"} 1`,
		`herd_time_per_output_token_seconds_bucket{model="llama3.1:8b",node="a",le="0.01"} 0`,
	} {
		if !strings.Contains(string(text), "\n"+line+"\n") {
			t.Errorf("/metrics lacks %s", line)
		}
	}
	if t.Failed() {
		for _, l := range strings.Split(string(text), "\n") {
			if strings.Contains(l, "tokens_total") || strings.Contains(l, "token_seconds") || strings.Contains(l, "latency_seconds") {
				t.Log(l)
			}
		}
	}
}

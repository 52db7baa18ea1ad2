package gateway

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// keyCount is the value countUsageKeys found for key.
func keyCount(b []byte, key string) (int64, bool) {
	c := countUsageKeys(b)
	for s, n := range usageKeyNames {
		if n == key {
			return c.v[s], c.ok[s]
		}
	}
	return 0, false
}

func TestUsageKeyCount(t *testing.T) {
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
		{`"prompt_eval_count":26,"eval_count":298`, "eval_count", 298, true},
		{`"prompt_eval_count":26,"eval_count":298`, "prompt_eval_count", 26, true},
		{`"max_completion_tokens":5`, "completion_tokens", 0, false},
		{`{"content":"say \"total_tokens\": 99"}`, "total_tokens", 0, false},
		{`{"x\"total_tokens": 5}`, "total_tokens", 0, false}, // a key that only ends like one
	} {
		got, ok := keyCount([]byte(tc.in), tc.key)
		if got != tc.want || ok != tc.ok {
			t.Errorf("count of %q in %q = %d %v, want %d %v", tc.key, tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func FuzzUsageKeys(f *testing.F) {
	f.Add([]byte(`{"usage":{"prompt_tokens":5,"completion_tokens":3}}`))
	f.Add([]byte(`"prompt_tokens" :   `))
	f.Add([]byte(`"prompt_eval_count":1,"eval_count":2`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c := countUsageKeys(b)
		for s, v := range c.v {
			if v < 0 || !c.ok[s] && v != 0 {
				t.Fatalf("%s: count %d found %v", usageKeyNames[s], v, c.ok[s])
			}
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
		if p, c := m.tokens(true); p < 0 || c < 0 || len(m.window()) > usageTail {
			t.Fatalf("tokens %d %d tail %d", p, c, len(m.window()))
		}
	})
}

// TestMeterKeepsTheEnd: the tail the meter reads is the last usageTail bytes of the body,
// however the body was cut into reads.
func TestMeterKeepsTheEnd(t *testing.T) {
	var m meter
	var all bytes.Buffer
	chunk := []byte(strings.Repeat("x", 1000) + "\n")
	for i := range 40 {
		if i == 39 {
			chunk = []byte(`{"usage":{"prompt_tokens":3,"completion_tokens":4}}`)
		}
		m.body(chunk)
		all.Write(chunk)
	}
	want := all.Bytes()[all.Len()-usageTail:]
	if !bytes.Equal(m.window(), want) {
		t.Fatalf("tail is not the last %d bytes", usageTail)
	}
	if p, c := m.tokens(false); p != 3 || c != 4 {
		t.Fatalf("usage %d %d", p, c)
	}
	m.body(bytes.Repeat([]byte("y"), 3*usageTail))
	if len(m.window()) != usageTail {
		t.Fatalf("a large write kept %d bytes", len(m.window()))
	}
	if u := m.usage(); u.seen {
		t.Fatalf("usage read before the body went on is kept: %+v", u)
	}
	m.reset()
	if len(m.window()) != 0 {
		t.Fatal("reset kept bytes")
	}
}

// TestMeterUsageTotal: the rate limits settle against total_tokens, or Ollama's prompt and
// output counts added up; the escaped key in the content is not a key, and a number not yet
// complete is not taken.
func TestMeterUsageTotal(t *testing.T) {
	stream := "data: {\"choices\":[{\"delta\":{\"content\":\"say \\\"total_tokens\\\": 99\"}}]}\n\n" +
		"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,\"total_tokens\": 12}}\n\ndata: [DONE]\n\n"
	for _, size := range []int{1, 2, 3, 7, 16, 41, 1000} {
		var m meter
		for b := []byte(stream); len(b) > 0; {
			n := min(size, len(b))
			m.body(b[:n])
			b = b[n:]
		}
		if u := m.usage(); !u.seen || u.total != 12 {
			t.Errorf("pieces of %d: seen=%v total=%d, want 12", size, u.seen, u.total)
		}
	}
	var m meter
	m.body([]byte(`{"choices":[],"usage":{"total_tokens":`))
	if m.usage().seen {
		t.Error("a number not yet complete was taken")
	}
	// Ollama's native answers count prompt and output tokens apart.
	ollama := `{"model":"m","message":{"role":"assistant","content":"hi"},"done":false}` + "\n" +
		`{"model":"m","done":true,"total_duration":5,"prompt_eval_count":26,"eval_count":298}` + "\n"
	// The Responses API names its counts input_tokens and output_tokens.
	responses := "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":9,\"input_tokens_details\":{\"cached_tokens\":0}," +
		"\"output_tokens\":4,\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":13}},\"sequence_number\":7}\n\n"
	for _, tc := range []struct {
		body                      string
		prompt, completion, total int64
	}{{ollama, 26, 298, 324}, {responses, 9, 4, 13}} {
		for _, size := range []int{3, 17, 1000} {
			var m meter
			for b := []byte(tc.body); len(b) > 0; {
				n := min(size, len(b))
				m.body(b[:n])
				b = b[n:]
			}
			if u := m.usage(); !u.seen || u.total != tc.total || u.prompt != tc.prompt || u.completion != tc.completion {
				t.Errorf("pieces of %d: %+v, want %d+%d=%d", size, u, tc.prompt, tc.completion, tc.total)
			}
		}
	}
}

// FuzzMeterUsage: the counts do not depend on how the body was cut into reads, and are never
// negative.
func FuzzMeterUsage(f *testing.F) {
	f.Add([]byte(`{"usage":{"total_tokens":8}}`), 3)
	f.Add([]byte(`"total_tokens" : 123456789012345`), 1)
	f.Add([]byte(`{"done":true,"prompt_eval_count":26,"eval_count":298}`), 5)
	f.Fuzz(func(t *testing.T, data []byte, size int) {
		size = max(1, size%64+1)
		var whole, pieces meter
		whole.body(data)
		for b := data; len(b) > 0; {
			n := min(size, len(b))
			pieces.body(b[:n])
			b = b[n:]
		}
		w, p := whole.usage(), pieces.usage()
		if w.total < 0 || w.prompt < 0 || w.completion < 0 {
			t.Fatalf("negative count %+v", w)
		}
		if w != p {
			t.Fatalf("whole %+v, in pieces of %d %+v", w, size, p)
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

	mresp := g.get(t, "/metrics", testMetricsToken)
	text, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	// The key's tenant, as --api-keys names it.
	tenant := "key-" + shortSum(sha256.Sum256([]byte(testAPIKey)))
	for _, line := range []string{
		`herd_prompt_tokens_total{model="llama3.1:8b",node="a",tenant="` + tenant + `"} 12`,     // 5 + 2 + 5
		`herd_completion_tokens_total{model="llama3.1:8b",node="a",tenant="` + tenant + `"} 11`, // 3 + 4 + 4
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

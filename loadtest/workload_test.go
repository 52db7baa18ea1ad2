package loadtest

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func decodeChat(t *testing.T, b []byte) chatRequest {
	t.Helper()
	var r chatRequest
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return r
}

func TestGeneratorIsAPureFunctionOfSeedAndIndex(t *testing.T) {
	for _, w := range Workloads() {
		o := Options{Workload: w, Seed: 5, Model: "m", Stream: true}.withDefaults()
		g1, g2 := newGenerator(o), newGenerator(o)
		for _, i := range []uint64{0, 17, 3, 17} {
			if !bytes.Equal(g1.body(i), g2.body(i)) {
				t.Fatalf("%s: body %d differs between generators", w, i)
			}
		}
		o.Seed = 6
		if bytes.Equal(g1.body(1), newGenerator(o).body(1)) {
			t.Errorf("%s: seed does not change the body", w)
		}
	}
}

func TestGeneratorSizesAndFields(t *testing.T) {
	tests := []struct {
		w                  Workload
		minWords, maxWords int
		maxTokens          int
	}{
		{WorkloadChatShort, shortPromptMinWords, shortPromptMaxWords + 5, 64},
		{WorkloadMixed, shortPromptMinWords, shortPromptMaxWords + 5, 64},
		{WorkloadChatLong, 1000, 1300, 256},
	}
	for _, tt := range tests {
		g := newGenerator(Options{Workload: tt.w, Model: "m"}.withDefaults())
		for i := range uint64(20) {
			r := decodeChat(t, g.body(i))
			n := len(strings.Fields(r.Messages[0].Content))
			if n < tt.minWords || n > tt.maxWords || r.MaxTokens != tt.maxTokens || r.Model != "m" || r.Stream || r.StreamOptions != nil {
				t.Fatalf("%s #%d: %d words, %+v", tt.w, i, n, r)
			}
		}
	}
	g := newGenerator(Options{Workload: WorkloadChatShort, Model: "m", Stream: true, MaxTokens: 7}.withDefaults())
	r := decodeChat(t, g.body(0))
	if !r.Stream || r.StreamOptions == nil || !r.StreamOptions.IncludeUsage || r.MaxTokens != 7 {
		t.Errorf("stream request %+v", r)
	}
}

func TestSharedPrefixConversationsGrow(t *testing.T) {
	o := Options{Workload: WorkloadSharedPrefix, Model: "m", Conversations: 4, Turns: 3}.withDefaults()
	g := newGenerator(o)
	// Request i is conversation i%4, turn (i/4)%3: requests 1, 5, 9 are turns 1–3 of conversation 1.
	t1, t2, t3 := decodeChat(t, g.body(1)).Messages, decodeChat(t, g.body(5)).Messages, decodeChat(t, g.body(9)).Messages
	if len(t1) != 2 || len(t2) != 4 || len(t3) != 6 {
		t.Fatalf("turn lengths %d %d %d, want 2 4 6", len(t1), len(t2), len(t3))
	}
	if !slices.Equal(t1, t2[:2]) || !slices.Equal(t2, t3[:4]) {
		t.Error("a later turn does not re-send the earlier history unchanged")
	}
	if t3[0].Role != "system" || t3[2].Role != "assistant" || t3[5].Role != "user" {
		t.Errorf("roles %v", t3)
	}
	// Every conversation shares the same system prompt, and it is long.
	other := decodeChat(t, g.body(2)).Messages
	if other[0] != t1[0] || len(strings.Fields(t1[0].Content)) < systemPromptWords {
		t.Error("system prompt not shared or too short")
	}
	if other[1] == t1[1] {
		t.Error("different conversations have the same first question")
	}
	// After Turns turns the conversation starts over with new content.
	restart := decodeChat(t, g.body(13)).Messages
	if len(restart) != 2 || restart[1] == t1[1] {
		t.Errorf("conversation did not restart: %d messages", len(restart))
	}
}

func TestBatchFileLines(t *testing.T) {
	g := newGenerator(Options{Workload: WorkloadMixed, Model: "m"}.withDefaults())
	f := g.batchFile(5)
	lines := strings.Split(strings.TrimSpace(string(f)), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d lines", len(lines))
	}
	seen := map[string]bool{}
	for _, l := range lines {
		var bl batchLine
		if err := json.Unmarshal([]byte(l), &bl); err != nil || bl.Method != "POST" || bl.URL != "/v1/chat/completions" || bl.Body.Model != "m" || seen[bl.CustomID] {
			t.Fatalf("line %s: %v", l, err)
		}
		seen[bl.CustomID] = true
	}
	if !bytes.Equal(f, g.batchFile(5)) {
		t.Error("batch file not reproducible")
	}
}

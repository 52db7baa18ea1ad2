package loadtest

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
)

// Sizes of the generated text, in words. English text runs about 1.3 tokens a word with the
// Llama-3 tokenizer, so chat-long's ~1150 words make ~1.5k prompt tokens.
const (
	shortPromptMinWords = 10
	shortPromptMaxWords = 40
	longPromptWords     = 1150
	systemPromptWords   = 700
	userTurnMinWords    = 20
	userTurnMaxWords    = 60
	assistantTurnWords  = 90
)

// defaultMaxTokens is each workload's max_tokens.
func defaultMaxTokens(w Workload) int {
	switch w {
	case WorkloadChatLong:
		return 256
	case WorkloadSharedPrefix:
		return 128
	case WorkloadMultiTurn:
		return MultiTurnMaxTokens
	case WorkloadMultiModel:
		return MultiModelMaxTokens
	default:
		return 64
	}
}

// words is the vocabulary prompts are drawn from: common words, so that tokenizers see ordinary
// text and count it the way they count real prompts.
var words = strings.Fields(`the of and to in is that for it as was with be by on not he this are
or his from at which but have an they you were her she there been one all we their has would when
what if will can more about said into some could them other time than these its two may then do
first any like my now over such our man me even most made after also did many before must through
back years where much your way well down should because each just those people how too little state
good very make world still own see men work long get here between both life being under never day
same another know while last might us great old year off come since against go came right used take
three states himself few house use during without again place around however home small found
thought went say part once general high upon school every does got united left number course war
until always away something fact though water less public put think almost hand enough far took head
yet government system better set told nothing night end why called did eyes find going look asked
later knew point next program city business give group toward young days let room president side
social given present several order national possible rather second face per among form important
often things looked early white case john become large big need four within felt children along saw
best church ever least power development light seemed family interest want members mind country area
others done turned although open god service certain kind problem began different door thus help
sense means whole matter perhaps itself york times law human line above name example action company
hands local show five history whether gave either act feet across taken past quite anything seen
having death week experience body word half really field am car words already themselves information
tell shall together money period held keep sure probably free seems real behind cannot miss political
air question making office brought whose special heard major problems ago became federal moment study
available known result street economic boy position reason change south board individual job areas
society west close turn love community true court force full`)

type chatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type chatRequest struct {
	Model         string         `json:"model"`
	Messages      []chatMessage  `json:"messages"`
	MaxTokens     int            `json:"max_tokens"`
	Stream        bool           `json:"stream,omitempty"`
	StreamOptions *streamOptions `json:"stream_options,omitempty"`
}

// generator turns a request index into a request body. Every body is a pure function of the
// options (workload, seed, model, stream, max tokens) and the index, so the same workload replays
// identically against any target, in any order of completion.
type generator struct {
	workload  Workload
	seed      uint64
	model     string
	stream    bool
	maxTokens int
	convs     int
	turns     int
	system    string
	prompt    TokenDist
	output    TokenDist
	// drawOutput is true when max_tokens comes from output (synthetic, no MaxTokens override).
	drawOutput bool
	// presets are the multi-turn system prompts; models and zipf the multi-model models and
	// their cumulative popularity.
	presets []string
	models  []string
	zipf    []float64
}

func newGenerator(o Options) *generator {
	g := &generator{
		workload: o.Workload, seed: o.Seed, model: o.Model, stream: o.Stream,
		maxTokens: o.MaxTokens, convs: o.Conversations, turns: o.Turns,
		prompt: o.PromptTokens, output: o.OutputTokens,
	}
	if g.prompt.IsZero() {
		g.prompt = TokenDist{Kind: "fixed", A: 256}
	}
	if g.output.IsZero() {
		g.output = TokenDist{Kind: "fixed", A: 128}
	}
	g.drawOutput = o.Workload == WorkloadSynthetic && g.maxTokens <= 0
	if g.maxTokens <= 0 {
		g.maxTokens = defaultMaxTokens(o.Workload)
	}
	if g.convs <= 0 {
		g.convs = 16
	}
	if g.turns <= 0 {
		g.turns = 8
	}
	switch o.Workload {
	case WorkloadMultiTurn:
		g.presets = g.presetPrompts()
		if o.MaxTokens <= 0 {
			g.maxTokens = MultiTurnMaxTokens
		}
	case WorkloadMultiModel:
		g.models = o.Models
		if len(g.models) == 0 {
			g.models = MultiModelModels()
		}
		g.zipf = zipfCDF(len(g.models), MultiModelZipfS)
	}
	if o.Workload == WorkloadSharedPrefix {
		g.system = "You are the support assistant of a hardware company. Follow these notes. " +
			text(g.rng(0xfeed, 0), systemPromptWords)
	}
	return g
}

// rng returns the generator for one piece of text, named by two numbers.
func (g *generator) rng(a, b uint64) *rand.Rand {
	return rand.New(rand.NewPCG(g.seed^(a*0x9e3779b97f4a7c15), b))
}

// text returns n words drawn from the vocabulary.
func text(r *rand.Rand, n int) string {
	var b strings.Builder
	b.Grow(n * 7)
	for i := range n {
		if i > 0 {
			if r.IntN(12) == 0 {
				b.WriteString(". ")
			} else {
				b.WriteByte(' ')
			}
		}
		b.WriteString(words[r.IntN(len(words))])
	}
	b.WriteByte('.')
	return b.String()
}

// messages returns the conversation of request i.
func (g *generator) messages(i uint64) []chatMessage {
	switch g.workload {
	case WorkloadChatLong:
		r := g.rng(2, i)
		return []chatMessage{{Role: "user", Content: "Summarise the following text in a few paragraphs. " + text(r, longPromptWords-longPromptWords/10+r.IntN(longPromptWords/5))}}
	case WorkloadMultiModel:
		r := g.rng(8, i)
		return []chatMessage{{Role: "user", Content: text(r, MultiModelPromptMinWords+r.IntN(MultiModelPromptMaxWords-MultiModelPromptMinWords+1))}}
	case WorkloadMultiTurn:
		// Open-loop use (not the capacity sessions): request i is a turn of user i mod 64.
		u := int(i % 64)
		round := int(i / 64)
		return g.turnMessages(u, round/MultiTurnTurns, round%MultiTurnTurns)
	case WorkloadSynthetic:
		r := g.rng(5, i)
		n := g.prompt.Sample(r)
		return []chatMessage{{Role: "user", Content: textBytes(r, synthBytesPerToken*n)}}
	case WorkloadSharedPrefix:
		// Request i is turn `turn` of conversation `conv` in its `gen`-th life: the same
		// conversation re-sends the same history, growing by one exchange a turn.
		conv := i % uint64(g.convs)
		round := i / uint64(g.convs)
		turn := int(round % uint64(g.turns))
		gen := round / uint64(g.turns)
		id := gen*uint64(g.convs) + conv
		msgs := make([]chatMessage, 0, 2+2*turn)
		msgs = append(msgs, chatMessage{Role: "system", Content: g.system})
		for t := 0; t <= turn; t++ {
			r := g.rng(3+id, uint64(t))
			msgs = append(msgs, chatMessage{Role: "user", Content: fmt.Sprintf("Question %d: ", t+1) + text(r, userTurnMinWords+r.IntN(userTurnMaxWords-userTurnMinWords+1))})
			if t < turn {
				msgs = append(msgs, chatMessage{Role: "assistant", Content: text(r, assistantTurnWords)})
			}
		}
		return msgs
	default: // chat-short, and the interactive part of mixed
		r := g.rng(1, i)
		return []chatMessage{{Role: "user", Content: text(r, shortPromptMinWords+r.IntN(shortPromptMaxWords-shortPromptMinWords+1))}}
	}
}

// synthBytesPerToken sizes synthetic prompts: herd's simulated nodes count a prompt's tokens as
// its bytes ÷ 4 (real tokenizers make about as many of English text).
const synthBytesPerToken = 4

// textBytes returns words drawn from the vocabulary, about n bytes of them.
func textBytes(r *rand.Rand, n int) string {
	var b strings.Builder
	b.Grow(n + 16)
	for b.Len() < n-1 {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(words[r.IntN(len(words))])
	}
	b.WriteByte('.')
	return b.String()
}

// outputTokens is request i's max_tokens.
func (g *generator) outputTokens(i uint64) int {
	if g.drawOutput {
		return g.output.Sample(g.rng(6, i))
	}
	return g.maxTokens
}

// maxOutputTokens bounds outputTokens over every request.
func (g *generator) maxOutputTokens() int {
	if g.drawOutput {
		return g.output.Max()
	}
	return g.maxTokens
}

// body returns the JSON body of request i.
func (g *generator) body(i uint64) []byte {
	return g.chatBody(g.modelOf(i), g.messages(i), g.outputTokens(i))
}

// modelOf is the model request i asks for: Options.Model, or for multi-model a Zipf draw.
func (g *generator) modelOf(i uint64) string {
	if g.zipf == nil {
		return g.model
	}
	return g.models[zipfPick(g.zipf, g.rng(9, i).Float64())]
}

// chatBody encodes one chat request.
func (g *generator) chatBody(model string, msgs []chatMessage, maxTokens int) []byte {
	req := chatRequest{Model: model, Messages: msgs, MaxTokens: maxTokens}
	if g.stream {
		req.Stream = true
		req.StreamOptions = &streamOptions{IncludeUsage: true}
	}
	b, err := json.Marshal(req)
	if err != nil { // only strings and ints: cannot fail
		panic(fmt.Sprintf("loadtest: encoding a request: %v", err))
	}
	return b
}

// batchLine is one line of an OpenAI batch input file.
type batchLine struct {
	CustomID string      `json:"custom_id"`
	Method   string      `json:"method"`
	URL      string      `json:"url"`
	Body     chatRequest `json:"body"`
}

// batchFile returns the JSONL input of the mixed workload's bulk job: n chat-short requests
// drawn from a stream of indices the interactive traffic does not use.
func (g *generator) batchFile(n int) []byte {
	var b strings.Builder
	for i := range n {
		r := g.rng(0xba7c, uint64(i))
		line := batchLine{
			CustomID: fmt.Sprintf("loadtest-%d", i), Method: "POST", URL: "/v1/chat/completions",
			Body: chatRequest{
				Model:     g.model,
				Messages:  []chatMessage{{Role: "user", Content: text(r, shortPromptMinWords+r.IntN(shortPromptMaxWords-shortPromptMinWords+1))}},
				MaxTokens: defaultMaxTokens(WorkloadChatShort),
			},
		}
		enc, err := json.Marshal(line)
		if err != nil {
			panic(fmt.Sprintf("loadtest: encoding a batch line: %v", err))
		}
		b.Write(enc)
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

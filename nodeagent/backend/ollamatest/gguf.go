package ollamatest

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
)

// Shape of the tiny model. Small enough to load in well under a second on one CPU thread, big
// enough to exercise every part of llama.cpp's llama graph (attention with several heads, a gated
// feed-forward, RMS norms, RoPE).
const (
	tinyLayers  = 2
	tinyEmbd    = 64
	tinyHeads   = 4
	tinyFF      = 128
	tinyContext = 2048
	// TinyEmbeddingDims is the length of the vectors the tiny model's embeddings have.
	TinyEmbeddingDims = tinyEmbd
)

// Token ids fixed by the vocabulary's layout.
const (
	tokUnk = 0
	tokBOS = 1
	tokEOS = 2
)

// Output biases, applied through hidden dimension 0 (see WriteTinyModel). The normalised hidden
// state carries almost exactly sqrt(tinyEmbd) = 8 in that dimension, so logits are about 8x these.
const (
	biasPrintable = 0.0
	// biasHidden keeps specials and byte tokens out of samples: a logit 40 below the rest.
	biasHidden = -5.0
	// biasEOS makes end-of-sequence come about once in 25 tokens with Ollama's default sampling
	// (temperature 0.8, top_k 40), so replies end by themselves as well as by num_predict.
	biasEOS = 0.06
)

// tinyWords are whole words in the vocabulary, with every prefix, so that SentencePiece-style
// merging can reach them from single characters.
var tinyWords = []string{"▁the", "▁herd", "▁model", "▁token", "▁hello", "▁world", "▁llama", "▁GPU", "▁node", "▁fast"}

// GGUF metadata value types (ggml docs/gguf.md).
const (
	ggufUint32  = 4
	ggufInt32   = 5
	ggufFloat32 = 6
	ggufBool    = 7
	ggufString  = 8
	ggufArray   = 9
)

const (
	ggufVersion   = 3
	ggufAlignment = 32
	ggmlTypeF32   = 0
)

// Token types as llama.cpp reads tokenizer.ggml.token_type.
const (
	tokenNormal  = 1
	tokenUnknown = 2
	tokenControl = 3
	tokenByte    = 6
)

type tinyVocab struct {
	tokens []string
	scores []float32
	types  []int32
	bias   []float32
}

// buildTinyVocab lays out the vocabulary; eos is end-of-sequence's output bias.
func buildTinyVocab(eos float32) tinyVocab {
	var v tinyVocab
	seen := map[string]bool{}
	add := func(tok string, score float32, typ int32, bias float32) {
		if seen[tok] {
			return
		}
		seen[tok] = true
		v.tokens = append(v.tokens, tok)
		v.scores = append(v.scores, score)
		v.types = append(v.types, typ)
		v.bias = append(v.bias, bias)
	}
	add("<unk>", 0, tokenUnknown, biasHidden)
	add("<s>", 0, tokenControl, biasHidden)
	add("</s>", 0, tokenControl, eos)
	for b := 0; b < 256; b++ {
		add(fmt.Sprintf("<0x%02X>", b), 0, tokenByte, biasHidden)
	}
	add("▁", -1, tokenNormal, biasPrintable)
	for c := '!'; c <= '~'; c++ {
		add(string(c), -1, tokenNormal, biasPrintable)
	}
	for _, w := range tinyWords {
		r := []rune(w)
		for n := 2; n <= len(r); n++ {
			// Longer pieces score higher, so merging prefers them.
			add(string(r[:n]), float32(n), tokenNormal, biasPrintable)
		}
	}
	return v
}

type tensor struct {
	name string
	dims []uint64 // ggml order: dims[0] varies fastest
	data []float32
}

// WriteTinyModel writes a tiny llama-architecture GGUF model to w: 2 layers, embedding 64, 4 heads,
// feed-forward 128, context 2048, F32 weights (about 130k parameters, about 0.5 MB), with a
// SentencePiece-style vocabulary of specials, the 256 byte tokens, "▁", printable ASCII and a few
// words. The same seed always gives the same bytes, so the same digest.
//
// Weights are random, so the text is gibberish; but hidden dimension 0 is held constant through
// the network (embeddings set it, no layer reads or writes it), which turns column 0 of the output
// matrix into a per-token bias: only printable tokens are sampled and end-of-sequence comes now and
// then. Tests can rely on structure, streaming, token counts and done reasons, never on the text.
func WriteTinyModel(w io.Writer, seed int64) error {
	return writeTinyModel(w, seed, biasEOS, tinyContext)
}

// EndlessContext is the context length WriteEndlessModel's model is made for (and
// EndlessModelfile sets as num_ctx): room for a long answer and, after a continuation, the prompt
// plus that answer again.
const EndlessContext = 8192

// WriteEndlessModel writes the tiny model of WriteTinyModel with one change that makes its
// answers run until num_predict: end-of-sequence gets the output bias of the hidden tokens (a
// logit about 40 below every printable token), so it is never among the top_k candidates Ollama
// samples from (top_k 40 by default, and there are over a hundred printable tokens) and never
// ends an answer. Its context length is EndlessContext. For tests that need a generation still
// running when something happens to it (a node killed mid-stream).
func WriteEndlessModel(w io.Writer, seed int64) error {
	return writeTinyModel(w, seed, biasHidden, EndlessContext)
}

// writeTinyModel writes the tiny model with end-of-sequence's output bias eos and context
// length ctx.
func writeTinyModel(w io.Writer, seed int64, eos float32, ctx uint32) error {
	v := buildTinyVocab(eos)
	nVocab := len(v.tokens)
	rng := rand.New(rand.NewPCG(uint64(seed), 0x6865726421)) //nolint:gosec // test weights, not secrets

	uniform := func(n int, scale float32) []float32 {
		out := make([]float32, n)
		for i := range out {
			out[i] = (rng.Float32()*2 - 1) * scale
		}
		return out
	}
	ones := func(n int) []float32 {
		out := make([]float32, n)
		for i := range out {
			out[i] = 1
		}
		return out
	}
	// matrix makes an in×out weight (ggml dims {in, out}, row-major by output) that neither reads
	// hidden dimension 0 (when the input is the hidden state) nor writes it (when the output is).
	matrix := func(in, out int, readsHidden, writesHidden bool) []float32 {
		m := uniform(in*out, 0.1)
		for o := 0; o < out; o++ {
			for i := 0; i < in; i++ {
				if (readsHidden && i == 0) || (writesHidden && o == 0) {
					m[o*in+i] = 0
				}
			}
		}
		return m
	}

	embd := uniform(tinyEmbd*nVocab, 0.02)
	out := uniform(tinyEmbd*nVocab, 0.1)
	for t := 0; t < nVocab; t++ {
		embd[t*tinyEmbd] = 1
		out[t*tinyEmbd] = v.bias[t]
	}

	tensors := []tensor{
		{"token_embd.weight", []uint64{tinyEmbd, uint64(nVocab)}, embd},
		{"output_norm.weight", []uint64{tinyEmbd}, ones(tinyEmbd)},
		{"output.weight", []uint64{tinyEmbd, uint64(nVocab)}, out},
	}
	for l := 0; l < tinyLayers; l++ {
		p := fmt.Sprintf("blk.%d.", l)
		tensors = append(tensors,
			tensor{p + "attn_norm.weight", []uint64{tinyEmbd}, ones(tinyEmbd)},
			tensor{p + "attn_q.weight", []uint64{tinyEmbd, tinyEmbd}, matrix(tinyEmbd, tinyEmbd, true, false)},
			tensor{p + "attn_k.weight", []uint64{tinyEmbd, tinyEmbd}, matrix(tinyEmbd, tinyEmbd, true, false)},
			tensor{p + "attn_v.weight", []uint64{tinyEmbd, tinyEmbd}, matrix(tinyEmbd, tinyEmbd, true, false)},
			tensor{p + "attn_output.weight", []uint64{tinyEmbd, tinyEmbd}, matrix(tinyEmbd, tinyEmbd, false, true)},
			tensor{p + "ffn_norm.weight", []uint64{tinyEmbd}, ones(tinyEmbd)},
			tensor{p + "ffn_gate.weight", []uint64{tinyEmbd, tinyFF}, matrix(tinyEmbd, tinyFF, true, false)},
			tensor{p + "ffn_up.weight", []uint64{tinyEmbd, tinyFF}, matrix(tinyEmbd, tinyFF, true, false)},
			tensor{p + "ffn_down.weight", []uint64{tinyFF, tinyEmbd}, matrix(tinyFF, tinyEmbd, false, true)},
		)
	}

	gw := &ggufWriter{w: bufio.NewWriter(w)}
	kvs := []func(){
		func() { gw.kvString("general.architecture", "llama") },
		func() { gw.kvString("general.name", "herd-tiny") },
		func() { gw.kvUint32("general.alignment", ggufAlignment) },
		func() { gw.kvUint32("general.file_type", 0) }, // all F32
		func() { gw.kvUint32("llama.context_length", ctx) },
		func() { gw.kvUint32("llama.embedding_length", tinyEmbd) },
		func() { gw.kvUint32("llama.block_count", tinyLayers) },
		func() { gw.kvUint32("llama.feed_forward_length", tinyFF) },
		func() { gw.kvUint32("llama.attention.head_count", tinyHeads) },
		func() { gw.kvUint32("llama.attention.head_count_kv", tinyHeads) },
		func() { gw.kvFloat32("llama.attention.layer_norm_rms_epsilon", 1e-5) },
		func() { gw.kvUint32("llama.rope.dimension_count", tinyEmbd/tinyHeads) },
		func() { gw.kvFloat32("llama.rope.freq_base", 10000) },
		func() { gw.kvUint32("llama.vocab_size", uint32(nVocab)) },
		func() { gw.kvString("tokenizer.ggml.model", "llama") },
		func() { gw.kvStrings("tokenizer.ggml.tokens", v.tokens) },
		func() { gw.kvFloat32s("tokenizer.ggml.scores", v.scores) },
		func() { gw.kvInt32s("tokenizer.ggml.token_type", v.types) },
		func() { gw.kvUint32("tokenizer.ggml.unknown_token_id", tokUnk) },
		func() { gw.kvUint32("tokenizer.ggml.bos_token_id", tokBOS) },
		func() { gw.kvUint32("tokenizer.ggml.eos_token_id", tokEOS) },
		func() { gw.kvBool("tokenizer.ggml.add_bos_token", true) },
		func() { gw.kvBool("tokenizer.ggml.add_eos_token", false) },
	}

	gw.raw([]byte("GGUF"))
	gw.u32(ggufVersion)
	gw.u64(uint64(len(tensors)))
	gw.u64(uint64(len(kvs)))
	for _, kv := range kvs {
		kv()
	}
	var offset uint64
	for _, t := range tensors {
		gw.str(t.name)
		gw.u32(uint32(len(t.dims)))
		for _, d := range t.dims {
			gw.u64(d)
		}
		gw.u32(ggmlTypeF32)
		gw.u64(offset)
		offset += alignUp(uint64(len(t.data)) * 4)
	}
	gw.pad()
	for _, t := range tensors {
		for _, f := range t.data {
			gw.u32(math.Float32bits(f))
		}
		gw.pad()
	}
	if gw.err != nil {
		return fmt.Errorf("write tiny model: %w", gw.err)
	}
	if err := gw.w.Flush(); err != nil {
		return fmt.Errorf("write tiny model: %w", err)
	}
	return nil
}

func alignUp(n uint64) uint64 {
	return (n + ggufAlignment - 1) / ggufAlignment * ggufAlignment
}

// ggufWriter writes GGUF's little-endian primitives, keeping the first error so the layout code
// above reads straight through.
type ggufWriter struct {
	w   *bufio.Writer
	n   uint64
	err error
}

func (g *ggufWriter) raw(b []byte) {
	if g.err != nil {
		return
	}
	n, err := g.w.Write(b)
	g.n += uint64(n)
	g.err = err
}

func (g *ggufWriter) u32(v uint32) { g.raw(binary.LittleEndian.AppendUint32(nil, v)) }
func (g *ggufWriter) u64(v uint64) { g.raw(binary.LittleEndian.AppendUint64(nil, v)) }

func (g *ggufWriter) str(s string) {
	g.u64(uint64(len(s)))
	g.raw([]byte(s))
}

func (g *ggufWriter) pad() {
	if rem := g.n % ggufAlignment; rem != 0 {
		g.raw(make([]byte, ggufAlignment-rem))
	}
}

func (g *ggufWriter) kvString(k, v string) { g.str(k); g.u32(ggufString); g.str(v) }
func (g *ggufWriter) kvUint32(k string, v uint32) {
	g.str(k)
	g.u32(ggufUint32)
	g.u32(v)
}

func (g *ggufWriter) kvFloat32(k string, v float32) {
	g.str(k)
	g.u32(ggufFloat32)
	g.u32(math.Float32bits(v))
}

func (g *ggufWriter) kvBool(k string, v bool) {
	g.str(k)
	g.u32(ggufBool)
	if v {
		g.raw([]byte{1})
	} else {
		g.raw([]byte{0})
	}
}

func (g *ggufWriter) kvStrings(k string, vs []string) {
	g.str(k)
	g.u32(ggufArray)
	g.u32(ggufString)
	g.u64(uint64(len(vs)))
	for _, s := range vs {
		g.str(s)
	}
}

func (g *ggufWriter) kvFloat32s(k string, vs []float32) {
	g.str(k)
	g.u32(ggufArray)
	g.u32(ggufFloat32)
	g.u64(uint64(len(vs)))
	for _, f := range vs {
		g.u32(math.Float32bits(f))
	}
}

func (g *ggufWriter) kvInt32s(k string, vs []int32) {
	g.str(k)
	g.u32(ggufArray)
	g.u32(ggufInt32)
	g.u64(uint64(len(vs)))
	for _, i := range vs {
		g.u32(uint32(i))
	}
}

package sim

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"strings"
)

// vocabulary is what the simulated models say: plain words, one token each.
var vocabulary = strings.Fields(`
the a of and to in is that it for on with as was this by be are at from or an have not which
but they one all their has were will more when there can been would about if into time only
model cluster node token memory speed request answer system network queue batch prompt result
value signal engine layer cache context stream shard replica scheduler simulated latency
throughput capacity gradient vector weight tensor kernel thread socket packet buffer record
river mountain garden window morning letter silver bridge harbor meadow lantern forest ocean
quickly quietly clearly simply nearly often rarely always never perhaps together elsewhere
build carry reach shape follow measure gather offer return settle explain improve observe
bright steady simple careful honest gentle narrow distant modern ancient useful patient
`)

// hashStrings is FNV-64a over its parts, each terminated so ("ab","c") ≠ ("a","bc").
func hashStrings(parts ...string) uint64 {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return h.Sum64()
}

func u64(v uint64) string {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	return string(b[:])
}

// naturalLength is the output length of a prompt when the client sets no max_tokens: 16–256.
func naturalLength(promptHash uint64) int {
	return 16 + int(promptHash%241)
}

// words generates n pseudo-words for a prompt. Token i is returned with its leading space (none on
// the first), so concatenating the tokens gives the text. Sentences end with a period every 6–17
// words and start with a capital.
func words(seed uint64, n int) []string {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	out := make([]string, n)
	left := 6 + r.IntN(12)
	capital := true
	for i := range out {
		w := vocabulary[r.IntN(len(vocabulary))]
		if capital {
			w = strings.ToUpper(w[:1]) + w[1:]
			capital = false
		}
		left--
		if left == 0 || i == n-1 {
			w += "."
			left = 6 + r.IntN(12)
			capital = true
		}
		if i > 0 {
			w = " " + w
		}
		out[i] = w
	}
	return out
}

// embedding is a deterministic unit vector of dim float32s for text under model: Gaussian
// components normalised, so vectors are spread evenly over the sphere.
func embedding(model, text string, dim int) []float32 {
	s := hashStrings("herd-sim-embedding", model, text)
	r := rand.New(rand.NewPCG(s, s^0xda942042e4dd58b5))
	v := make([]float64, dim)
	var norm float64
	for i := range v {
		v[i] = r.NormFloat64()
		norm += v[i] * v[i]
	}
	norm = math.Sqrt(norm)
	out := make([]float32, dim)
	for i := range v {
		out[i] = float32(v[i] / norm)
	}
	return out
}

// truncateUnit keeps the first dim components and renormalises, as OpenAI's dimensions parameter does.
func truncateUnit(v []float32, dim int) []float32 {
	v = v[:dim]
	var norm float64
	for _, x := range v {
		norm += float64(x) * float64(x)
	}
	norm = math.Sqrt(norm)
	out := make([]float32, dim)
	for i, x := range v {
		out[i] = float32(float64(x) / norm)
	}
	return out
}

const idAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// responseID makes an OpenAI-style id ("chatcmpl-" + 29 base62 characters) from the node's seed,
// its id and a per-node sequence number: unique on the node and the same on a replay.
func (n *Node) responseID(prefix string, seq uint64) string {
	// The start time keeps ids unique across restarts of the same node (clients may key on them);
	// under a fake clock they stay reproducible.
	r := rand.New(rand.NewPCG(hashStrings("herd-sim-id", n.id, u64(uint64(n.seed)), u64(uint64(n.startedAt.UnixNano()))), seq))
	var b strings.Builder
	b.WriteString(prefix)
	for range 29 {
		b.WriteByte(idAlphabet[r.IntN(len(idAlphabet))])
	}
	return b.String()
}

// fingerprint is the system_fingerprint of a model on this node: it changes with the node and the
// model, as OpenAI's changes with the backend configuration.
func (n *Node) fingerprint(model string) string {
	return fmt.Sprintf("fp_%010x", hashStrings("herd-sim-fingerprint", n.id, model)&0xffffffffff)
}

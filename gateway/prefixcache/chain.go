// Package prefixcache is the gateway's model of what each node's inference engine holds in its
// prompt (KV) cache, so that the scheduler can send a request where its prompt is already
// evaluated. The gateway hashes every request's conversation into a chain of links (Chainer),
// asks the Index how much of that chain each node holds (Match), and tells it where the request
// went (Start, then End): herd sees every request it sends, so the model can be close to exact
// without asking the engines.
//
// Decisions this package makes:
//
//   - A chain is cut where the engines' caches can differ: every BlockBytes bytes of the
//     conversation and at the end of every message. Each link's hash covers everything before
//     it (XXH64 over the bytes in order), so two requests share a link exactly when they share
//     the whole conversation up to it: a shared system prompt, a preset, and each earlier turn
//     of a growing conversation all match, and a change anywhere breaks every later link.
//   - Tokens are estimated at BytesPerToken bytes of JSON text each, the gateway's estimate
//     elsewhere; a link's Tokens is the estimate for everything up to it.
//   - Each engine is modelled as it caches (see Engine): Ollama keeps about its last prompt per
//     parallel slot, llama.cpp's server its slots plus a host-RAM prompt cache, vLLM a block LRU.
//   - A model that the node no longer reports resident has lost its cache: Match forgets it.
//   - Each gateway keeps its own index (no shared state): it must be consulted for every
//     request, a network round trip there would cost more than most matches save, and a
//     gateway's view is exact for the traffic it sends. With several gateways the affinity
//     fallback (rendezvous hashing on the conversation's opening, which every gateway computes
//     alike) keeps a conversation on one node whichever gateway it reaches.
package prefixcache

import (
	"github.com/cespare/xxhash/v2"
)

// Chain parameters.
const (
	// BlockBytes is the most conversation bytes between two links (about 256 tokens).
	BlockBytes = 1024
	// BytesPerToken is the token estimate's bytes of JSON text per token.
	BytesPerToken = 4
	// MaxLinks bounds a chain: about 256 KiB of conversation; what lies beyond is not matched.
	MaxLinks = 256
)

// Link is one point of a prompt's chain: the hash of the conversation up to it and the tokens
// that covers.
type Link struct {
	Hash   uint64
	Tokens int32
}

// Chainer hashes a conversation into links as its bytes are written. The zero value is ready;
// Reset reuses a buffer so that a pooled Chainer allocates nothing.
type Chainer struct {
	d     xxhash.Digest
	n     int // bytes written
	cut   int // n at the last link
	links []Link
	open  bool // d was reset
}

// Reset empties c and makes buf (its capacity) the links' storage.
func (c *Chainer) Reset(buf []Link) {
	c.d.Reset()
	c.n, c.cut, c.links, c.open = 0, 0, buf[:0], true
}

// Write adds conversation bytes, cutting a link at every BlockBytes boundary.
func (c *Chainer) Write(p []byte) {
	if !c.open {
		c.Reset(c.links)
	}
	for len(p) > 0 {
		room := BlockBytes - c.n%BlockBytes
		chunk := p[:min(room, len(p))]
		_, _ = c.d.Write(chunk) // never fails
		c.n += len(chunk)
		p = p[len(chunk):]
		if c.n%BlockBytes == 0 {
			c.Cut()
		}
	}
}

// Cut ends a link at the current position, unless one ends there already.
func (c *Chainer) Cut() {
	if c.n == c.cut || len(c.links) >= MaxLinks {
		return
	}
	c.links = append(c.links, Link{Hash: c.d.Sum64(), Tokens: int32(min(c.n/BytesPerToken, 1<<31-1))})
	c.cut = c.n
}

// EndMessage cuts a link at a message boundary: a zero byte (which JSON text never holds
// unescaped) and the cut, so that "ab"+"c" and "a"+"bc" do not hash alike.
func (c *Chainer) EndMessage() {
	if c.n == c.cut {
		return
	}
	c.Write(zero[:])
	c.Cut()
}

var zero = [1]byte{0}

// Links returns the links cut so far; they stay valid until the next Reset.
func (c *Chainer) Links() []Link { return c.links }

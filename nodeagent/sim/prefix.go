package sim

import (
	"container/list"
	"encoding/binary"
	"hash/fnv"
)

const (
	// prefixBlockTokens is the granularity of the prefix cache, as in vLLM's and llama.cpp's
	// block-wise KV reuse.
	prefixBlockTokens = 64
	// bytesPerToken is the prompt-size estimate: about four bytes of English text per token.
	bytesPerToken = 4
)

// prefixCacheBlocks bounds a node's prefix cache (least recently used blocks go first) to the KV
// memory its model servers allocate: one context window per slot, slots × context tokens, which
// is what models.EstimateVRAM sizes the KV cache for when a model loads. Cached prefixes live in
// that memory (vLLM keeps them in its KV block pool, llama.cpp in its slots), so a node cannot
// keep more prompt than fits there; an earlier fixed bound of 16384 blocks (a million tokens,
// about 128 GB of KV for an 8B model) let a 16 GB T4 remember every conversation it ever saw.
// The pool is shared by every model on the node here, and the blocks of running requests are
// not subtracted, so the bound errs on the generous side.
func prefixCacheBlocks(slots, contextTokens int) int {
	return max(1, slots*contextTokens/prefixBlockTokens)
}

// prefixKeys hashes the rendered prompt in blocks of prefixBlockTokens tokens, each key chained to
// the ones before it (a block only matches after the same prefix), and salted with the model's
// load generation (a reloaded model starts with an empty KV cache). Only full blocks count.
func prefixKeys(gen uint64, prompt string) []uint64 {
	const blockBytes = prefixBlockTokens * bytesPerToken
	nblocks := len(prompt) / blockBytes
	if nblocks == 0 {
		return nil
	}
	keys := make([]uint64, nblocks)
	var prev [8]byte
	binary.LittleEndian.PutUint64(prev[:], gen)
	for i := range nblocks {
		h := fnv.New64a()
		h.Write(prev[:])
		h.Write([]byte(prompt[i*blockBytes : (i+1)*blockBytes]))
		keys[i] = h.Sum64()
		binary.LittleEndian.PutUint64(prev[:], keys[i])
	}
	return keys
}

// prefixCache remembers which prompt blocks have KV state on the node. Not safe for concurrent use:
// the node's mutex guards it.
type prefixCache struct {
	capacity int
	order    *list.List // front: most recently used; values are uint64 keys
	index    map[uint64]*list.Element
}

func newPrefixCache(capacity int) *prefixCache {
	return &prefixCache{capacity: capacity, order: list.New(), index: map[uint64]*list.Element{}}
}

// match counts the leading keys present, marking them used.
func (c *prefixCache) match(keys []uint64) int {
	for i, k := range keys {
		e, ok := c.index[k]
		if !ok {
			return i
		}
		c.order.MoveToFront(e)
	}
	return len(keys)
}

// add records keys as cached, evicting the least recently used beyond capacity.
func (c *prefixCache) add(keys []uint64) {
	for _, k := range keys {
		if e, ok := c.index[k]; ok {
			c.order.MoveToFront(e)
			continue
		}
		c.index[k] = c.order.PushFront(k)
		for c.order.Len() > c.capacity {
			last := c.order.Back()
			c.order.Remove(last)
			delete(c.index, last.Value.(uint64))
		}
	}
}

package prefixcache

// blockLRU is a vLLM-like pool of cached blocks: each link of a prompt is one entry, sized by
// the tokens it adds to the link before it; past the capacity, the least recently used entries
// go. Entries live in a slice threaded by a doubly linked list (indexes, not pointers), so adding
// a prompt allocates only when the pool grows.
type blockLRU struct {
	at         map[uint64]int32
	e          []lruEntry
	head, tail int32 // most and least recently used; -1 when empty
	free       int32 // a free list through next; -1 when empty
	tokens     int
}

type lruEntry struct {
	hash       uint64
	tokens     int32
	prev, next int32
}

// prefix is the number of leading links of links all in the pool.
func (p *blockLRU) prefix(links []Link) int {
	for i := range links {
		if _, ok := p.at[links[i].Hash]; !ok {
			return i
		}
	}
	return len(links)
}

// add puts links in the pool as the most recently used, the first link most recent of all (a
// prefix is reused more than its tail), and evicts beyond capacity tokens.
func (p *blockLRU) add(links []Link, capacity int) {
	if p.at == nil {
		p.at = map[uint64]int32{}
		p.head, p.tail, p.free = -1, -1, -1
	}
	prev := int32(0)
	for i := len(links) - 1; i >= 0; i-- {
		l := links[i]
		if i > 0 {
			prev = links[i-1].Tokens
		} else {
			prev = 0
		}
		if j, ok := p.at[l.Hash]; ok {
			p.unlink(j)
			p.pushFront(j)
			continue
		}
		j := p.alloc()
		p.e[j] = lruEntry{hash: l.Hash, tokens: max(l.Tokens-prev, 1)}
		p.at[l.Hash] = j
		p.tokens += int(p.e[j].tokens)
		p.pushFront(j)
	}
	for p.tokens > capacity && p.tail >= 0 {
		j := p.tail
		p.unlink(j)
		delete(p.at, p.e[j].hash)
		p.tokens -= int(p.e[j].tokens)
		p.e[j].next = p.free
		p.free = j
	}
}

func (p *blockLRU) alloc() int32 {
	if p.free >= 0 {
		j := p.free
		p.free = p.e[j].next
		return j
	}
	p.e = append(p.e, lruEntry{})
	return int32(len(p.e) - 1)
}

func (p *blockLRU) unlink(j int32) {
	e := &p.e[j]
	if e.prev >= 0 {
		p.e[e.prev].next = e.next
	} else {
		p.head = e.next
	}
	if e.next >= 0 {
		p.e[e.next].prev = e.prev
	} else {
		p.tail = e.prev
	}
	e.prev, e.next = -1, -1
}

func (p *blockLRU) pushFront(j int32) {
	e := &p.e[j]
	e.prev, e.next = -1, p.head
	if p.head >= 0 {
		p.e[p.head].prev = j
	}
	p.head = j
	if p.tail < 0 {
		p.tail = j
	}
}

package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// RedisShared is the Shared node table in Redis.
//
// Layout (every key under the prefix, "herd:" by default):
//
//	nodes             zset  node ID → when it was last seen (ms, Redis server clock)
//	node:<id>         hash  hb (Heartbeat JSON), sh (its StaticHash), tel (the latest delta's
//	                        binary form when the latest write was a delta, which applies onto hb),
//	                        inst (instance ID), addr, seen (ms), stale (ms), by (the writing
//	                        gateway's RedisShared); expires after the node's forget window of silence
//	nodes:seq         string a counter bumped by every write of a heartbeat
//	nodes:changes     zset  node ID → the nodes:seq value of its latest write
//	nodes:draining    set   drained node IDs
//	nodes:epoch       string a random value written when the table is first used: a gateway that
//	                        finds it changed knows Redis lost its data
//
// Times are Redis's own (its TIME, read in the same step as the data), so every gateway judges
// a node's age on one clock. The identity check and the write are one script: two agents racing
// for one ID through two gateways cannot both win.
//
// Load reads only what changed: the nodes whose nodes:changes score passed the seq of this
// RedisShared's previous Load, less the ones this RedisShared wrote itself (its gateway recorded
// those in memory when it accepted them). At 1,000 nodes on two gateways that is the heartbeats
// the other gateway accepted, not the whole table, once per interval: one round trip to learn
// what changed, and one more, pipelined, to read it when anything did. The
// changes set holds one entry per node, so a gateway that fell behind loses nothing: it reads
// each node changed since, once. A full read (every node, every writer) happens on the first
// Load, after a failed one, when the epoch changed or the counter went back (Redis lost its
// data), and every fullReadEvery Loads, which also sweeps expired nodes out of the sets.
// Every gateway sharing the table must write this layout: the writes of an older gateway bump
// no counter, so the others would see them only at their full reads, and an older gateway reads
// no tel, so it would see a delta-heartbeating node's telemetry as of its last full heartbeat.
//
// Delta heartbeats (agentapi.HeartbeatDelta) are stored as they came: PutDelta writes only the
// delta's ~1 KB binary form (tel) beside the full heartbeat (hb) it applies to, when the hash
// holds that static part (sh) for that instance; otherwise it writes nothing and the caller
// writes the merged heartbeat in full with Put, which clears tel. A reader that holds the
// node's static part applies tel onto its own copy and never decodes hb; one that does not
// (a full read, a gateway that never saw the node) decodes hb once and applies tel onto it.
// Either way it gets the heartbeat the agent would have sent whole.
type RedisShared struct {
	c      *redis.Client
	prefix string
	// writer tags this RedisShared's writes (the hash's by field), so that its Loads skip them.
	writer string
	// held, when set (SetHeld), says which base the reader's registry holds for a node:
	// "instance\x00static hash", or "". Load then leaves out the stored JSON of the nodes whose
	// latest write is a delta onto that base.
	held func(id string) string

	mu sync.Mutex // guards the cursor below, which only Load uses
	// epoch and seq are where the previous Load left off; loads counts Loads since the last full
	// read; full forces the next Load to read everything.
	epoch string
	seq   int64
	loads int
	full  bool
}

// fullReadEvery is how many Loads (heartbeat intervals) pass between two full reads: a safety
// net that also removes nodes forgotten by Redis (their hash expired) from the sets, which
// reads of changes alone never visit again.
const fullReadEvery = 300

var _ Shared = (*RedisShared)(nil)

// OpenRedis connects to the Redis server at url ("redis://[:password@]host:port/db") and checks
// that it answers. prefix "" means "herd:".
func OpenRedis(ctx context.Context, url, prefix string) (*RedisShared, error) {
	o, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("registry: redis url: %w", err)
	}
	if prefix == "" {
		prefix = "herd:"
	}
	// Fail fast: a heartbeat or a poll that cannot reach Redis must turn into the outage hold
	// within a fraction of a node's stale window, not after go-redis's retries and backoffs
	// (five dials 100 ms apart, three command retries, 3 s reads).
	o.DialerRetries, o.MaxRetries = 1, 1
	o.DialTimeout = min(o.DialTimeout, time.Second)
	if o.DialTimeout <= 0 {
		o.DialTimeout = time.Second
	}
	o.ReadTimeout, o.WriteTimeout = time.Second, time.Second
	w := make([]byte, 8)
	_, _ = rand.Read(w)
	r := &RedisShared{c: redis.NewClient(o), prefix: prefix, writer: hex.EncodeToString(w), full: true}
	if err := r.c.Ping(ctx).Err(); err != nil {
		_ = r.c.Close()
		return nil, fmt.Errorf("registry: redis: %w", err)
	}
	return r, nil
}

// Close closes the connections.
func (r *RedisShared) Close() error { return r.c.Close() }

func (r *RedisShared) k(parts ...string) string { return r.prefix + strings.Join(parts, ":") }

// putScript: KEYS node hash, nodes zset, nodes:seq, nodes:changes; ARGV id, hb JSON, instance,
// address, stale ms, forget ms, writer, static hash.
// Returns {1} when written, {0, holder instance, holder address, holder age ms, holder stale ms}
// when refused: the holder is another instance, or the same one at another address, and fresh
// (the rule of the in-memory registry, see the package doc). The holder's instance goes no
// further than Put, which keeps only its fingerprint.
var putScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = redis.call('HMGET', KEYS[1], 'inst', 'addr', 'seen', 'stale')
if cur[3] and (cur[1] ~= ARGV[3] or cur[2] ~= ARGV[4]) then
  local age = now - tonumber(cur[3])
  if age <= tonumber(cur[4]) then return {0, cur[1] or '', cur[2] or '', age, tonumber(cur[4])} end
end
redis.call('HSET', KEYS[1], 'hb', ARGV[2], 'sh', ARGV[8], 'inst', ARGV[3], 'addr', ARGV[4], 'seen', now, 'stale', ARGV[5], 'by', ARGV[7])
redis.call('HDEL', KEYS[1], 'tel')
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('ZADD', KEYS[4], redis.call('INCR', KEYS[3]), ARGV[1])
return {1}`)

// putDeltaScript: putScript for a delta: ARGV[2] is the delta's binary form. It checks the
// identity as putScript does, then writes only when the hash holds the delta's static part
// (sh) for the same instance; otherwise it returns {2} and writes nothing.
var putDeltaScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = redis.call('HMGET', KEYS[1], 'inst', 'addr', 'seen', 'stale', 'sh')
if cur[3] and (cur[1] ~= ARGV[3] or cur[2] ~= ARGV[4]) then
  local age = now - tonumber(cur[3])
  if age <= tonumber(cur[4]) then return {0, cur[1] or '', cur[2] or '', age, tonumber(cur[4])} end
end
if cur[1] ~= ARGV[3] or cur[2] ~= ARGV[4] or cur[5] ~= ARGV[8] or ARGV[8] == '' then return {2} end
redis.call('HSET', KEYS[1], 'tel', ARGV[2], 'seen', now, 'stale', ARGV[5], 'by', ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('ZADD', KEYS[4], redis.call('INCR', KEYS[3]), ARGV[1])
return {1}`)

// Put implements Shared.
func (r *RedisShared) Put(ctx context.Context, hb agentapi.Heartbeat, staleAfter, forgetAfter time.Duration) error {
	data, err := json.Marshal(hb)
	if err != nil {
		return fmt.Errorf("registry: encode heartbeat: %w", err)
	}
	return r.put(ctx, putScript, &hb, data, staleAfter, forgetAfter)
}

// PutDelta implements Shared.
func (r *RedisShared) PutDelta(ctx context.Context, hb *agentapi.Heartbeat, d *agentapi.HeartbeatDelta, staleAfter, forgetAfter time.Duration) error {
	data, err := d.AppendBinary(nil)
	if err != nil {
		return fmt.Errorf("registry: encode delta heartbeat: %w", err)
	}
	return r.put(ctx, putDeltaScript, hb, data, staleAfter, forgetAfter)
}

// put runs putScript or putDeltaScript for hb with data as its payload.
func (r *RedisShared) put(ctx context.Context, script *redis.Script, hb *agentapi.Heartbeat, data []byte, staleAfter, forgetAfter time.Duration) error {
	res, err := script.Run(ctx, r.c, []string{r.k("node", hb.NodeID), r.k("nodes"), r.k("nodes", "seq"), r.k("nodes", "changes")},
		hb.NodeID, data, hb.InstanceID, hb.Address, staleAfter.Milliseconds(), max(forgetAfter, staleAfter).Milliseconds(), r.writer,
		hb.StaticHash).Slice()
	if err != nil {
		return fmt.Errorf("registry: redis: %w", err)
	}
	if len(res) == 1 {
		if v, _ := res[0].(int64); v == 2 {
			return ErrSharedNeedsFull
		}
	}
	if len(res) == 5 {
		if ok, _ := res[0].(int64); ok == 0 {
			inst, _ := res[1].(string)
			addr, _ := res[2].(string)
			age, _ := res[3].(int64)
			stale, _ := res[4].(int64)
			return &ConflictError{NodeID: hb.NodeID, HolderFingerprint: agentapi.InstanceFingerprint(inst), HolderAddress: addr,
				HolderAge: time.Duration(age) * time.Millisecond, HolderStaleAfter: time.Duration(stale) * time.Millisecond,
				ClaimantFingerprint: agentapi.InstanceFingerprint(hb.InstanceID), ClaimantAddress: hb.Address}
		}
	}
	return nil
}

// loadScript finds what a Load must read, in one round trip. KEYS nodes, nodes:changes,
// nodes:seq, nodes:epoch, nodes:draining; ARGV the node hash key prefix, the epoch and seq the
// previous Load left off at, "1" for a full read, a fresh epoch (written when there is none),
// this writer. Returns {epoch, seq, full (0/1), drained IDs, IDs to read}: every node for a full
// read, else the nodes changed since whose latest write is not this writer's. The heartbeats
// themselves are read afterwards, pipelined, not by the script: a script blocks Redis while it
// runs, and a thousand 6 KB heartbeats would make it a long one. The node hashes are named from
// ARGV[1], not KEYS, since their IDs are known only once the script runs (the table lives in a
// standalone Redis, not a cluster).
var loadScript = redis.NewScript(`
redis.call('SETNX', KEYS[4], ARGV[5])
local epoch = redis.call('GET', KEYS[4])
local seq = tonumber(redis.call('GET', KEYS[3]) or '0')
local since = tonumber(ARGV[3])
local full = ARGV[4] == '1' or epoch ~= ARGV[2] or seq < since
local ids
if full then
  ids = redis.call('ZRANGE', KEYS[1], 0, -1)
else
  local changed = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. since, '+inf')
  ids = {}
  for _, id in ipairs(changed) do
    if redis.call('HGET', ARGV[1] .. id, 'by') ~= ARGV[6] then ids[#ids + 1] = id end
  end
end
return {epoch, seq, full and 1 or 0, redis.call('SMEMBERS', KEYS[5]), ids}`)

// Load implements Shared: one round trip when no other gateway wrote anything since the
// previous Load, two otherwise (whatever the size of the cluster), returning the nodes other
// gateways wrote since (see the type's doc).
func (r *RedisShared) Load(ctx context.Context) (SharedTable, error) {
	tab := SharedTable{Draining: map[string]bool{}}
	fresh := make([]byte, 8)
	_, _ = rand.Read(fresh)
	r.mu.Lock()
	defer r.mu.Unlock()
	full := r.full || r.loads%fullReadEvery == 0
	res, err := loadScript.Run(ctx, r.c,
		[]string{r.k("nodes"), r.k("nodes", "changes"), r.k("nodes", "seq"), r.k("nodes", "epoch"), r.k("nodes", "draining")},
		r.k("node", ""), r.epoch, r.seq, boolArg(full), hex.EncodeToString(fresh), r.writer).Slice()
	if err == nil && len(res) != 5 {
		err = fmt.Errorf("load returned %d values", len(res))
	}
	if err != nil {
		r.full = true // whatever changed meanwhile, the next Load reads it all
		return tab, fmt.Errorf("registry: redis: %w", err)
	}
	tab.Epoch, _ = res[0].(string)
	seq, _ := res[1].(int64)
	wasFull, _ := res[2].(int64)
	tab.Full = wasFull == 1
	drained, _ := res[3].([]any)
	for _, id := range drained {
		if s, ok := id.(string); ok {
			tab.Draining[s] = true
		}
	}
	list, _ := res[4].([]any)
	ids := make([]string, 0, len(list))
	for _, id := range list {
		if s, ok := id.(string); ok {
			ids = append(ids, s)
		}
	}
	if len(ids) > 0 {
		if err := r.readNodes(ctx, ids, &tab); err != nil {
			r.full = true
			return SharedTable{Draining: map[string]bool{}}, err
		}
	}
	r.epoch, r.seq, r.full = tab.Epoch, seq, false
	if tab.Full {
		r.loads = 0
	}
	r.loads++
	return tab, nil
}

// SetHeld tells Load which base the reader holds for a node (see the held field). Call it before
// the first Load.
func (r *RedisShared) SetHeld(held func(id string) string) { r.held = held }

// readNodes reads the heartbeats of ids into tab, their ages by Redis's clock, and drops the
// nodes whose hash expired (forgotten) from the sets. A node whose latest write is a delta onto
// the base the reader holds is read without its stored JSON (~6 KB at eight GPUs); the JSON of
// the others is read in a second pipelined round trip.
func (r *RedisShared) readNodes(ctx context.Context, ids []string, tab *SharedTable) error {
	var tm *redis.TimeCmd
	cmds := make([]*redis.SliceCmd, len(ids))
	_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		tm = p.Time(ctx)
		for i, id := range ids {
			cmds[i] = p.HMGet(ctx, r.k("node", id), "seen", "tel")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("registry: redis: %w", err)
	}
	now := tm.Val()
	var gone []any
	var need []int // indexes into tab.Nodes of the nodes whose stored JSON must be read
	for i, cmd := range cmds {
		vals := cmd.Val()
		seenStr, _ := vals[0].(string)
		tel, _ := vals[1].(string)
		seen, perr := strconv.ParseInt(seenStr, 10, 64)
		if perr != nil {
			gone = append(gone, ids[i]) // forgotten: its hash expired
			continue
		}
		sn := SharedNode{Heartbeat: agentapi.Heartbeat{NodeID: ids[i]}, Age: max(time.Duration(now.UnixMilli()-seen)*time.Millisecond, 0)}
		if tel != "" {
			d := new(agentapi.HeartbeatDelta)
			if err := d.UnmarshalBinary([]byte(tel)); err != nil || d.NodeID != ids[i] {
				continue // not this layout's: left for the node's next write
			}
			sn.Delta = d
			if r.held != nil && r.held(ids[i]) == d.InstanceID+"\x00"+d.StaticHash {
				tab.Nodes = append(tab.Nodes, sn)
				continue
			}
		}
		need = append(need, len(tab.Nodes))
		tab.Nodes = append(tab.Nodes, sn)
	}
	if len(need) > 0 {
		hbs := make([]*redis.StringCmd, len(need))
		_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for j, i := range need {
				hbs[j] = p.HGet(ctx, r.k("node", tab.Nodes[i].Heartbeat.NodeID), "hb")
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("registry: redis: %w", err)
		}
		keep := tab.Nodes[:0]
		drop := map[int]bool{}
		for j, i := range need {
			sn := &tab.Nodes[i]
			id, data := sn.Heartbeat.NodeID, hbs[j].Val()
			if data == "" {
				drop[i] = true
				gone = append(gone, id) // expired between the two reads
				continue
			}
			if sn.Delta != nil {
				sn.base = data
				continue
			}
			if err := json.Unmarshal([]byte(data), &sn.Heartbeat); err != nil || sn.Heartbeat.NodeID != id {
				drop[i] = true
			}
		}
		for i := range tab.Nodes {
			if !drop[i] {
				keep = append(keep, tab.Nodes[i])
			}
		}
		tab.Nodes = keep
	}
	if len(gone) > 0 {
		// Best effort: the next full read tries again.
		_, _ = r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.ZRem(ctx, r.k("nodes"), gone...)
			p.ZRem(ctx, r.k("nodes", "changes"), gone...)
			return nil
		})
	}
	return nil
}

func boolArg(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// SetDraining implements Shared.
func (r *RedisShared) SetDraining(ctx context.Context, id string, on bool) error {
	var err error
	if on {
		err = r.c.SAdd(ctx, r.k("nodes", "draining"), id).Err()
	} else {
		err = r.c.SRem(ctx, r.k("nodes", "draining"), id).Err()
	}
	if err != nil {
		return fmt.Errorf("registry: redis: %w", err)
	}
	return nil
}

// Restore implements Shared.
func (r *RedisShared) Restore(ctx context.Context, draining []string) error {
	if len(draining) == 0 {
		return nil
	}
	members := make([]any, len(draining))
	for i, id := range draining {
		members[i] = id
	}
	if err := r.c.SAdd(ctx, r.k("nodes", "draining"), members...).Err(); err != nil {
		return fmt.Errorf("registry: redis: %w", err)
	}
	return nil
}

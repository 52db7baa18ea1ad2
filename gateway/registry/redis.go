package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// RedisShared is the Shared node table in Redis.
//
// Layout (every key under the prefix, "herd:" by default):
//
//	nodes             zset  node ID → when it was last seen (ms, Redis server clock)
//	node:<id>         hash  hb (Heartbeat JSON), inst (instance ID), addr, seen (ms), stale (ms);
//	                        expires after the node's forget window of silence
//	nodes:draining    set   drained node IDs
//	nodes:epoch       string a random value written when the table is first used: a gateway that
//	                        finds it changed knows Redis lost its data
//
// Times are Redis's own (TIME inside the scripts), so every gateway judges a node's age on one
// clock. The identity check and the write are one script: two agents racing for one ID through
// two gateways cannot both win.
type RedisShared struct {
	c      *redis.Client
	prefix string
}

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
	r := &RedisShared{c: redis.NewClient(o), prefix: prefix}
	if err := r.c.Ping(ctx).Err(); err != nil {
		_ = r.c.Close()
		return nil, fmt.Errorf("registry: redis: %w", err)
	}
	return r, nil
}

// Close closes the connections.
func (r *RedisShared) Close() error { return r.c.Close() }

func (r *RedisShared) k(parts ...string) string { return r.prefix + strings.Join(parts, ":") }

// putScript: KEYS node hash, nodes zset; ARGV id, hb JSON, instance, address, stale ms, forget ms.
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
redis.call('HSET', KEYS[1], 'hb', ARGV[2], 'inst', ARGV[3], 'addr', ARGV[4], 'seen', now, 'stale', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('ZADD', KEYS[2], now, ARGV[1])
return {1}`)

// Put implements Shared.
func (r *RedisShared) Put(ctx context.Context, hb agentapi.Heartbeat, staleAfter, forgetAfter time.Duration) error {
	data, err := json.Marshal(hb)
	if err != nil {
		return fmt.Errorf("registry: encode heartbeat: %w", err)
	}
	res, err := putScript.Run(ctx, r.c, []string{r.k("node", hb.NodeID), r.k("nodes")},
		hb.NodeID, data, hb.InstanceID, hb.Address, staleAfter.Milliseconds(), max(forgetAfter, staleAfter).Milliseconds()).Slice()
	if err != nil {
		return fmt.Errorf("registry: redis: %w", err)
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

// Load implements Shared: two round trips whatever the size of the cluster.
func (r *RedisShared) Load(ctx context.Context) (SharedTable, error) {
	tab := SharedTable{Draining: map[string]bool{}}
	fresh := make([]byte, 8)
	_, _ = rand.Read(fresh)
	var (
		tm     *redis.TimeCmd
		ids    *redis.StringSliceCmd
		drain  *redis.StringSliceCmd
		epoch  *redis.StringCmd
		newEpo = hex.EncodeToString(fresh)
	)
	_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		tm = p.Time(ctx)
		ids = p.ZRange(ctx, r.k("nodes"), 0, -1)
		drain = p.SMembers(ctx, r.k("nodes", "draining"))
		// The existing epoch, or a fresh one written now.
		p.SetNX(ctx, r.k("nodes", "epoch"), newEpo, 0)
		epoch = p.Get(ctx, r.k("nodes", "epoch"))
		return nil
	})
	if err != nil {
		return tab, fmt.Errorf("registry: redis: %w", err)
	}
	tab.Epoch = epoch.Val()
	for _, id := range drain.Val() {
		tab.Draining[id] = true
	}
	now := tm.Val()
	if len(ids.Val()) == 0 {
		return tab, nil
	}
	cmds := make([]*redis.SliceCmd, len(ids.Val()))
	_, err = r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids.Val() {
			cmds[i] = p.HMGet(ctx, r.k("node", id), "hb", "seen")
		}
		return nil
	})
	if err != nil {
		return tab, fmt.Errorf("registry: redis: %w", err)
	}
	var gone []any
	for i, cmd := range cmds {
		vals := cmd.Val()
		data, _ := vals[0].(string)
		seenStr, _ := vals[1].(string)
		seen, perr := strconv.ParseInt(seenStr, 10, 64)
		if data == "" || perr != nil {
			gone = append(gone, ids.Val()[i]) // forgotten: its hash expired
			continue
		}
		var hb agentapi.Heartbeat
		if err := json.Unmarshal([]byte(data), &hb); err != nil || hb.NodeID != ids.Val()[i] {
			gone = append(gone, ids.Val()[i])
			continue
		}
		age := max(time.Duration(now.UnixMilli()-seen)*time.Millisecond, 0)
		tab.Nodes = append(tab.Nodes, SharedNode{Heartbeat: hb, Age: age})
	}
	if len(gone) > 0 {
		// Best effort: the next Load tries again.
		_ = r.c.ZRem(ctx, r.k("nodes"), gone...).Err()
	}
	return tab, nil
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

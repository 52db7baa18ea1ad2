package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herd-llm/herd/models"
)

// Redis is the Store for several gateways sharing state.
//
// Layout (every key under the prefix, "herd:" by default):
//
//	files            hash  id → File JSON          files:idx    zset of IDs (score 0, by lex)
//	batch:<id>       hash  data (Batch JSON), rev, completed, failed, and the usage sums
//	                       input_tokens, cached_tokens, output_tokens, reasoning_tokens
//	batches:idx      zset of batch IDs
//	batch:<id>:lines hash  line index → LineResult JSON
//	queue            stream of {batch: id}, consumer group "runners"
//	queue:entries    hash  batch ID → its stream entry ID
//	presets          hash  name → Preset JSON
//	keys             hash  key ID → APIKey JSON      keys:names   hash name → key ID
//
// Durability of a write is what the server is configured for (appendonly/appendfsync); run Redis
// with AOF when a crash of Redis itself must not lose progress.
type Redis struct {
	c      *redis.Client
	prefix string
}

var _ Store = (*Redis)(nil)

const redisGroup = "runners"

// RedisOption configures OpenRedis.
type RedisOption func(*Redis)

// WithRedisPrefix puts every key under prefix instead of "herd:", so several herds (or tests) can
// share a server.
func WithRedisPrefix(prefix string) RedisOption { return func(r *Redis) { r.prefix = prefix } }

// OpenRedis connects to the Redis server at url ("redis://[:password@]host:port/db") and makes
// sure the work queue's consumer group exists.
func OpenRedis(ctx context.Context, url string, opts ...RedisOption) (*Redis, error) {
	o, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("store: redis url: %w", err)
	}
	r := &Redis{c: redis.NewClient(o), prefix: "herd:"}
	for _, opt := range opts {
		opt(r)
	}
	if err := r.c.Ping(ctx).Err(); err != nil {
		_ = r.c.Close()
		return nil, fmt.Errorf("store: redis: %w", err)
	}
	if err := r.ensureGroup(ctx); err != nil {
		_ = r.c.Close()
		return nil, err
	}
	return r, nil
}

// ensureGroup creates the work queue's stream and consumer group unless they exist. The group
// starts at the stream's beginning, so entries added while it was missing are delivered.
func (r *Redis) ensureGroup(ctx context.Context) error {
	err := r.c.XGroupCreateMkStream(ctx, r.k("queue"), redisGroup, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("store: redis: create consumer group: %w", err)
	}
	return nil
}

// isNoGroup reports a NOGROUP error: the stream or its consumer group is missing, as after Redis
// restarted without its data.
func isNoGroup(err error) bool {
	return err != nil && strings.Contains(err.Error(), "NOGROUP")
}

// withGroup runs fn and, if it failed because the consumer group is missing, re-creates the group
// and runs fn once more.
func (r *Redis) withGroup(ctx context.Context, fn func() error) error {
	err := fn()
	if !isNoGroup(err) {
		return err
	}
	if err := r.ensureGroup(ctx); err != nil {
		return err
	}
	return fn()
}

// Close closes the connections.
func (r *Redis) Close() error { return r.c.Close() }

func (r *Redis) k(parts ...string) string { return r.prefix + strings.Join(parts, ":") }

// PutFile implements Files.
func (r *Redis) PutFile(ctx context.Context, f File) error {
	if f.ID == "" {
		return errors.New("store: file without ID")
	}
	data, err := json.Marshal(f)
	if err != nil {
		return err
	}
	_, err = r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, r.k("files"), f.ID, data)
		p.ZAdd(ctx, r.k("files", "idx"), redis.Z{Member: f.ID})
		return nil
	})
	return wrapRedis(err)
}

// GetFile implements Files.
func (r *Redis) GetFile(ctx context.Context, id string) (File, error) {
	var f File
	data, err := r.c.HGet(ctx, r.k("files"), id).Bytes()
	if err != nil {
		return f, wrapRedis(err)
	}
	return f, json.Unmarshal(data, &f)
}

// ListFiles implements Files.
func (r *Redis) ListFiles(ctx context.Context, opts ListOptions) ([]File, bool, error) {
	var out []File
	err := r.newestFirst(ctx, r.k("files", "idx"), opts.After, opts.limit()+1, func(ids []string) (int, error) {
		vals, err := r.c.HMGet(ctx, r.k("files"), ids...).Result()
		if err != nil {
			return 0, err
		}
		n := 0
		for _, v := range vals {
			s, ok := v.(string)
			if !ok { // deleted meanwhile
				continue
			}
			var f File
			if err := json.Unmarshal([]byte(s), &f); err != nil {
				return n, err
			}
			if opts.Purpose != "" && f.Purpose != opts.Purpose || !opts.keep(f.Owner) {
				continue
			}
			out = append(out, f)
			n++
		}
		return n, nil
	})
	more := false
	if len(out) > opts.limit() {
		out, more = out[:opts.limit()], true
	}
	return out, more, wrapRedis(err)
}

// newestFirst pages the ID index downwards from just below after, handing IDs to take in chunks
// until take accepted want of them or the index is exhausted. take returns how many it accepted.
func (r *Redis) newestFirst(ctx context.Context, idx, after string, want int, take func(ids []string) (int, error)) error {
	hi := "+"
	if after != "" {
		hi = "(" + after
	}
	for got := 0; got < want; {
		chunk := int64(want - got)
		ids, err := r.c.ZRangeArgs(ctx, redis.ZRangeArgs{Key: idx, Start: hi, Stop: "-", ByLex: true, Rev: true, Count: chunk}).Result()
		if err != nil || len(ids) == 0 {
			return err
		}
		n, err := take(ids)
		if err != nil {
			return err
		}
		got += n
		hi = "(" + ids[len(ids)-1]
	}
	return nil
}

// DeleteFile implements Files.
func (r *Redis) DeleteFile(ctx context.Context, id string) error {
	var del *redis.IntCmd
	_, err := r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		del = p.HDel(ctx, r.k("files"), id)
		p.ZRem(ctx, r.k("files", "idx"), id)
		return nil
	})
	if err != nil {
		return wrapRedis(err)
	}
	if del.Val() == 0 {
		return ErrNotFound
	}
	return nil
}

// The hash fields PutLine increments besides the counts, in the order of usageArgs.
var usageFields = []string{"input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens"}

func usageArgs(u Usage) []any {
	return []any{u.InputTokens, u.CachedTokens, u.OutputTokens, u.ReasoningTokens}
}

var createBatchScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'data', ARGV[2], 'rev', 1, 'completed', ARGV[3], 'failed', ARGV[4],
  'input_tokens', ARGV[5], 'cached_tokens', ARGV[6], 'output_tokens', ARGV[7], 'reasoning_tokens', ARGV[8])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return 1`)

// CreateBatch implements Batches.
func (r *Redis) CreateBatch(ctx context.Context, b Batch) error {
	if b.ID == "" {
		return errors.New("store: batch without ID")
	}
	data, err := json.Marshal(b)
	if err != nil {
		return err
	}
	args := append([]any{b.ID, data, b.RequestCounts.Completed, b.RequestCounts.Failed}, usageArgs(b.Usage)...)
	n, err := createBatchScript.Run(ctx, r.c, []string{r.k("batch", b.ID), r.k("batches", "idx")}, args...).Int()
	if err != nil {
		return wrapRedis(err)
	}
	if n == 0 {
		return ErrExists
	}
	return nil
}

// getBatch returns the batch and its revision.
func (r *Redis) getBatch(ctx context.Context, id string) (Batch, string, error) {
	var b Batch
	vals, err := r.c.HMGet(ctx, r.k("batch", id), append([]string{"data", "rev", "completed", "failed"}, usageFields...)...).Result()
	if err != nil {
		return b, "", wrapRedis(err)
	}
	data, ok := vals[0].(string)
	if !ok {
		return b, "", ErrNotFound
	}
	if err := json.Unmarshal([]byte(data), &b); err != nil {
		return b, "", fmt.Errorf("store: batch %s: %w", id, err)
	}
	rev, _ := vals[1].(string)
	b.RequestCounts.Completed = atoiOrZero(vals[2])
	b.RequestCounts.Failed = atoiOrZero(vals[3])
	// Batches stored before usage was kept lack these fields: zeros, as for a batch with no lines.
	b.Usage = Usage{
		InputTokens: int64(atoiOrZero(vals[4])), CachedTokens: int64(atoiOrZero(vals[5])),
		OutputTokens: int64(atoiOrZero(vals[6])), ReasoningTokens: int64(atoiOrZero(vals[7])),
	}
	return b, rev, nil
}

func atoiOrZero(v any) int {
	s, _ := v.(string)
	n, _ := strconv.Atoi(s)
	return n
}

// GetBatch implements Batches.
func (r *Redis) GetBatch(ctx context.Context, id string) (Batch, error) {
	b, _, err := r.getBatch(ctx, id)
	return b, err
}

// updateBatchScript writes data if the revision is still the one read (compare-and-set), and
// applies count and usage deltas with HINCRBY so PutLine's concurrent increments, which do not
// move the revision, are kept.
var updateBatchScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'rev') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'data', ARGV[2], 'rev', tonumber(ARGV[1]) + 1)
redis.call('HINCRBY', KEYS[1], 'completed', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'failed', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'input_tokens', ARGV[5])
redis.call('HINCRBY', KEYS[1], 'cached_tokens', ARGV[6])
redis.call('HINCRBY', KEYS[1], 'output_tokens', ARGV[7])
redis.call('HINCRBY', KEYS[1], 'reasoning_tokens', ARGV[8])
return 1`)

// updateAttempts bounds compare-and-set retries; only other UpdateBatch calls on the same batch
// (a cancel racing the runner) contend, so a handful suffices.
const updateAttempts = 50

// UpdateBatch implements Batches.
func (r *Redis) UpdateBatch(ctx context.Context, id string, fn func(*Batch) error) (Batch, error) {
	for range updateAttempts {
		b, rev, err := r.getBatch(ctx, id)
		if err != nil {
			return Batch{}, err
		}
		before := b
		if err := fn(&b); err != nil {
			return Batch{}, err
		}
		b.ID = id
		d := deltaOf(before, b)
		data, err := json.Marshal(b)
		if err != nil {
			return Batch{}, err
		}
		args := append([]any{rev, data, d.completed, d.failed}, usageArgs(d.usage)...)
		ok, err := updateBatchScript.Run(ctx, r.c, []string{r.k("batch", id)}, args...).Int()
		if err != nil {
			return Batch{}, wrapRedis(err)
		}
		if ok == 1 {
			b, _, err := r.getBatch(ctx, id)
			return b, err
		}
	}
	return Batch{}, fmt.Errorf("store: batch %s: too much contention on update", id)
}

// ListBatches implements Batches.
func (r *Redis) ListBatches(ctx context.Context, opts ListOptions) ([]Batch, bool, error) {
	var out []Batch
	err := r.newestFirst(ctx, r.k("batches", "idx"), opts.After, opts.limit()+1, func(ids []string) (int, error) {
		n := 0
		for _, id := range ids {
			b, _, err := r.getBatch(ctx, id)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return n, err
			}
			if !opts.keep(b.Owner) {
				continue
			}
			out = append(out, b)
			n++
		}
		return n, nil
	})
	more := false
	if len(out) > opts.limit() {
		out, more = out[:opts.limit()], true
	}
	return out, more, wrapRedis(err)
}

// putLineScript stores the line unless its index is taken and, only then, counts it and adds its
// tokens: one script, so a line's tokens are summed exactly when the line is stored.
var putLineScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[3], 1)
redis.call('HINCRBY', KEYS[1], 'input_tokens', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'cached_tokens', ARGV[5])
redis.call('HINCRBY', KEYS[1], 'output_tokens', ARGV[6])
redis.call('HINCRBY', KEYS[1], 'reasoning_tokens', ARGV[7])
return 1`)

// PutLine implements Batches.
func (r *Redis) PutLine(ctx context.Context, batchID string, lr LineResult) (bool, error) {
	if err := checkLine(lr); err != nil {
		return false, err
	}
	data, err := json.Marshal(lr)
	if err != nil {
		return false, err
	}
	field := "failed"
	if lr.OK {
		field = "completed"
	}
	n, err := putLineScript.Run(ctx, r.c, []string{r.k("batch", batchID), r.k("batch", batchID, "lines")},
		lr.Index, data, field, lr.PromptTokens, lr.CachedTokens, lr.CompletionTokens, lr.ReasoningTokens).Int()
	if err != nil {
		return false, wrapRedis(err)
	}
	if n < 0 {
		return false, ErrNotFound
	}
	return n == 1, nil
}

// Lines implements Batches. A hash has no order, so the lines are gathered and sorted first.
func (r *Redis) Lines(ctx context.Context, batchID string, fn func(LineResult) error) error {
	exists, err := r.c.Exists(ctx, r.k("batch", batchID)).Result()
	if err != nil {
		return wrapRedis(err)
	}
	if exists == 0 {
		return ErrNotFound
	}
	var lines []LineResult
	iter := r.c.HScan(ctx, r.k("batch", batchID, "lines"), 0, "", 1000).Iterator()
	for i := 0; iter.Next(ctx); i++ {
		if i%2 == 0 { // field (the index); the value follows
			continue
		}
		var lr LineResult
		if err := json.Unmarshal([]byte(iter.Val()), &lr); err != nil {
			return fmt.Errorf("store: batch %s line: %w", batchID, err)
		}
		lines = append(lines, lr)
	}
	if err := iter.Err(); err != nil {
		return wrapRedis(err)
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i].Index < lines[j].Index })
	for _, lr := range lines {
		if err := fn(lr); err != nil {
			return err
		}
	}
	return nil
}

var enqueueScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
local id = redis.call('XADD', KEYS[1], '*', 'batch', ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], id)
return 1`)

// Enqueue implements Queue.
func (r *Redis) Enqueue(ctx context.Context, batchID string) error {
	return wrapRedis(enqueueScript.Run(ctx, r.c, []string{r.k("queue"), r.k("queue", "entries")}, batchID).Err())
}

// claimScanLimit bounds the XAUTOCLAIM cursor walk of one Claim.
const claimScanLimit = 100

// Claim implements Queue: first an entry whose holder went quiet (XAUTOCLAIM), then a new one
// (XREADGROUP >).
func (r *Redis) Claim(ctx context.Context, consumer string, minIdle time.Duration) (string, error) {
	if consumer == "" {
		return "", errors.New("store: claim without consumer name")
	}
	var id string
	err := r.withGroup(ctx, func() error {
		var err error
		id, err = r.claim(ctx, consumer, minIdle)
		return err
	})
	return id, err
}

func (r *Redis) claim(ctx context.Context, consumer string, minIdle time.Duration) (string, error) {
	start := "0-0"
	for range claimScanLimit {
		msgs, next, err := r.c.XAutoClaim(ctx, &redis.XAutoClaimArgs{
			Stream: r.k("queue"), Group: redisGroup, Consumer: consumer,
			MinIdle: minIdle, Start: start, Count: 1,
		}).Result()
		if err != nil {
			return "", wrapRedis(err)
		}
		for _, m := range msgs {
			if id, _ := m.Values["batch"].(string); id != "" {
				return id, nil
			}
		}
		if next == "0-0" || next == "" {
			break
		}
		start = next
	}
	streams, err := r.c.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: redisGroup, Consumer: consumer, Streams: []string{r.k("queue"), ">"}, Count: 1, Block: -1,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", wrapRedis(err)
	}
	for _, st := range streams {
		for _, m := range st.Messages {
			if id, _ := m.Values["batch"].(string); id != "" {
				return id, nil
			}
		}
	}
	return "", nil
}

// Held lists the batches claimed under consumer's name (at most 1,000): at a gateway's start these
// are the claims of its previous life, which it may resume at once.
func (r *Redis) Held(ctx context.Context, consumer string) ([]string, error) {
	var ids []string
	err := r.withGroup(ctx, func() error {
		pend, err := r.c.XPendingExt(ctx, &redis.XPendingExtArgs{
			Stream: r.k("queue"), Group: redisGroup, Consumer: consumer, Start: "-", End: "+", Count: 1000,
		}).Result()
		if err != nil {
			return err
		}
		for _, p := range pend {
			msgs, err := r.c.XRangeN(ctx, r.k("queue"), p.ID, p.ID, 1).Result()
			if err != nil {
				return err
			}
			for _, m := range msgs {
				if id, _ := m.Values["batch"].(string); id != "" {
					ids = append(ids, id)
				}
			}
		}
		return nil
	})
	return ids, wrapRedis(err)
}

// renewScript checks ownership and resets the entry's idle time in one step, so a takeover
// cannot slip in between.
var renewScript = redis.NewScript(`
local id = redis.call('HGET', KEYS[2], ARGV[1])
if not id then return -1 end
local p = redis.call('XPENDING', KEYS[1], ARGV[3], id, id, 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[3], ARGV[2], 0, id, 'JUSTID')
return 1`)

// Renew implements Queue.
func (r *Redis) Renew(ctx context.Context, consumer, batchID string) error {
	n, err := renewScript.Run(ctx, r.c, []string{r.k("queue"), r.k("queue", "entries")}, batchID, consumer, redisGroup).Int()
	if err != nil {
		return wrapRedis(err)
	}
	switch n {
	case -1:
		return ErrNotFound
	case 0:
		return ErrNotOwner
	}
	return nil
}

var ackScript = redis.NewScript(`
local id = redis.call('HGET', KEYS[2], ARGV[1])
if not id then return 0 end
redis.call('XACK', KEYS[1], ARGV[2], id)
redis.call('XDEL', KEYS[1], id)
redis.call('HDEL', KEYS[2], ARGV[1])
return 1`)

// Ack implements Queue.
func (r *Redis) Ack(ctx context.Context, batchID string) error {
	return wrapRedis(ackScript.Run(ctx, r.c, []string{r.k("queue"), r.k("queue", "entries")}, batchID, redisGroup).Err())
}

// PutPreset implements Presets.
func (r *Redis) PutPreset(ctx context.Context, p models.Preset) error {
	if p.Name == "" {
		return errors.New("store: preset without name")
	}
	data, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return wrapRedis(r.c.HSet(ctx, r.k("presets"), p.Name, data).Err())
}

// GetPreset implements Presets.
func (r *Redis) GetPreset(ctx context.Context, name string) (models.Preset, error) {
	var p models.Preset
	data, err := r.c.HGet(ctx, r.k("presets"), name).Bytes()
	if err != nil {
		return p, wrapRedis(err)
	}
	return p, json.Unmarshal(data, &p)
}

// DeletePreset implements Presets.
func (r *Redis) DeletePreset(ctx context.Context, name string) error {
	n, err := r.c.HDel(ctx, r.k("presets"), name).Result()
	if err != nil {
		return wrapRedis(err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// ListPresets implements Presets.
func (r *Redis) ListPresets(ctx context.Context) ([]models.Preset, error) {
	all, err := r.c.HGetAll(ctx, r.k("presets")).Result()
	if err != nil {
		return nil, wrapRedis(err)
	}
	out := make([]models.Preset, 0, len(all))
	for name, data := range all {
		var p models.Preset
		if err := json.Unmarshal([]byte(data), &p); err != nil {
			return nil, fmt.Errorf("store: preset %s: %w", name, err)
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// createKeyScript stores a key unless its ID or its name is taken.
var createKeyScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 or redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
return 1`)

// deleteKeyScript removes a key and its name.
var deleteKeyScript = redis.NewScript(`
local data = redis.call('HGET', KEYS[1], ARGV[1])
if not data then return 0 end
local name = cjson.decode(data)['name']
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HGET', KEYS[2], name) == ARGV[1] then redis.call('HDEL', KEYS[2], name) end
return 1`)

// CreateKey implements Keys.
func (r *Redis) CreateKey(ctx context.Context, k APIKey) error {
	if k.ID == "" || k.Name == "" {
		return errors.New("store: key without ID or name")
	}
	data, err := json.Marshal(k)
	if err != nil {
		return err
	}
	n, err := createKeyScript.Run(ctx, r.c, []string{r.k("keys"), r.k("keys", "names")}, k.ID, k.Name, data).Int()
	if err != nil {
		return wrapRedis(err)
	}
	if n == 0 {
		return ErrExists
	}
	return nil
}

// GetKey implements Keys.
func (r *Redis) GetKey(ctx context.Context, id string) (APIKey, error) {
	var k APIKey
	data, err := r.c.HGet(ctx, r.k("keys"), id).Bytes()
	if err != nil {
		return k, wrapRedis(err)
	}
	return k, json.Unmarshal(data, &k)
}

// DeleteKey implements Keys.
func (r *Redis) DeleteKey(ctx context.Context, id string) error {
	n, err := deleteKeyScript.Run(ctx, r.c, []string{r.k("keys"), r.k("keys", "names")}, id).Int()
	if err != nil {
		return wrapRedis(err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// ListKeys implements Keys.
func (r *Redis) ListKeys(ctx context.Context) ([]APIKey, error) {
	all, err := r.c.HGetAll(ctx, r.k("keys")).Result()
	if err != nil {
		return nil, wrapRedis(err)
	}
	out := make([]APIKey, 0, len(all))
	for id, data := range all {
		var k APIKey
		if err := json.Unmarshal([]byte(data), &k); err != nil {
			return nil, fmt.Errorf("store: key %s: %w", id, err)
		}
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// wrapRedis maps redis.Nil to ErrNotFound, a server that cannot be reached to ErrUnavailable,
// and marks other errors as the store's.
func wrapRedis(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrNotFound):
		return err // wrapped already
	case errors.Is(err, redis.Nil):
		return ErrNotFound
	case unreachable(err):
		return fmt.Errorf("%w: redis: %w", ErrUnavailable, err)
	default:
		return fmt.Errorf("store: redis: %w", err)
	}
}

// unreachable reports whether err says the Redis server could not be reached or answered
// nothing: a network error, a connection cut (EOF), the client's pool exhausted, a server still
// loading its data or a replica that lost its primary. A context that ended is not one: the
// caller went away, the server is fine.
func unreachable(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, redis.ErrClosed) || errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	msg := err.Error()
	return strings.HasPrefix(msg, "LOADING") || strings.HasPrefix(msg, "MASTERDOWN") || strings.HasPrefix(msg, "TRYAGAIN")
}

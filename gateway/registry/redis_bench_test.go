package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herd-llm/herd/gateway/store/storetest"
	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// BenchmarkRedisLoad is one gateway's read of a 1,000-node shared table on a real redis-server
// after every node heartbeated once (each op: one Load, the writes between untimed):
//   - full: the whole table, as every Load did before reads of changes;
//   - own: changes, every node accepted by this gateway (none is read back);
//   - others: changes, every node accepted by the other gateway (all are read);
//   - others-deltas: the same, every node's heartbeat a delta heartbeat (agentapi.HeartbeatDelta)
//     after its first: the table holds the deltas as they came, read without decoding the JSON,
//     by a reader that holds none of their bases (it reads the stored JSON of each);
//   - others-deltas-held: the same, by a reader that holds every base (as a gateway that has
//     read the table once does): the stored JSON is not read.
func BenchmarkRedisLoad(b *testing.B) {
	url := storetest.StartRedis(b)
	const nodes = 1000
	hbs := make([][]byte, nodes)
	deltas := make([][]byte, nodes)
	ids := make([]string, nodes)
	hashes := make([]string, nodes)
	for i := range hbs {
		hb := beatOf(fmt.Sprintf("node-%04d", i), fmt.Sprintf("inst-%04d", i), "")
		hb.GPUs = hb.GPUs[:0]
		for g := range 8 {
			hb.GPUs = append(hb.GPUs, agentapi.GPU{Index: g, Name: "Tesla T4", UUID: fmt.Sprintf("GPU-%d-%d", i, g), MemoryTotalBytes: 16 << 30, Healthy: true})
		}
		hb.StaticHash = agentapi.StaticHash(&hb)
		data, err := json.Marshal(hb)
		if err != nil {
			b.Fatal(err)
		}
		d := agentapi.DeltaOf(&hb)
		delta, err := d.AppendBinary(nil)
		if err != nil {
			b.Fatal(err)
		}
		hbs[i], deltas[i], ids[i], hashes[i] = data, delta, hb.NodeID, hb.StaticHash
	}
	for _, tc := range []struct {
		name   string
		full   bool
		own    bool
		deltas bool
		held   bool
	}{{"full", true, false, false, false}, {"own", false, true, false, false}, {"others", false, false, false, false},
		{"others-deltas", false, false, true, false}, {"others-deltas-held", false, false, true, true}} {
		b.Run(tc.name, func(b *testing.B) {
			prefix := tc.name + ":"
			reader, other := openSharedB(b, url, prefix), openSharedB(b, url, prefix)
			writer := other
			if tc.own {
				writer = reader
			}
			putAll(b, writer, putScript, ids, hbs, hashes)
			if _, err := reader.Load(context.Background()); err != nil {
				b.Fatal(err)
			}
			if tc.held {
				bases := make(map[string]string, nodes)
				for i, id := range ids {
					bases[id] = "inst-" + id[len("node-"):] + "\x00" + hashes[i]
				}
				reader.SetHeld(func(id string) string { return bases[id] })
			}
			script, payload := putScript, hbs
			if tc.deltas {
				script, payload = putDeltaScript, deltas
			}
			read := 0
			for b.Loop() {
				b.StopTimer()
				putAll(b, writer, script, ids, payload, hashes)
				reader.mu.Lock()
				reader.full = tc.full
				reader.mu.Unlock()
				b.StartTimer()
				tab, err := reader.Load(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				read = len(tab.Nodes)
			}
			b.ReportMetric(float64(read), "nodes/op")
		})
	}
}

func openSharedB(b *testing.B, url, prefix string) *RedisShared {
	b.Helper()
	rs, err := OpenRedis(context.Background(), url, prefix)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { rs.Close() })
	return rs
}

// putAll writes every node's heartbeat (full or delta, by script) through script, pipelined.
func putAll(b *testing.B, s *RedisShared, script *redis.Script, ids []string, hbs [][]byte, hashes []string) {
	b.Helper()
	ctx := context.Background()
	if err := script.Load(ctx, s.c).Err(); err != nil {
		b.Fatal(err)
	}
	stale, forget := (3 * time.Second).Milliseconds(), time.Minute.Milliseconds()
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			script.EvalSha(ctx, p, []string{s.k("node", id), s.k("nodes"), s.k("nodes", "seq"), s.k("nodes", "changes")},
				id, hbs[i], "inst-"+id[len("node-"):], "http://"+id+".lan:9090", stale, forget, s.writer, hashes[i])
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

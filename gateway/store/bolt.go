package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/herd-llm/herd/models"
)

var (
	bucketFiles   = []byte("files")
	bucketBatches = []byte("batches")
	bucketLines   = []byte("lines") // one sub-bucket per batch, keyed by big-endian line index
	bucketQueue   = []byte("queue")
	bucketPresets = []byte("presets")
	bucketKeys    = []byte("keys") // key ID → APIKey JSON
)

// Bolt is the embedded Store: one bbolt file, for a single gateway.
type Bolt struct {
	db  *bolt.DB
	now func() time.Time
}

var _ Store = (*Bolt)(nil)

// OpenBolt opens (creating it if needed) the bbolt file at path. It fails after a few seconds if
// another process holds the file. Claims left on the work queue by the previous holder are
// released: that process is gone, since it no longer holds the file lock.
func OpenBolt(path string) (*Bolt, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	b := &Bolt{db: db, now: time.Now}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketFiles, bucketBatches, bucketLines, bucketQueue, bucketPresets, bucketKeys} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		q := tx.Bucket(bucketQueue)
		return q.ForEach(func(k, v []byte) error {
			var e boltQueueEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("queue entry %s: %w", k, err)
			}
			if e.Owner == "" {
				return nil
			}
			e.Owner, e.RenewedAt = "", 0
			return putJSON(q, k, e)
		})
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: init %s: %w", path, err)
	}
	return b, nil
}

// Close closes the file and releases its lock.
func (b *Bolt) Close() error { return b.db.Close() }

func putJSON(bk *bolt.Bucket, k []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return bk.Put(k, data)
}

func getJSON(bk *bolt.Bucket, k []byte, v any) error {
	data := bk.Get(k)
	if data == nil {
		return ErrNotFound
	}
	return json.Unmarshal(data, v)
}

// PutFile implements Files.
func (b *Bolt) PutFile(_ context.Context, f File) error {
	if f.ID == "" {
		return errors.New("store: file without ID")
	}
	return b.db.Update(func(tx *bolt.Tx) error { return putJSON(tx.Bucket(bucketFiles), []byte(f.ID), f) })
}

// GetFile implements Files.
func (b *Bolt) GetFile(_ context.Context, id string) (File, error) {
	var f File
	err := b.db.View(func(tx *bolt.Tx) error { return getJSON(tx.Bucket(bucketFiles), []byte(id), &f) })
	return f, err
}

// ListFiles implements Files.
func (b *Bolt) ListFiles(_ context.Context, opts ListOptions) ([]File, bool, error) {
	var out []File
	var more bool
	err := b.db.View(func(tx *bolt.Tx) error {
		return newestFirst(tx.Bucket(bucketFiles), opts.After, opts.limit()+1, func(v []byte) (bool, error) {
			var f File
			if err := json.Unmarshal(v, &f); err != nil {
				return false, err
			}
			if opts.Purpose != "" && f.Purpose != opts.Purpose || !opts.keep(f.Owner) {
				return false, nil
			}
			out = append(out, f)
			return true, nil
		})
	})
	if len(out) > opts.limit() {
		out, more = out[:opts.limit()], true
	}
	return out, more, err
}

// newestFirst walks bk's keys downwards from just below after (from the last key when after is
// ""), handing values to take until it accepted want of them.
func newestFirst(bk *bolt.Bucket, after string, want int, take func(v []byte) (bool, error)) error {
	c := bk.Cursor()
	var k, v []byte
	if after == "" {
		k, v = c.Last()
	} else {
		k, v = c.Seek([]byte(after))
		if k == nil {
			k, v = c.Last()
		}
	}
	for n := 0; k != nil && n < want; k, v = c.Prev() {
		if after != "" && bytes.Compare(k, []byte(after)) >= 0 {
			continue
		}
		ok, err := take(v)
		if err != nil {
			return err
		}
		if ok {
			n++
		}
	}
	return nil
}

// DeleteFile implements Files.
func (b *Bolt) DeleteFile(_ context.Context, id string) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketFiles)
		if bk.Get([]byte(id)) == nil {
			return ErrNotFound
		}
		return bk.Delete([]byte(id))
	})
}

// CreateBatch implements Batches.
func (b *Bolt) CreateBatch(_ context.Context, bt Batch) error {
	if bt.ID == "" {
		return errors.New("store: batch without ID")
	}
	return b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketBatches)
		if bk.Get([]byte(bt.ID)) != nil {
			return ErrExists
		}
		return putJSON(bk, []byte(bt.ID), bt)
	})
}

// GetBatch implements Batches.
func (b *Bolt) GetBatch(_ context.Context, id string) (Batch, error) {
	var bt Batch
	err := b.db.View(func(tx *bolt.Tx) error { return getJSON(tx.Bucket(bucketBatches), []byte(id), &bt) })
	return bt, err
}

// UpdateBatch implements Batches. One bbolt transaction: nothing runs concurrently with fn, so the
// counts and usage fn leaves are the values (the delta rule holds trivially).
func (b *Bolt) UpdateBatch(_ context.Context, id string, fn func(*Batch) error) (Batch, error) {
	var bt Batch
	err := b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketBatches)
		if err := getJSON(bk, []byte(id), &bt); err != nil {
			return err
		}
		if err := fn(&bt); err != nil {
			return err
		}
		bt.ID = id
		return putJSON(bk, []byte(id), bt)
	})
	if err != nil {
		return Batch{}, err
	}
	return bt, nil
}

// ListBatches implements Batches.
func (b *Bolt) ListBatches(_ context.Context, opts ListOptions) ([]Batch, bool, error) {
	var out []Batch
	var more bool
	err := b.db.View(func(tx *bolt.Tx) error {
		return newestFirst(tx.Bucket(bucketBatches), opts.After, opts.limit()+1, func(v []byte) (bool, error) {
			var bt Batch
			if err := json.Unmarshal(v, &bt); err != nil {
				return false, err
			}
			if !opts.keep(bt.Owner) {
				return false, nil
			}
			out = append(out, bt)
			return true, nil
		})
	})
	if len(out) > opts.limit() {
		out, more = out[:opts.limit()], true
	}
	return out, more, err
}

func lineKey(i int) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], uint64(i))
	return k[:]
}

// PutLine implements Batches. It goes through bbolt's Batch so concurrent lines share one fsync;
// Batch may run the function twice, which the first-write-wins check makes harmless.
func (b *Bolt) PutLine(_ context.Context, batchID string, r LineResult) (bool, error) {
	if err := checkLine(r); err != nil {
		return false, err
	}
	var added bool
	err := b.db.Batch(func(tx *bolt.Tx) error {
		added = false
		bk := tx.Bucket(bucketBatches)
		var bt Batch
		if err := getJSON(bk, []byte(batchID), &bt); err != nil {
			return err
		}
		lines, err := tx.Bucket(bucketLines).CreateBucketIfNotExists([]byte(batchID))
		if err != nil {
			return err
		}
		k := lineKey(r.Index)
		if lines.Get(k) != nil {
			return nil
		}
		if err := putJSON(lines, k, r); err != nil {
			return err
		}
		if r.OK {
			bt.RequestCounts.Completed++
		} else {
			bt.RequestCounts.Failed++
		}
		bt.Usage.add(r)
		added = true
		return putJSON(bk, []byte(batchID), bt)
	})
	return added, err
}

// Lines implements Batches.
func (b *Bolt) Lines(_ context.Context, batchID string, fn func(LineResult) error) error {
	return b.db.View(func(tx *bolt.Tx) error {
		lines := tx.Bucket(bucketLines).Bucket([]byte(batchID))
		if lines == nil {
			if tx.Bucket(bucketBatches).Get([]byte(batchID)) == nil {
				return ErrNotFound
			}
			return nil
		}
		return lines.ForEach(func(_, v []byte) error {
			var r LineResult
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			return fn(r)
		})
	})
}

type boltQueueEntry struct {
	Owner string `json:"owner,omitempty"`
	// RenewedAt is Unix nanoseconds of the last claim or renewal.
	RenewedAt int64 `json:"renewed_at,omitempty"`
}

// Enqueue implements Queue.
func (b *Bolt) Enqueue(_ context.Context, batchID string) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		q := tx.Bucket(bucketQueue)
		if q.Get([]byte(batchID)) != nil {
			return nil
		}
		return putJSON(q, []byte(batchID), boltQueueEntry{})
	})
}

// Claim implements Queue: the oldest claimable batch first.
func (b *Bolt) Claim(_ context.Context, consumer string, minIdle time.Duration) (string, error) {
	if consumer == "" {
		return "", errors.New("store: claim without consumer name")
	}
	var id string
	err := b.db.Update(func(tx *bolt.Tx) error {
		now := b.now().UnixNano()
		q := tx.Bucket(bucketQueue)
		c := q.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var e boltQueueEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			if e.Owner != "" && time.Duration(now-e.RenewedAt) < minIdle {
				continue
			}
			id = string(k)
			return putJSON(q, k, boltQueueEntry{Owner: consumer, RenewedAt: now})
		}
		return nil
	})
	return id, err
}

// Renew implements Queue.
func (b *Bolt) Renew(_ context.Context, consumer, batchID string) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		q := tx.Bucket(bucketQueue)
		var e boltQueueEntry
		if err := getJSON(q, []byte(batchID), &e); err != nil {
			return err
		}
		if e.Owner != consumer {
			return ErrNotOwner
		}
		e.RenewedAt = b.now().UnixNano()
		return putJSON(q, []byte(batchID), e)
	})
}

// Ack implements Queue.
func (b *Bolt) Ack(_ context.Context, batchID string) error {
	return b.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketQueue).Delete([]byte(batchID)) })
}

// PutPreset implements Presets.
func (b *Bolt) PutPreset(_ context.Context, p models.Preset) error {
	if p.Name == "" {
		return errors.New("store: preset without name")
	}
	return b.db.Update(func(tx *bolt.Tx) error { return putJSON(tx.Bucket(bucketPresets), []byte(p.Name), p) })
}

// GetPreset implements Presets.
func (b *Bolt) GetPreset(_ context.Context, name string) (models.Preset, error) {
	var p models.Preset
	err := b.db.View(func(tx *bolt.Tx) error { return getJSON(tx.Bucket(bucketPresets), []byte(name), &p) })
	return p, err
}

// DeletePreset implements Presets.
func (b *Bolt) DeletePreset(_ context.Context, name string) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketPresets)
		if bk.Get([]byte(name)) == nil {
			return ErrNotFound
		}
		return bk.Delete([]byte(name))
	})
}

// ListPresets implements Presets.
func (b *Bolt) ListPresets(_ context.Context) ([]models.Preset, error) {
	var out []models.Preset
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPresets).ForEach(func(_, v []byte) error {
			var p models.Preset
			if err := json.Unmarshal(v, &p); err != nil {
				return err
			}
			out = append(out, p)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, err
}

// CreateKey implements Keys. Names are unique: keys are few, so a scan checks it.
func (b *Bolt) CreateKey(_ context.Context, k APIKey) error {
	if k.ID == "" || k.Name == "" {
		return errors.New("store: key without ID or name")
	}
	return b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketKeys)
		if bk.Get([]byte(k.ID)) != nil {
			return ErrExists
		}
		err := bk.ForEach(func(_, v []byte) error {
			var other APIKey
			if err := json.Unmarshal(v, &other); err != nil {
				return err
			}
			if other.Name == k.Name {
				return ErrExists
			}
			return nil
		})
		if err != nil {
			return err
		}
		return putJSON(bk, []byte(k.ID), k)
	})
}

// GetKey implements Keys.
func (b *Bolt) GetKey(_ context.Context, id string) (APIKey, error) {
	var k APIKey
	err := b.db.View(func(tx *bolt.Tx) error { return getJSON(tx.Bucket(bucketKeys), []byte(id), &k) })
	return k, err
}

// DeleteKey implements Keys.
func (b *Bolt) DeleteKey(_ context.Context, id string) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketKeys)
		if bk.Get([]byte(id)) == nil {
			return ErrNotFound
		}
		return bk.Delete([]byte(id))
	})
}

// ListKeys implements Keys.
func (b *Bolt) ListKeys(_ context.Context) ([]APIKey, error) {
	var out []APIKey
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketKeys).ForEach(func(_, v []byte) error {
			var k APIKey
			if err := json.Unmarshal(v, &k); err != nil {
				return err
			}
			out = append(out, k)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, err
}

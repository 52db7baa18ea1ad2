package agentapi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/cespare/xxhash/v2"
)

// Delta heartbeats. Most of a heartbeat does not change from one second to the next: the node's
// identity and backend, each GPU's name, UUID and memory size, each model's name, size and
// digest. Only telemetry does (GPU utilisation, memory used, temperature, power; the models'
// residency, speeds and counts; the node's in-flight and queued requests). At a thousand nodes
// the gateway's heartbeat work was mostly reading and decoding those ~6 KB of JSON per node per
// second, so an agent sends the full heartbeat (JSON, as before) only when its static part
// changed, or when a gateway has not yet got it, and otherwise a HeartbeatDelta: the telemetry
// alone, in a compact binary form, naming the static part it applies to by Heartbeat.StaticHash.
//
// The rules, which keep every heartbeat the gateway holds exactly what the agent would have sent
// in full:
//   - A delta carries the whole dynamic part, never a difference of numbers: applying it onto
//     any copy of its base (the same StaticHash) gives the same heartbeat, so order, loss and
//     several gateways cannot make a node's record wrong.
//   - A gateway applies a delta only onto a record it holds of the same node, the same agent
//     instance and the same StaticHash, with as many GPUs and models; otherwise it answers
//     412 heartbeat_base_unknown (CodeHeartbeatBaseUnknown), and the agent sends that same
//     heartbeat in full at once (a gateway that restarted, another gateway, a node forgotten).
//   - An agent sends deltas only to a gateway whose last reply announced this DeltaVersion
//     (HeartbeatReply.DeltaVersion), and only after that gateway accepted a full heartbeat with the
//     current StaticHash; an older gateway never announces it and keeps getting full heartbeats,
//     and an older agent never sends deltas.

// DeltaVersion is the version of the binary delta heartbeat this package writes and reads.
const DeltaVersion = 1

// ContentTypeHeartbeatDelta is the Content-Type of a HeartbeatDelta POSTed to PathHeartbeat (a
// full heartbeat is application/json).
const ContentTypeHeartbeatDelta = "application/x-herd-heartbeat-delta"

// CodeHeartbeatBaseUnknown is the error code of a delta heartbeat refused (412 Precondition
// Failed) because the gateway holds no full heartbeat it can apply onto: send the full one.
const CodeHeartbeatBaseUnknown = "heartbeat_base_unknown"

// HeartbeatDelta is the dynamic part of a Heartbeat, sent instead of the whole when the gateway
// holds the static part (StaticHash). GPUs and Models are in the order of the base's.
type HeartbeatDelta struct {
	NodeID     string
	InstanceID string
	// StaticHash names the full heartbeat this delta applies to (Heartbeat.StaticHash).
	StaticHash     string
	SentAt         time.Time
	InFlight       int
	Queued         int
	Draining       bool
	TelemetryError string
	BackendError   string
	GPUs           []GPUTelemetry
	Models         []ModelTelemetry
}

// GPUTelemetry is the part of a GPU that changes between samples (see GPU for each field).
type GPUTelemetry struct {
	MemoryUsedBytes        uint64
	UtilizationRatio       float64
	MemoryUtilizationRatio float64
	TemperatureCelsius     float64
	PowerWatts             float64
	SMClockMHz             uint32
	ThrottleReasons        []string
	ECCCorrected           uint64
	ECCUncorrected         uint64
	XIDEvents              uint64
	LastXID                uint64
	Healthy                bool
	HealthReason           string
}

// ModelTelemetry is the part of a Model that changes while the node runs (see Model for each
// field): residency, measured speeds, counts.
type ModelTelemetry struct {
	Resident               bool
	VRAMBytes              uint64
	ContextLength          int
	TokensPerSecond        float64
	PrefillTokensPerSecond float64
	Concurrency            float64
	InFlight               int
	LastUsed               time.Time
	ExpiresAt              time.Time
	PromptTokens           int64
	CachedPromptTokens     int64
}

// StaticHash returns the hash of hb's static part: every field a HeartbeatDelta does not carry
// (identity, address, backend facts, the GPUs' names, UUIDs and sizes, the models' names, sizes
// and descriptions), in hex. hb.StaticHash itself is not part of it.
func StaticHash(hb *Heartbeat) string {
	h := xxhash.New()
	var num [binary.MaxVarintLen64]byte
	str := func(s string) {
		_, _ = h.Write(binary.AppendUvarint(num[:0], uint64(len(s))))
		_, _ = h.WriteString(s)
	}
	u := func(v uint64) { _, _ = h.Write(binary.AppendUvarint(num[:0], v)) }
	i := func(v int64) { _, _ = h.Write(binary.AppendVarint(num[:0], v)) }
	b := func(v bool) {
		if v {
			u(1)
		} else {
			u(0)
		}
	}
	f := func(v float64) { u(math.Float64bits(v)) }
	t := func(v time.Time) {
		i(v.Unix())
		u(uint64(v.Nanosecond()))
	}
	str(hb.NodeID)
	str(hb.InstanceID)
	str(hb.Address)
	str(hb.Backend)
	str(hb.Engine)
	i(int64(hb.MaxLoadedModels))
	b(hb.Simulated)
	str(hb.Version)
	str(hb.Hostname)
	i(int64(hb.Slots))
	i(hb.IntervalMS)
	t(hb.StartedAt)
	b(hb.H2C)
	u(uint64(len(hb.GPUs)))
	for j := range hb.GPUs {
		g := &hb.GPUs[j]
		i(int64(g.Index))
		str(g.Name)
		str(g.UUID)
		u(g.MemoryTotalBytes)
		f(g.PowerLimitWatts)
		b(g.Simulated)
	}
	u(uint64(len(hb.Models)))
	for j := range hb.Models {
		m := &hb.Models[j]
		str(m.Name)
		b(m.OnDisk)
		u(m.SizeBytes)
		str(m.Digest)
		str(m.Family)
		str(m.ParameterSize)
		str(m.Quantization)
		b(m.Embedding)
		str(m.Format)
		u(uint64(len(m.Families)))
		for _, fam := range m.Families {
			str(fam)
		}
		t(m.ModifiedAt)
	}
	return strconv.FormatUint(h.Sum64(), 16)
}

// DeltaOf returns the dynamic part of hb, naming hb.StaticHash as its base. Its slices are new;
// the throttle reasons are shared with hb.
func DeltaOf(hb *Heartbeat) HeartbeatDelta {
	d := HeartbeatDelta{
		NodeID: hb.NodeID, InstanceID: hb.InstanceID, StaticHash: hb.StaticHash, SentAt: hb.SentAt,
		InFlight: hb.InFlight, Queued: hb.Queued, Draining: hb.Draining,
		TelemetryError: hb.TelemetryError, BackendError: hb.BackendError,
		GPUs:   make([]GPUTelemetry, len(hb.GPUs)),
		Models: make([]ModelTelemetry, len(hb.Models)),
	}
	for j := range hb.GPUs {
		g := &hb.GPUs[j]
		d.GPUs[j] = GPUTelemetry{
			MemoryUsedBytes: g.MemoryUsedBytes, UtilizationRatio: g.UtilizationRatio,
			MemoryUtilizationRatio: g.MemoryUtilizationRatio, TemperatureCelsius: g.TemperatureCelsius,
			PowerWatts: g.PowerWatts, SMClockMHz: g.SMClockMHz, ThrottleReasons: g.ThrottleReasons,
			ECCCorrected: g.ECCCorrected, ECCUncorrected: g.ECCUncorrected, XIDEvents: g.XIDEvents,
			LastXID: g.LastXID, Healthy: g.Healthy, HealthReason: g.HealthReason,
		}
	}
	for j := range hb.Models {
		m := &hb.Models[j]
		d.Models[j] = ModelTelemetry{
			Resident: m.Resident, VRAMBytes: m.VRAMBytes, ContextLength: m.ContextLength,
			TokensPerSecond: m.TokensPerSecond, PrefillTokensPerSecond: m.PrefillTokensPerSecond,
			Concurrency: m.Concurrency, InFlight: m.InFlight, LastUsed: m.LastUsed, ExpiresAt: m.ExpiresAt,
			PromptTokens: m.PromptTokens, CachedPromptTokens: m.CachedPromptTokens,
		}
	}
	return d
}

// ErrDeltaMismatch is returned by ApplyTo when the delta does not belong to the base: another
// node, instance or static part, or other numbers of GPUs or models.
var ErrDeltaMismatch = errors.New("agentapi: delta heartbeat does not match its base")

// ApplyTo sets *hb to base with d's dynamic part: the heartbeat the agent would have sent in
// full. base is not modified. hb's GPU and model slices are reused when large enough (pass a
// scratch heartbeat to apply without allocating); its other slices become base's, which the
// caller must treat as read-only, and its throttle reasons d's.
func (d *HeartbeatDelta) ApplyTo(base, hb *Heartbeat) error {
	if base.NodeID != d.NodeID || base.InstanceID != d.InstanceID || base.StaticHash == "" ||
		base.StaticHash != d.StaticHash || len(base.GPUs) != len(d.GPUs) || len(base.Models) != len(d.Models) {
		return ErrDeltaMismatch
	}
	gpus, models := append(hb.GPUs[:0], base.GPUs...), append(hb.Models[:0], base.Models...)
	*hb = *base
	hb.GPUs, hb.Models = gpus, models
	hb.SentAt, hb.InFlight, hb.Queued, hb.Draining = d.SentAt, d.InFlight, d.Queued, d.Draining
	hb.TelemetryError, hb.BackendError = d.TelemetryError, d.BackendError
	for j := range hb.GPUs {
		g, t := &hb.GPUs[j], &d.GPUs[j]
		g.MemoryUsedBytes, g.UtilizationRatio, g.MemoryUtilizationRatio = t.MemoryUsedBytes, t.UtilizationRatio, t.MemoryUtilizationRatio
		g.TemperatureCelsius, g.PowerWatts, g.SMClockMHz, g.ThrottleReasons = t.TemperatureCelsius, t.PowerWatts, t.SMClockMHz, t.ThrottleReasons
		g.ECCCorrected, g.ECCUncorrected, g.XIDEvents, g.LastXID = t.ECCCorrected, t.ECCUncorrected, t.XIDEvents, t.LastXID
		g.Healthy, g.HealthReason = t.Healthy, t.HealthReason
	}
	for j := range hb.Models {
		m, t := &hb.Models[j], &d.Models[j]
		m.Resident, m.VRAMBytes, m.ContextLength = t.Resident, t.VRAMBytes, t.ContextLength
		m.TokensPerSecond, m.PrefillTokensPerSecond, m.Concurrency = t.TokensPerSecond, t.PrefillTokensPerSecond, t.Concurrency
		m.InFlight, m.LastUsed, m.ExpiresAt = t.InFlight, t.LastUsed, t.ExpiresAt
		m.PromptTokens, m.CachedPromptTokens = t.PromptTokens, t.CachedPromptTokens
	}
	return nil
}

// The binary form (DeltaVersion 1). Integers are varints (encoding/binary; counts and sizes
// unsigned), floats are IEEE 754 bits in 8 bytes little-endian, strings a uvarint length and the
// bytes, times seconds (varint) and nanoseconds (uvarint) since the Unix epoch, flags a byte:
//
//	version=1, node_id, instance_id, static_hash, sent_at, in_flight, queued, flags (1 draining),
//	telemetry_error, backend_error,
//	n GPUs × {memory_used, utilization, memory_utilization, temperature, power, sm_clock,
//	          n reasons × reason, ecc_corrected, ecc_uncorrected, xid_events, last_xid,
//	          flags (1 healthy), health_reason},
//	n models × {flags (1 resident), vram, context_length, tokens_per_second, prefill_tokens_per_second,
//	            concurrency, in_flight, last_used, expires_at, prompt_tokens, cached_prompt_tokens}
//
// and nothing after.

// AppendBinary appends d's binary form to b (encoding.BinaryAppender).
func (d *HeartbeatDelta) AppendBinary(b []byte) ([]byte, error) {
	if d.InFlight < 0 || d.Queued < 0 {
		return b, errors.New("agentapi: delta heartbeat: negative in_flight or queued")
	}
	b = append(b, DeltaVersion)
	b = appendString(b, d.NodeID)
	b = appendString(b, d.InstanceID)
	b = appendString(b, d.StaticHash)
	b = appendTime(b, d.SentAt)
	b = binary.AppendUvarint(b, uint64(d.InFlight))
	b = binary.AppendUvarint(b, uint64(d.Queued))
	b = append(b, flag(d.Draining))
	b = appendString(b, d.TelemetryError)
	b = appendString(b, d.BackendError)
	b = binary.AppendUvarint(b, uint64(len(d.GPUs)))
	for j := range d.GPUs {
		g := &d.GPUs[j]
		b = binary.AppendUvarint(b, g.MemoryUsedBytes)
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(g.UtilizationRatio))
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(g.MemoryUtilizationRatio))
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(g.TemperatureCelsius))
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(g.PowerWatts))
		b = binary.AppendUvarint(b, uint64(g.SMClockMHz))
		b = binary.AppendUvarint(b, uint64(len(g.ThrottleReasons)))
		for _, r := range g.ThrottleReasons {
			b = appendString(b, r)
		}
		b = binary.AppendUvarint(b, g.ECCCorrected)
		b = binary.AppendUvarint(b, g.ECCUncorrected)
		b = binary.AppendUvarint(b, g.XIDEvents)
		b = binary.AppendUvarint(b, g.LastXID)
		b = append(b, flag(g.Healthy))
		b = appendString(b, g.HealthReason)
	}
	b = binary.AppendUvarint(b, uint64(len(d.Models)))
	for j := range d.Models {
		m := &d.Models[j]
		if m.ContextLength < 0 || m.InFlight < 0 || m.PromptTokens < 0 || m.CachedPromptTokens < 0 {
			return b, errors.New("agentapi: delta heartbeat: a model has a negative count")
		}
		b = append(b, flag(m.Resident))
		b = binary.AppendUvarint(b, m.VRAMBytes)
		b = binary.AppendUvarint(b, uint64(m.ContextLength))
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(m.TokensPerSecond))
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(m.PrefillTokensPerSecond))
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(m.Concurrency))
		b = binary.AppendUvarint(b, uint64(m.InFlight))
		b = appendTime(b, m.LastUsed)
		b = appendTime(b, m.ExpiresAt)
		b = binary.AppendUvarint(b, uint64(m.PromptTokens))
		b = binary.AppendUvarint(b, uint64(m.CachedPromptTokens))
	}
	return b, nil
}

func flag(v bool) byte {
	if v {
		return 1
	}
	return 0
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// zeroUnix is the Unix time of the zero time.Time, which the binary form carries as is.
var zeroUnix = time.Time{}.Unix()

// Times in a delta lie in the years 0 to 9999, as in a JSON heartbeat (RFC 3339).
var (
	minDeltaUnix = time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	maxDeltaUnix = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
)

func appendTime(b []byte, t time.Time) []byte {
	b = binary.AppendVarint(b, t.Unix())
	return binary.AppendUvarint(b, uint64(t.Nanosecond()))
}

// Bounds the decoder holds a delta to, besides the body's size: what a node can have, with room.
const (
	maxDeltaGPUs    = 1024
	maxDeltaModels  = 1 << 16
	maxDeltaReasons = 64
	// maxDeltaCount bounds in-flight, queued and context-length counts (they become ints).
	maxDeltaCount = 1 << 31
)

// UnmarshalBinary reads d from its binary form (encoding.BinaryUnmarshaler), reusing d's GPU and
// model slices. Input from outside: every length and count is checked against what is left,
// floats must be finite and times in range; trailing bytes are an error.
func (d *HeartbeatDelta) UnmarshalBinary(data []byte) error {
	r := deltaReader{b: data}
	if v := r.byte(); r.err == nil && v != DeltaVersion {
		return fmt.Errorf("agentapi: delta heartbeat version %d, this gateway reads %d", v, DeltaVersion)
	}
	d.NodeID = r.string()
	d.InstanceID = r.string()
	d.StaticHash = r.string()
	d.SentAt = r.time()
	d.InFlight = r.count()
	d.Queued = r.count()
	d.Draining = r.flag()
	d.TelemetryError = r.string()
	d.BackendError = r.string()
	n := r.length(maxDeltaGPUs, 8*4+9)
	d.GPUs = resize(d.GPUs, n)
	for j := range d.GPUs {
		g := &d.GPUs[j]
		g.MemoryUsedBytes = r.uvarint()
		g.UtilizationRatio = r.float()
		g.MemoryUtilizationRatio = r.float()
		g.TemperatureCelsius = r.float()
		g.PowerWatts = r.float()
		clk := r.uvarint()
		if clk > math.MaxUint32 {
			r.fail("sm_clock_mhz out of range")
		}
		g.SMClockMHz = uint32(clk)
		nr := r.length(maxDeltaReasons, 1)
		g.ThrottleReasons = resize(g.ThrottleReasons, nr)
		if g.ThrottleReasons == nil {
			g.ThrottleReasons = []string{} // as the JSON heartbeat has it: an empty list, not null
		}
		for k := range g.ThrottleReasons {
			g.ThrottleReasons[k] = r.reason()
		}
		g.ECCCorrected = r.uvarint()
		g.ECCUncorrected = r.uvarint()
		g.XIDEvents = r.uvarint()
		g.LastXID = r.uvarint()
		g.Healthy = r.flag()
		g.HealthReason = r.string()
	}
	n = r.length(maxDeltaModels, 8*3+9)
	d.Models = resize(d.Models, n)
	for j := range d.Models {
		m := &d.Models[j]
		m.Resident = r.flag()
		m.VRAMBytes = r.uvarint()
		m.ContextLength = r.count()
		m.TokensPerSecond = r.float()
		m.PrefillTokensPerSecond = r.float()
		m.Concurrency = r.float()
		m.InFlight = r.count()
		m.LastUsed = r.time()
		m.ExpiresAt = r.time()
		m.PromptTokens = r.int63()
		m.CachedPromptTokens = r.int63()
	}
	if r.err == nil && len(r.b) > 0 {
		r.fail(fmt.Sprintf("%d bytes after the end", len(r.b)))
	}
	return r.err
}

// resize returns s with length n, reusing its array when it is large enough (its elements are
// all overwritten by the caller).
func resize[T any](s []T, n int) []T {
	if cap(s) >= n {
		return s[:n]
	}
	return make([]T, n)
}

// deltaReader reads the binary form; the first error sticks and every later read returns zero.
type deltaReader struct {
	b   []byte
	err error
}

func (r *deltaReader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("agentapi: delta heartbeat: %s", what)
	}
	r.b = nil
}

func (r *deltaReader) byte() byte {
	if len(r.b) < 1 {
		r.fail("truncated")
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *deltaReader) flag() bool {
	switch r.byte() {
	case 0:
		return false
	case 1:
		return true
	}
	r.fail("a flag is neither 0 nor 1")
	return false
}

func (r *deltaReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad or truncated integer")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *deltaReader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("bad or truncated integer")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// count reads a non-negative count that fits an int on every platform.
func (r *deltaReader) count() int {
	v := r.uvarint()
	if v >= maxDeltaCount {
		r.fail("a count is out of range")
		return 0
	}
	return int(v)
}

func (r *deltaReader) int63() int64 {
	v := r.uvarint()
	if v > math.MaxInt64 {
		r.fail("a count is out of range")
		return 0
	}
	return int64(v)
}

// length reads the number of elements of a list whose elements take at least minSize bytes each,
// at most limit.
func (r *deltaReader) length(limit, minSize int) int {
	v := r.uvarint()
	if r.err != nil {
		return 0
	}
	if v > uint64(limit) || v*uint64(minSize) > uint64(len(r.b)) {
		r.fail("a list is longer than the body or the limit")
		return 0
	}
	return int(v)
}

func (r *deltaReader) float() float64 {
	if len(r.b) < 8 {
		r.fail("truncated")
		return 0
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(r.b))
	r.b = r.b[8:]
	if math.IsNaN(v) || math.IsInf(v, 0) {
		r.fail("a number is not finite")
		return 0
	}
	return v
}

func (r *deltaReader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.fail("a string is longer than the body")
		return nil
	}
	s := r.b[:n]
	r.b = r.b[n:]
	return s
}

func (r *deltaReader) string() string {
	b := r.bytes()
	if len(b) == 0 {
		return ""
	}
	return string(b)
}

// reason reads a throttle reason, without allocating for the names this package knows.
func (r *deltaReader) reason() string {
	b := r.bytes()
	switch string(b) {
	case ThrottleGPUIdle:
		return ThrottleGPUIdle
	case ThrottleApplicationClock:
		return ThrottleApplicationClock
	case ThrottleSWPowerCap:
		return ThrottleSWPowerCap
	case ThrottleHWSlowdown:
		return ThrottleHWSlowdown
	case ThrottleSyncBoost:
		return ThrottleSyncBoost
	case ThrottleSWThermal:
		return ThrottleSWThermal
	case ThrottleHWThermal:
		return ThrottleHWThermal
	case ThrottleHWPowerBrake:
		return ThrottleHWPowerBrake
	case ThrottleDisplayClock:
		return ThrottleDisplayClock
	case ThrottleBoardLimit:
		return ThrottleBoardLimit
	case ThrottleReliability:
		return ThrottleReliability
	}
	return string(b)
}

// time reads a time; the zero time.Time comes back as the zero value, others in UTC.
func (r *deltaReader) time() time.Time {
	sec := r.varint()
	nsec := r.uvarint()
	if r.err != nil {
		return time.Time{}
	}
	if nsec >= 1e9 || sec < minDeltaUnix || sec >= maxDeltaUnix {
		r.fail("a time is out of range")
		return time.Time{}
	}
	if sec == zeroUnix && nsec == 0 {
		return time.Time{}
	}
	return time.Unix(sec, int64(nsec)).UTC()
}

package agentapi

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

// richBeat is a heartbeat with every field set to something other than its zero value.
func richBeat() Heartbeat {
	at := time.Date(2026, 12, 8, 1, 2, 3, 456789, time.UTC)
	hb := Heartbeat{
		NodeID: "n1", InstanceID: "inst-1", Address: "http://10.0.0.5:9090", Backend: BackendOllama, Engine: "ollama",
		MaxLoadedModels: 3, Simulated: true, Version: "v1", Hostname: "host1",
		TelemetryError: "tel", BackendError: "be", Draining: true, InFlight: 2, Queued: 1, Slots: 4,
		IntervalMS: 1000, SentAt: at, StartedAt: at.Add(-time.Hour), H2C: true,
	}
	for i := range 2 {
		hb.GPUs = append(hb.GPUs, GPU{Index: i, Name: "Tesla T4", UUID: "GPU-" + string(rune('a'+i)), MemoryTotalBytes: 16 << 30,
			MemoryUsedBytes: 3 << 30, UtilizationRatio: 0.5, MemoryUtilizationRatio: 0.25, TemperatureCelsius: 61.5,
			PowerWatts: 55.25, PowerLimitWatts: 70, SMClockMHz: 1590, ThrottleReasons: []string{ThrottleSWPowerCap, "vendor_new"},
			ECCCorrected: 3, ECCUncorrected: 1, XIDEvents: 2, LastXID: 79, Healthy: true, HealthReason: "ok", Simulated: true})
	}
	for i := range 3 {
		hb.Models = append(hb.Models, Model{Name: "m" + string(rune('0'+i)), Resident: true, OnDisk: true, VRAMBytes: 5 << 30,
			SizeBytes: 4 << 30, Digest: "sha256:abc", Family: "llama", ParameterSize: "8.0B", Quantization: "Q4_K_M",
			Embedding: true, Format: "gguf", Families: []string{"llama"}, ModifiedAt: at.Add(-48 * time.Hour), ContextLength: 8192,
			TokensPerSecond: 42.5, PrefillTokensPerSecond: 900, InFlight: 1, LastUsed: at.Add(-time.Minute),
			ExpiresAt: at.Add(5 * time.Minute), Concurrency: 1.5, PromptTokens: 1000, CachedPromptTokens: 400})
	}
	hb.StaticHash = StaticHash(&hb)
	return hb
}

// roundTrip sends hb's dynamic part through the binary form and applies it onto base.
func roundTrip(t *testing.T, hb, base *Heartbeat) Heartbeat {
	t.Helper()
	d := DeltaOf(hb)
	b, err := d.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	var got HeartbeatDelta
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatalf("UnmarshalBinary: %v", err)
	}
	var out Heartbeat
	if err := got.ApplyTo(base, &out); err != nil {
		t.Fatalf("ApplyTo: %v", err)
	}
	return out
}

func TestDeltaRoundTrip(t *testing.T) {
	hb := richBeat()
	base := richBeat()
	// The base is the same node a second earlier: telemetry differs everywhere.
	base.SentAt, base.InFlight, base.Queued, base.Draining = base.SentAt.Add(-time.Second), 0, 0, false
	base.TelemetryError, base.BackendError = "", ""
	for i := range base.GPUs {
		base.GPUs[i].UtilizationRatio, base.GPUs[i].ThrottleReasons, base.GPUs[i].Healthy = 0, nil, false
	}
	for i := range base.Models {
		base.Models[i].Resident, base.Models[i].LastUsed, base.Models[i].TokensPerSecond = false, time.Time{}, 0
	}
	if StaticHash(&base) != hb.StaticHash {
		t.Fatal("telemetry changed the static hash")
	}
	got := roundTrip(t, &hb, &base)
	if !reflect.DeepEqual(got, hb) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, hb)
	}
	// Zero times stay zero, empty reason lists stay lists.
	hb.Models[0].LastUsed, hb.Models[0].ExpiresAt, hb.GPUs[0].ThrottleReasons = time.Time{}, time.Time{}, []string{}
	got = roundTrip(t, &hb, &base)
	if !got.Models[0].LastUsed.IsZero() || !got.Models[0].ExpiresAt.IsZero() || got.GPUs[0].ThrottleReasons == nil {
		t.Fatalf("zero values: %+v %+v", got.Models[0], got.GPUs[0])
	}
}

// TestEveryFieldIsStaticOrTelemetry holds the split to every field of Heartbeat, GPU and Model:
// each is either in the static hash (a change makes the agent send the full heartbeat) or
// carried by the delta. A field added to the wire types without one of the two fails here.
func TestEveryFieldIsStaticOrTelemetry(t *testing.T) {
	base := richBeat()
	check := func(name string, mutate func(hb *Heartbeat, v reflect.Value) bool, typ reflect.Type) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			if f.Name == "StaticHash" {
				continue
			}
			hb := richBeat()
			if !mutate(&hb, reflect.Value{}) {
				continue
			}
			v := fieldOf(&hb, name).Field(i)
			if !changeValue(v) {
				t.Fatalf("%s.%s: no way to change a %s", name, f.Name, f.Type)
			}
			if StaticHash(&hb) != base.StaticHash {
				continue // static: a change sends the full heartbeat
			}
			hb.StaticHash = base.StaticHash
			got := roundTrip(t, &hb, &base)
			if !reflect.DeepEqual(got, hb) {
				t.Errorf("%s.%s is neither in the static hash nor carried by the delta", name, f.Name)
			}
		}
	}
	all := func(*Heartbeat, reflect.Value) bool { return true }
	check("Heartbeat", all, reflect.TypeFor[Heartbeat]())
	check("GPU", all, reflect.TypeFor[GPU]())
	check("Model", all, reflect.TypeFor[Model]())
}

// fieldOf is the struct value a TestEveryFieldIsStaticOrTelemetry case changes.
func fieldOf(hb *Heartbeat, name string) reflect.Value {
	switch name {
	case "GPU":
		return reflect.ValueOf(&hb.GPUs[1]).Elem()
	case "Model":
		return reflect.ValueOf(&hb.Models[2]).Elem()
	}
	return reflect.ValueOf(hb).Elem()
}

// changeValue sets v to another value of its type.
func changeValue(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.String:
		v.SetString(v.String() + "x")
	case reflect.Bool:
		v.SetBool(!v.Bool())
	case reflect.Int, reflect.Int64:
		v.SetInt(v.Int() + 7)
	case reflect.Uint32, reflect.Uint64:
		v.SetUint(v.Uint() + 7)
	case reflect.Float64:
		v.SetFloat(v.Float() + 0.125)
	case reflect.Slice:
		switch v.Type().Elem().Kind() {
		case reflect.String:
			v.Set(reflect.Append(v, reflect.ValueOf("extra")))
		case reflect.Struct: // GPUs, Models: one element less
			v.Set(v.Slice(0, v.Len()-1))
		default:
			return false
		}
	case reflect.Struct:
		t, ok := v.Interface().(time.Time)
		if !ok {
			return false
		}
		v.Set(reflect.ValueOf(t.Add(1500 * time.Millisecond)))
	default:
		return false
	}
	return true
}

func TestApplyToMismatch(t *testing.T) {
	base := richBeat()
	cases := map[string]func(d *HeartbeatDelta, base *Heartbeat){
		"another node":      func(d *HeartbeatDelta, _ *Heartbeat) { d.NodeID = "n2" },
		"another instance":  func(d *HeartbeatDelta, _ *Heartbeat) { d.InstanceID = "inst-2" },
		"another static":    func(d *HeartbeatDelta, _ *Heartbeat) { d.StaticHash = "0" },
		"base without hash": func(d *HeartbeatDelta, b *Heartbeat) { b.StaticHash, d.StaticHash = "", "" },
		"a GPU more":        func(d *HeartbeatDelta, _ *Heartbeat) { d.GPUs = append(d.GPUs, GPUTelemetry{}) },
		"a model less":      func(d *HeartbeatDelta, _ *Heartbeat) { d.Models = d.Models[:1] },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			b := base
			d := DeltaOf(&b)
			mutate(&d, &b)
			var out Heartbeat
			if err := d.ApplyTo(&b, &out); !errors.Is(err, ErrDeltaMismatch) {
				t.Fatalf("err %v, want ErrDeltaMismatch", err)
			}
		})
	}
}

// TestApplyToReusesScratch holds ApplyTo to its promise: no allocation into a large enough
// scratch heartbeat, and the base untouched.
func TestApplyToReusesScratch(t *testing.T) {
	base := richBeat()
	hb := richBeat()
	hb.GPUs[0].UtilizationRatio = 0.99
	d := DeltaOf(&hb)
	var out Heartbeat
	if err := d.ApplyTo(&base, &out); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _ = d.ApplyTo(&base, &out) }); n != 0 {
		t.Errorf("ApplyTo into scratch: %v allocations", n)
	}
	if base.GPUs[0].UtilizationRatio != 0.5 || out.GPUs[0].UtilizationRatio != 0.99 {
		t.Errorf("base %v, out %v", base.GPUs[0].UtilizationRatio, out.GPUs[0].UtilizationRatio)
	}
}

func TestUnmarshalBinaryRejects(t *testing.T) {
	hb := richBeat()
	d := DeltaOf(&hb)
	good, err := d.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	// enc encodes a small delta changed by mutate (the encoder writes what the decoder refuses).
	enc := func(mutate func(d *HeartbeatDelta)) []byte {
		d := HeartbeatDelta{NodeID: "n", StaticHash: "h", GPUs: []GPUTelemetry{{}}, Models: []ModelTelemetry{{}}}
		mutate(&d)
		b, err := d.AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// version, "n", "", "h", sent_at (0 s, 0 ns), in_flight, queued, then the draining flag.
	badFlag := []byte{1, 1, 'n', 0, 1, 'h', 0, 0, 0, 0, 2}
	hugeList := append([]byte{1, 1, 'n', 0, 1, 'h', 0, 0, 0, 0, 0, 0, 0}, binary.AppendUvarint(nil, 1<<40)...)
	cases := map[string]struct {
		body []byte
		want string
	}{
		"empty":               {nil, "truncated"},
		"other version":       {append([]byte{2}, good[1:]...), "version 2"},
		"truncated":           {good[:len(good)-3], "truncated"},
		"trailing bytes":      {append(bytes.Clone(good), 0), "after the end"},
		"NaN":                 {enc(func(d *HeartbeatDelta) { d.GPUs[0].PowerWatts = math.NaN() }), "not finite"},
		"infinity":            {enc(func(d *HeartbeatDelta) { d.Models[0].Concurrency = math.Inf(1) }), "not finite"},
		"bad flag":            {badFlag, "neither 0 nor 1"},
		"huge list":           {hugeList, "longer than"},
		"string past the end": {[]byte{1, 100, 'n'}, "longer than the body"},
		"time out of range": {enc(func(d *HeartbeatDelta) { d.Models[0].LastUsed = time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC) }),
			"out of range"},
		"count out of range": {enc(func(d *HeartbeatDelta) { d.Models[0].ContextLength = 1 << 40 }), "out of range"},
		"minimal":            {enc(func(d *HeartbeatDelta) {}), ""},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			var got HeartbeatDelta
			err := got.UnmarshalBinary(c.body)
			if c.want == "" {
				if err != nil {
					t.Fatalf("a valid body: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want one saying %q", err, c.want)
			}
		})
	}
	var ok HeartbeatDelta
	if err := ok.UnmarshalBinary(good); err != nil {
		t.Fatalf("the good body: %v", err)
	}
}

func TestAppendBinaryRefusesNegativeCounts(t *testing.T) {
	hb := richBeat()
	d := DeltaOf(&hb)
	d.Models[1].InFlight = -1
	if _, err := d.AppendBinary(nil); err == nil {
		t.Fatal("a negative model in_flight was encoded")
	}
	d = DeltaOf(&hb)
	d.Queued = -2
	if _, err := d.AppendBinary(nil); err == nil {
		t.Fatal("a negative queued was encoded")
	}
}

// FuzzHeartbeatDelta feeds the decoder arbitrary bodies (it reads what any holder of the cluster
// token sends): it must not panic, and what it accepts must encode back to bytes that decode
// to the same delta.
func FuzzHeartbeatDelta(f *testing.F) {
	hb := richBeat()
	d := DeltaOf(&hb)
	good, _ := d.AppendBinary(nil)
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte{1})
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, body []byte) {
		var d HeartbeatDelta
		if err := d.UnmarshalBinary(body); err != nil {
			return
		}
		again, err := d.AppendBinary(nil)
		if err != nil {
			t.Fatalf("a decoded delta does not encode: %v", err)
		}
		var d2 HeartbeatDelta
		if err := d2.UnmarshalBinary(again); err != nil {
			t.Fatalf("re-encoded delta does not decode: %v", err)
		}
		if !reflect.DeepEqual(d, d2) {
			t.Fatalf("round trip changed the delta:\n%+v\n%+v", d, d2)
		}
	})
}

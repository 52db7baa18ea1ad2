package jsonspan

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestSkipValue(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{`"abc" x`, 5},
		{`"a\"b"`, 6},
		{`"a\\"b`, 5},
		{`"unterminated`, -1},
		{`{"a":[1,{"b":"}"}]} tail`, 19},
		{`[1,2`, -1},
		{`{"a":"x`, -1},
		{`123,`, 3},
		{`true}`, 4},
		{`null`, 4},
		{`,`, -1},
		{``, -1},
	} {
		if got := SkipValue([]byte(tc.in), 0); got != tc.want {
			t.Errorf("SkipValue(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestEachMemberAndElement(t *testing.T) {
	var keys, vals []string
	EachMember([]byte(` { "a" : 1 , "b\u0063":{"x":[1,2]}, "s":"t\"u" } `), func(k, v []byte) {
		keys = append(keys, string(Key(k)))
		vals = append(vals, string(v))
	})
	if strings.Join(keys, "|") != "a|bc|s" || strings.Join(vals, "|") != `1|{"x":[1,2]}|"t\"u"` {
		t.Fatalf("members %q = %q", keys, vals)
	}
	var els []string
	EachElement([]byte(`[ 1, "two" ,{"3":3}, [4] ]`), func(el []byte) bool {
		els = append(els, string(el))
		return len(els) < 3
	})
	if strings.Join(els, "|") != `1|"two"|{"3":3}` {
		t.Fatalf("elements = %q (stops when fn says so)", els)
	}
}

func TestString(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`"plain"`, "plain"}, {`"caf\u00e9"`, "café"}, {`"a\"b"`, `a"b`}, {`"\ud800"`, "\ufffd"}, {`x`, ""},
	} {
		if got := string(String([]byte(tc.in))); got != tc.want {
			t.Errorf("String(%s) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzEachMember checks the scanner against encoding/json on valid objects: the same keys in
// the same order and each value a span that is valid JSON on its own; and that no input panics.
func FuzzEachMember(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `{"a":"}","b":[{"c":"\"]"}]}`, `{"k\u0041":null}`, `{`, `{"a":`, `[1]`, `"x"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		b := []byte(in)
		var got []string
		EachMember(b, func(k, v []byte) {
			got = append(got, string(Key(k)))
			if json.Valid(b) && !json.Valid(v) {
				t.Fatalf("value span %q of %q is not valid JSON", v, in)
			}
		})
		EachElement(b, func([]byte) bool { return true })
		_ = SkipValue(b, 0)
		if !json.Valid(b) || SkipWS(b, 0) >= len(b) || b[SkipWS(b, 0)] != '{' {
			return
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(b, &m) != nil {
			return
		}
		for _, k := range got {
			if _, ok := m[k]; !ok {
				t.Fatalf("key %q of %q not found by encoding/json", k, in)
			}
		}
		if len(got) < len(m) {
			t.Fatalf("scanner found %d keys in %q, encoding/json %d", len(got), in, len(m))
		}
	})
}

func BenchmarkEachMember(b *testing.B) {
	body := []byte(`{"model":"llama3.1:8b","stream":true,"messages":[{"role":"system","content":"` + strings.Repeat("x", 4000) + `"},{"role":"user","content":"hi"}],"max_tokens":64}`)
	b.ReportAllocs()
	for b.Loop() {
		n := 0
		EachMember(body, func(k, v []byte) { n += len(v) })
	}
}

func TestEachMemberAllocatesNothing(t *testing.T) {
	body := []byte(`{"model":"m","stream":true,"messages":[{"role":"user","content":"hi \"there\""}],"max_tokens":64}`)
	n := 0
	fn := func(k, v []byte) {
		if string(Key(k)) == "model" {
			n += len(String(v))
		}
	}
	if allocs := testing.AllocsPerRun(100, func() { EachMember(body, fn) }); allocs != 0 {
		t.Fatalf("EachMember allocates %v times per run, want 0", allocs)
	}
}

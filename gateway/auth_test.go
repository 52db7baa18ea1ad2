package gateway

import (
	"strings"
	"testing"
)

func TestKeySet(t *testing.T) {
	long := "sk-proj-" + strings.Repeat("x", 120)
	k := newKeySet([]string{"sk-short", " " + long + " ", ""})
	for _, tt := range []struct {
		key  string
		want bool
	}{{"sk-short", true}, {long, true}, {"sk-shor", false}, {"sk-shortt", false}, {"", false}, {long[:len(long)-1], false}} {
		if got := k.match(tt.key); got != tt.want {
			t.Errorf("match(%.12q…) = %v, want %v", tt.key, got, tt.want)
		}
	}
	if !newKeySet(nil).empty() || !newKeySet([]string{" "}).empty() {
		t.Error("a set of no (or blank) keys is not empty")
	}
	// The common path, a good key in a header, allocates nothing.
	header := "Bearer " + long
	if n := testing.AllocsPerRun(100, func() {
		tok, _ := bearer(header)
		_ = k.match(tok)
	}); n != 0 {
		t.Errorf("key check allocates %v times", n)
	}
}

func TestBearer(t *testing.T) {
	for _, tt := range []struct {
		header, token string
		ok            bool
	}{
		{"Bearer abc", "abc", true}, {"bearer  abc ", "abc", true}, {"Basic abc", "", false},
		{"Bearer ", "", false}, {"", "", false}, {"Bearerabc", "", false},
	} {
		if tok, ok := bearer(tt.header); tok != tt.token || ok != tt.ok {
			t.Errorf("bearer(%q) = %q %v, want %q %v", tt.header, tok, ok, tt.token, tt.ok)
		}
	}
}

func TestRedactKey(t *testing.T) {
	if got := redactKey("sk-abcdefghijklmnop1234"); got != "sk-****************1234" || strings.Contains(got, "efgh") {
		t.Errorf("redactKey = %q", got)
	}
	if got := redactKey("short"); got != "***" {
		t.Errorf("redactKey of a short key = %q", got)
	}
}

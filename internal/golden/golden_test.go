package golden

import (
	"os"
	"path/filepath"
	"testing"
)

// recorder is a testing.TB that notes failures instead of failing the test that uses it.
type recorder struct {
	testing.TB
	failed, fatal bool
}

func (r *recorder) Helper()               {}
func (r *recorder) Errorf(string, ...any) { r.failed = true }
func (r *recorder) Fatalf(string, ...any) { r.failed, r.fatal = true, true; panic(r) }
func (r *recorder) Fatal(...any)          { r.failed, r.fatal = true, true; panic(r) }
func (r *recorder) Name() string          { return r.TB.Name() }
func (r *recorder) run(f func(tb testing.TB)) {
	defer func() {
		if p := recover(); p != nil && p != r {
			panic(p)
		}
	}()
	f(r)
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "out.golden.txt")
	check := func(got string, updating bool) *recorder {
		t.Helper()
		old := *update
		*update = updating
		defer func() { *update = old }()
		r := &recorder{TB: t}
		r.run(func(tb testing.TB) { Check(tb, path, []byte(got)) })
		return r
	}
	if r := check("a\n", false); !r.fatal {
		t.Fatal("a missing golden file passed")
	}
	if r := check("a\n", true); r.failed {
		t.Fatal("-update failed")
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "a\n" {
		t.Fatalf("-update wrote %q (%v)", b, err)
	}
	if r := check("a\n", false); r.failed {
		t.Fatal("the same output failed")
	}
	if r := check("b\n", false); !r.failed || r.fatal {
		t.Fatalf("different output: failed %v fatal %v, want an error", r.failed, r.fatal)
	}
}

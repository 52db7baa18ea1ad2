package main

import (
	"errors"
	"runtime/debug"
	"testing"
)

func TestMemoryLimitFrom(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"max\n", 0},
		{"1073741824\n", 966367641},
		{"104857600", 94371840},
		{"", 0},
		{"-1", 0},
		{"garbage", 0},
	} {
		if got := memoryLimitFrom(tc.in); got != tc.want {
			t.Errorf("memoryLimitFrom(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestDefaultMemoryLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "GOMEMLIMIT" {
				return v
			}
			return ""
		}
	}
	file := func(s string, err error) func(string) ([]byte, error) {
		return func(p string) ([]byte, error) {
			if p != cgroupMemoryMax {
				t.Errorf("read %s", p)
			}
			return []byte(s), err
		}
	}
	if got := defaultMemoryLimit(env("512MiB"), file("104857600", nil)); got != 0 {
		t.Errorf("with GOMEMLIMIT set: %d, want 0 (the runtime's own)", got)
	}
	if got := defaultMemoryLimit(env(""), file("", errors.New("no cgroup v2"))); got != 0 {
		t.Errorf("without a cgroup: %d", got)
	}
	if got := defaultMemoryLimit(env(""), file("max", nil)); got != 0 {
		t.Errorf("unlimited group: %d", got)
	}
	if got := defaultMemoryLimit(env(""), file("104857600", nil)); got != 94371840 || debug.SetMemoryLimit(-1) != 94371840 {
		t.Errorf("100 MiB group: %d, runtime %d", got, debug.SetMemoryLimit(-1))
	}
}

package main

import (
	"os/exec"
	"regexp"
	"testing"
)

func TestDebVersion(t *testing.T) {
	tests := []struct{ in, want string }{
		{"v1.2.3", "1.2.3-1"},
		{"1.2.3", "1.2.3-1"},
		{"v1.2.3-rc1", "1.2.3~rc1-1"},
		{"v1.2.3-rc.1", "1.2.3~rc.1-1"},
		{"v1.2.3-4-gabc1234", "1.2.3+git4.abc1234-1"},
		{"v1.2.3-rc1-4-gabc1234", "1.2.3~rc1+git4.abc1234-1"},
		{"v1.2.3-4-gabc1234-dirty", "1.2.3+git4.abc1234+dirty-1"},
		{"53d71ef", "0~git.53d71ef-1"},
		{"53d71ef-dirty", "0~git.53d71ef+dirty-1"},
		{"1234567", "0~git.1234567-1"},
	}
	for _, tc := range tests {
		got, err := DebVersion(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("DebVersion(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "dev", "v", "vx1", "1.2 3", "1.2.3_4", "-1", "1.2.3-"} {
		if got, err := DebVersion(bad); err == nil {
			t.Errorf("DebVersion(%q) = %q, want an error", bad, got)
		}
	}
}

// TestDebVersionOrder checks the promise DebVersion makes, with dpkg's own comparison.
func TestDebVersionOrder(t *testing.T) {
	dpkg, err := exec.LookPath("dpkg")
	if err != nil {
		t.Skip("no dpkg to compare versions with")
	}
	order := []string{"53d71ef", "v0.9.0", "v1.0.0-rc1", "v1.0.0-rc1-2-gabcdef0", "v1.0.0", "v1.0.0-3-gabcdef0", "v1.0.1"}
	for i := 1; i < len(order); i++ {
		a, _ := DebVersion(order[i-1])
		b, _ := DebVersion(order[i])
		if err := exec.Command(dpkg, "--compare-versions", a, "lt", b).Run(); err != nil {
			t.Errorf("dpkg says %s (%s) is not before %s (%s)", a, order[i-1], b, order[i])
		}
	}
}

// debVersionRe is Debian policy 5.6.12's version syntax (no epoch) with a revision.
var debVersionRe = regexp.MustCompile(`^[0-9][A-Za-z0-9.+~-]*-[A-Za-z0-9.+~]+$`)

func FuzzDebVersion(f *testing.F) {
	for _, s := range []string{"v1.2.3", "v1.2.3-4-gabc1234-dirty", "53d71ef", "v1.0.0-rc.1", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := DebVersion(in)
		if err != nil {
			return
		}
		if !debVersionRe.MatchString(got) {
			t.Fatalf("DebVersion(%q) = %q: not a valid Debian version", in, got)
		}
	})
}

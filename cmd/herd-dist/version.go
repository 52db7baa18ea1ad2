package main

import (
	"debug/elf"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

var (
	// describeRe is git describe's "<tag>-<commits since>-g<hash>".
	describeRe = regexp.MustCompile(`^(.+)-([0-9]+)-g([0-9a-f]{4,40})$`)
	// hashRe is git describe --always without a tag: an abbreviated commit hash.
	hashRe = regexp.MustCompile(`^[0-9a-f]{7,40}$`)
	// tagRe is a release tag without its "v": digits first, then what Debian allows.
	tagRe = regexp.MustCompile(`^[0-9][0-9A-Za-z.]*(-[0-9A-Za-z.]+)*$`)
)

// DebVersion turns herd's version (git describe --tags --always --dirty output) into a Debian
// version that sorts the way releases do, with Debian revision 1:
//
//	v1.2.3               1.2.3-1
//	v1.2.3-rc1           1.2.3~rc1-1          (before 1.2.3)
//	v1.2.3-4-gabc1234    1.2.3+git4.abc1234-1 (after 1.2.3)
//	abc1234              0~git.abc1234-1      (no tag yet: before any release)
//	...-dirty            ...+dirty-1
func DebVersion(v string) (string, error) {
	orig := v
	v, dirty := strings.CutSuffix(strings.TrimPrefix(v, "v"), "-dirty")
	var up string
	switch {
	case hashRe.MatchString(v) && !strings.Contains(v, "."):
		up = "0~git." + v
	default:
		extra := ""
		if m := describeRe.FindStringSubmatch(v); m != nil && !hashRe.MatchString(m[1]) {
			v, extra = m[1], "+git"+m[2]+"."+m[3]
		}
		if !tagRe.MatchString(v) {
			return "", fmt.Errorf("version %q: want a release tag (v1.2.3), git describe output or a commit hash", orig)
		}
		// The first hyphen starts a pre-release, which Debian writes with ~ so it sorts first.
		base, pre, hasPre := strings.Cut(v, "-")
		up = base
		if hasPre {
			up += "~" + strings.ReplaceAll(pre, "-", ".")
		}
		up += extra
	}
	if dirty {
		up += "+dirty"
	}
	return up + "-1", nil
}

// glibcVersionRe is a glibc symbol version, GLIBC_2.34.
var glibcVersionRe = regexp.MustCompile(`^GLIBC_([0-9]+)\.([0-9]+)(?:\.([0-9]+))?$`)

// LibcDepends reads the binary's dynamic symbols and returns the Debian dependency its C
// library needs: "libc6 (>= 2.34)" for the newest glibc symbol version it uses. nfpm does not run
// dpkg-shlibdeps, so the package states this itself. A binary needing a shared library other than
// glibc's is an error, so a package never ships with an undeclared dependency.
func LibcDepends(binary string) (string, error) {
	f, err := elf.Open(binary)
	if err != nil {
		return "", fmt.Errorf("libc dependency: %w", err)
	}
	defer f.Close()
	libs, err := f.ImportedLibraries()
	if err != nil {
		return "", fmt.Errorf("libc dependency of %s: %w", binary, err)
	}
	for _, l := range libs {
		if !strings.HasPrefix(l, "libc.so.") && !strings.HasPrefix(l, "ld-linux") {
			return "", fmt.Errorf("%s needs %s: only glibc is declared as a dependency", binary, l)
		}
	}
	syms, err := f.DynamicSymbols()
	if err != nil {
		return "", fmt.Errorf("libc dependency of %s: %w", binary, err)
	}
	best := [3]int{}
	for _, s := range syms {
		m := glibcVersionRe.FindStringSubmatch(s.Version)
		if m == nil {
			continue
		}
		var v [3]int
		for i := range 3 {
			v[i], _ = strconv.Atoi(m[i+1]) // empty third part: 0
		}
		if v[0] > best[0] || v[0] == best[0] && (v[1] > best[1] || v[1] == best[1] && v[2] > best[2]) {
			best = v
		}
	}
	if best == [3]int{} {
		return "", fmt.Errorf("%s uses no versioned glibc symbol: not a cgo binary?", binary)
	}
	ver := fmt.Sprintf("%d.%d", best[0], best[1])
	if best[2] != 0 {
		ver += fmt.Sprintf(".%d", best[2])
	}
	return "libc6 (>= " + ver + ")", nil
}

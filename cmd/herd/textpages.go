package main

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
)

// textMapping is a read-only mapping of the executable that smallTextPages may remap.
type textMapping struct {
	start, end uintptr
}

// hugeTextMappings returns, from the contents of /proc/self/smaps, the executable's read-only,
// private mappings (its text and read-only data) that the kernel maps with huge pages
// (FilePmdMapped > 0) and that hold no anonymous (copy-on-write) page: dropping those is safe,
// the pages come back from the file unchanged at the next touch.
//
// Why: on kernels whose page cache keeps the executable in large folios (ext4 since Linux 6.16),
// a 57 MB herd binary's text and read-only data are mapped 2 MiB at a time, and every 2 MiB
// region the process touches counts whole in its RSS: 17 MiB of a gateway's 45 MiB at rest
// (docs/BENCHMARKS.md, "Memory under the overhead scenario's c50 load").
func hugeTextMappings(smaps []byte, exe string) []textMapping {
	var out []textMapping
	var cur *textMapping
	var pmd, anon bool
	flush := func() {
		if cur != nil && pmd && !anon {
			out = append(out, *cur)
		}
		cur, pmd, anon = nil, false, false
	}
	sc := bufio.NewScanner(bytes.NewReader(smaps))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if strings.HasSuffix(f[0], ":") {
			// A field of the current mapping, "Name:  N kB".
			if cur == nil || len(f) < 2 {
				continue
			}
			switch f[0] {
			case "FilePmdMapped:":
				pmd = f[1] != "0"
			case "Anonymous:":
				anon = f[1] != "0"
			}
			continue
		}
		// A mapping's header: "start-end perms offset dev inode path".
		flush()
		if len(f) < 6 || f[5] != exe || (f[1] != "r-xp" && f[1] != "r--p") {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		cur = &textMapping{start: uintptr(start), end: uintptr(end)}
	}
	flush()
	return out
}

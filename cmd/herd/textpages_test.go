package main

import (
	"slices"
	"testing"
)

// smapsExcerpt is /proc/self/smaps of a herd gateway (fields trimmed), with the cases around
// it: text and read-only data on huge pages, the writable data segment, a read-only mapping
// holding copy-on-write pages, another file, and a mapping on small pages already.
const smapsExcerpt = `00400000-00411000 r--p 00000000 fe:00 9978087                            /opt/herd
Size:                 68 kB
FilePmdMapped:         0 kB
Anonymous:             0 kB
00411000-017d4000 r-xp 00011000 fe:00 9978087                            /opt/herd
Size:              20236 kB
Rss:               20236 kB
FilePmdMapped:     18432 kB
Anonymous:             0 kB
017d4000-02be6000 r--p 013d4000 fe:00 9978087                            /opt/herd
Size:              20552 kB
FilePmdMapped:      6144 kB
Anonymous:             0 kB
02be6000-02be7000 r--p 027e5000 fe:00 9978087                            /opt/herd
FilePmdMapped:      2048 kB
Anonymous:             4 kB
02be7000-02c81000 rw-p 027e6000 fe:00 9978087                            /opt/herd
FilePmdMapped:      2048 kB
Anonymous:           600 kB
7f0000000000-7f0000200000 r-xp 00000000 fe:00 1234                       /usr/lib/other.so
FilePmdMapped:      2048 kB
Anonymous:             0 kB
c000000000-c004000000 rw-p 00000000 00:00 0
Anonymous:          3500 kB
`

func TestHugeTextMappings(t *testing.T) {
	for _, tc := range []struct {
		name, smaps, exe string
		want             []textMapping
	}{
		{"text and rodata on huge pages", smapsExcerpt, "/opt/herd", []textMapping{{0x411000, 0x17d4000}, {0x17d4000, 0x2be6000}}},
		{"another executable", smapsExcerpt, "/usr/bin/herd", nil},
		{"empty", "", "/opt/herd", nil},
		{"malformed header", "zz-yy r-xp 0 fe:00 1 /opt/herd\nFilePmdMapped: 2048 kB\n", "/opt/herd", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := hugeTextMappings([]byte(tc.smaps), tc.exe); !slices.Equal(got, tc.want) {
				t.Errorf("got %x, want %x", got, tc.want)
			}
		})
	}
}

// TestSmallTextPages runs the remap on the test binary itself: it must leave the process
// working (this test returning is the check that text still executes) and find nothing left
// to remap the second time.
func TestSmallTextPages(t *testing.T) {
	smallTextPages()
	if n := smallTextPages(); n != 0 {
		t.Errorf("second remap found %d huge mappings left", n)
	}
}

func FuzzHugeTextMappings(f *testing.F) {
	f.Add([]byte(smapsExcerpt), "/opt/herd")
	f.Fuzz(func(t *testing.T, smaps []byte, exe string) {
		for _, m := range hugeTextMappings(smaps, exe) {
			if m.end <= m.start {
				t.Fatalf("empty mapping %x", m)
			}
		}
	})
}

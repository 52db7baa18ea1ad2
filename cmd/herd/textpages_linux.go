//go:build linux

package main

import (
	"os"
	"syscall"
)

// smallTextPages makes the kernel map the executable's text and read-only data with 4 KiB pages
// instead of 2 MiB ones, so that only what the process touches counts in its RSS (see
// hugeTextMappings for why and which mappings). Each such mapping is marked MADV_NOHUGEPAGE
// (refaults and khugepaged then keep to small pages) and dropped with MADV_DONTNEED (clean
// file pages: the next touch maps them back from the page cache, nothing is lost). It returns
// how many mappings it remapped; failures leave the mappings as they were.
func smallTextPages() int {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0
	}
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0
	}
	n := 0
	for _, m := range hugeTextMappings(smaps, exe) {
		if madvise(m, syscall.MADV_NOHUGEPAGE) != nil {
			continue
		}
		if madvise(m, syscall.MADV_DONTNEED) == nil {
			n++
		}
	}
	return n
}

func madvise(m textMapping, advice int) error {
	if _, _, e := syscall.Syscall(syscall.SYS_MADVISE, m.start, m.end-m.start, uintptr(advice)); e != 0 {
		return e
	}
	return nil
}

//go:build !linux

package main

// smallTextPages does nothing where /proc/self/smaps and file huge pages do not exist.
func smallTextPages() int { return 0 }

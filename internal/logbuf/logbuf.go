// Package logbuf is a log sink for tests: a buffer that the goroutines of the code under test
// write to while the test reads it, without a data race.
package logbuf

import (
	"strings"
	"sync"
)

// Buffer is an io.Writer safe for concurrent writes and reads. The zero value is ready to use.
type Buffer struct {
	mu sync.Mutex
	b  strings.Builder
}

// Write appends p.
func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

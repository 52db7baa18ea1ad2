package main

import (
	"bytes"
	"io"
	"os"
	"strconv"
	"unicode/utf8"
)

// fitWriter passes whole lines to w, each cut to width columns (a rune a column) with "…"
// marking the cut; width 0 passes them unchanged. What it is given must end in a newline: a
// last line without one is not written.
type fitWriter struct {
	w     io.Writer
	width int
	buf   []byte
}

// Write implements io.Writer.
func (f *fitWriter) Write(p []byte) (int, error) {
	if f.width <= 0 {
		return f.w.Write(p)
	}
	f.buf = append(f.buf, p...)
	for {
		i := bytes.IndexByte(f.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := fitLine(f.buf[:i], f.width)
		if _, err := f.w.Write(append(line, '\n')); err != nil {
			return 0, err
		}
		f.buf = f.buf[i+1:]
	}
}

// fitLine cuts line (without its newline) to width runes, the last one "…" when cut; trailing
// spaces go.
func fitLine(line []byte, width int) []byte {
	line = bytes.TrimRight(line, " ")
	if utf8.RuneCount(line) <= width {
		return line
	}
	n, i := 0, 0
	for i < len(line) && n < width-1 {
		_, size := utf8.DecodeRune(line[i:])
		i += size
		n++
	}
	return append(bytes.TrimRight(line[:i:i], " "), "…"...)
}

// terminalWidth is the width of the terminal w writes to, else $COLUMNS, else 0 (no limit: a
// pipe into grep or a file gets whole lines).
func terminalWidth(w io.Writer) int {
	if f, ok := w.(*os.File); ok {
		if cols := ttyColumns(f); cols > 0 {
			return cols
		}
	}
	if n, err := strconv.Atoi(os.Getenv("COLUMNS")); err == nil && n > 0 {
		return n
	}
	return 0
}

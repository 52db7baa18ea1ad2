//go:build !unix

package main

import "os"

// ttyColumns is 0 where the terminal's size is not read: $COLUMNS then says the width.
func ttyColumns(*os.File) int { return 0 }

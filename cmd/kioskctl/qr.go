package main

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// termWidth is how many columns the terminal on stdout has: the kernel's
// window size, else $COLUMNS, else 80.
func (g *Globals) termWidth() int {
	if f, ok := g.Stdout.(*os.File); ok {
		if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 0 {
			return int(ws.Col)
		}
	}
	if n, err := strconv.Atoi(g.Getenv("COLUMNS")); err == nil && n > 0 {
		return n
	}
	return 80
}

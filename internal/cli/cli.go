// Package cli holds the command-line conventions every kioskpay program
// follows, so that they behave alike for a person and for scripts:
//
//   - -h (or -help) prints the help text on standard output and exits 0;
//     the text starts with a one-line description, then the usage, the
//     flags and the exit codes;
//   - a bad flag or a stray argument prints the problem and a pointer to
//     -h on standard error and exits 2;
//   - -version prints "<program> <version>" on standard output and exits 0.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
)

// Exit codes shared by every program. Each program documents its own
// further codes in its help text.
const (
	ExitOK    = 0
	ExitUsage = 2
)

// Version returns stamped (set at build time with -ldflags "-X
// main.version=…") when it is set, else the module version Go recorded,
// else "dev".
func Version(stamped string) string {
	if stamped != "" && stamped != "dev" {
		return stamped
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// Parse parses args with fs. help is the program's whole help text. It
// returns done = true when the program must exit now with code: after -h
// (help printed on stdout, 0), a bad flag (2), or, unless positional is
// true, a stray argument (2).
func Parse(fs *flag.FlagSet, args []string, help string, positional bool, stdout, stderr io.Writer) (code int, done bool) {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, help)
			return ExitOK, true
		}
		return Usagef(stderr, fs.Name(), "%v", err), true
	}
	if !positional && fs.NArg() > 0 {
		return Usagef(stderr, fs.Name(), "unexpected argument %q (every input is a flag)", fs.Arg(0)), true
	}
	return ExitOK, false
}

// Usagef reports a usage mistake of program on stderr, with a pointer to
// its help, and returns ExitUsage.
func Usagef(stderr io.Writer, program, format string, args ...any) int {
	msg := strings.TrimSuffix(fmt.Sprintf(format, args...), "\n")
	fmt.Fprintf(stderr, "%s: %s\nRun '%s -h' for usage.\n", program, msg, program)
	return ExitUsage
}

// Flags returns fs's flags as PrintDefaults writes them, for a help text.
func Flags(fs *flag.FlagSet) string {
	var b strings.Builder
	fs.SetOutput(&b)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
	return b.String()
}

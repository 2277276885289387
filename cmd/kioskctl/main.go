// Command kioskctl is the operator and fleet CLI for kioskpayd: it places
// and follows orders, lists a fleet's status, streams what devices publish,
// queries, cancels, refunds, lists and reconciles orders over MQTT, and
// drives a paysim simulator in tests.
//
// Usage:
//
//	kioskctl [global flags] <command> [flags]
//
// Exit codes: 0 success; 1 failure (no reply, refused, broker unreachable);
// 2 bad usage; 3 the order ended without payment (pay) or reconcile found
// mismatches; 4 a status or watch listing may be incomplete.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/kioskpay/kioskpay/internal/cli"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

// Exit codes.
const (
	ExitOK      = cli.ExitOK
	ExitFailure = 1
	ExitUsage   = cli.ExitUsage
	// ExitNotPaid: pay saw the order end expired, cancelled or refunded;
	// reconcile found mismatches. Scripts tell it apart from "could not
	// find out".
	ExitNotPaid = 3
	// ExitIncomplete: status or watch may not have seen every device's
	// retained status (the reason is on stderr).
	ExitIncomplete = 4
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	m := &Main{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
	os.Exit(m.Run(ctx, os.Args[1:]))
}

// Main holds what every command shares: the output streams and the
// environment, so tests run commands in-process.
type Main struct {
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
}

// command is one kioskctl subcommand.
type command interface {
	// Run executes the command with its own arguments (after the name).
	Run(ctx context.Context, g *Globals, args []string) error
	// Usage is the command's help text.
	Usage() string
}

var commands = []struct {
	name    string
	summary string
	new     func() command
}{
	{"pay", "place an order, show its QR code in the terminal, wait for the result", func() command { return &PayCommand{} }},
	{"status", "fleet table from the retained status topics", func() command { return &StatusCommand{} }},
	{"watch", "stream replies, results and events, one line per message", func() command { return &WatchCommand{} }},
	{"query", "ask a device for an order's current state", func() command { return &QueryCommand{} }},
	{"cancel", "cancel a pending order (the customer walked away)", func() command { return &CancelCommand{} }},
	{"refund", "refund a paid order, fully or in part", func() command { return &RefundCommand{} }},
	{"orders", "list a device's orders, newest first", func() command { return &OrdersCommand{} }},
	{"reconcile", "compare a device's orders with the providers' state", func() command { return &ReconcileCommand{} }},
	{"sim", "drive a paysim simulator: pay, scan, fault, refund-complete, orders, stats", func() command { return &SimCommand{} }},
	{"version", "print kioskctl's version", func() command { return versionCommand{} }},
}

// Run runs kioskctl with args (without the program name) and returns the
// exit code.
func (m *Main) Run(ctx context.Context, args []string) int {
	if m.Getenv == nil {
		m.Getenv = func(string) string { return "" }
	}
	g := newGlobals(m)
	fs := flag.NewFlagSet("kioskctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	g.register(fs)
	showVersion := fs.Bool("version", false, "print the version")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(m.Stdout, m.usage())
			return ExitOK
		}
		fmt.Fprintf(m.Stderr, "kioskctl: %v\n\n%s", err, m.usage())
		return ExitUsage
	}
	if *showVersion {
		fmt.Fprintln(m.Stdout, "kioskctl", cli.Version(version))
		return ExitOK
	}
	if fs.NArg() == 0 {
		fmt.Fprintf(m.Stderr, "kioskctl: a command is needed\n\n%s", m.usage())
		return ExitUsage
	}
	name, rest := fs.Arg(0), fs.Args()[1:]
	if name == "help" {
		if len(rest) > 0 {
			if c := lookup(rest[0]); c != nil {
				fmt.Fprint(m.Stdout, commandHelp(rest[0], c.Usage()))
				return ExitOK
			}
		}
		fmt.Fprint(m.Stdout, m.usage())
		return ExitOK
	}
	c := lookup(name)
	if c == nil {
		fmt.Fprintf(m.Stderr, "kioskctl: unknown command %q\n\n%s", name, m.usage())
		return ExitUsage
	}
	g.command = name
	err := c.Run(ctx, g, rest)
	return m.report(name, err)
}

// report prints err (if any) and maps it to an exit code.
func (m *Main) report(name string, err error) int {
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintf(m.Stderr, "kioskctl %s: %v\n", name, ee.err)
		}
		return ee.code
	}
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(m.Stderr, "kioskctl %s: %v\nRun 'kioskctl help %s' for usage.\n", name, ue.err, name)
		return ExitUsage
	}
	fmt.Fprintf(m.Stderr, "kioskctl %s: %v\n", name, err)
	return ExitFailure
}

func lookup(name string) command {
	for _, c := range commands {
		if c.name == name {
			return c.new()
		}
	}
	return nil
}

func (m *Main) usage() string {
	var b strings.Builder
	b.WriteString(`kioskctl talks to kioskpayd devices over MQTT: places and follows orders, shows a fleet's status.

Usage:

	kioskctl [global flags] <command> [flags]
	kioskctl -version

Commands:

`)
	for _, c := range commands {
		fmt.Fprintf(&b, "\t%-10s %s\n", c.name, c.summary)
	}
	b.WriteString(`
Global flags (accepted before or after the command):

` + globalFlagsUsage + `
Run 'kioskctl help <command>' for a command's flags.
` + exitCodes)
	return b.String()
}

const exitCodes = "Exit codes: 0 ok, 1 failure, 2 bad usage, 3 order not paid / reconcile mismatches,\n4 status/watch listing may be incomplete.\n"

// commandHelp is a command's help text: what it does in one line, its
// usage, and the exit codes.
func commandHelp(name, usage string) string {
	summary := ""
	for _, c := range commands {
		if c.name == name {
			summary = c.summary
		}
	}
	h := "kioskctl " + name + ": " + summary + "\n\n" + usage
	if !strings.Contains(usage, "Exit codes") {
		h += "\n" + exitCodes
	}
	return h
}

// count says how many of a thing: "1 device", "2 devices", "0 mismatches".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	if strings.HasSuffix(noun, "ch") || strings.HasSuffix(noun, "s") {
		return fmt.Sprintf("%d %ses", n, noun)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// exitError carries a specific exit code; err (may be nil) is printed.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// usageError is a mistake on the command line (exit 2).
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

type versionCommand struct{}

func (versionCommand) Run(ctx context.Context, g *Globals, args []string) error {
	fmt.Fprintln(g.Stdout, "kioskctl", cli.Version(version))
	return nil
}

func (versionCommand) Usage() string { return "Usage: kioskctl version\n" }

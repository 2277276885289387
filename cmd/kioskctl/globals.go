package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/kioskpay/kioskpay/contract"
)

// Globals are the flags every command accepts, before or after its name.
type Globals struct {
	Broker       string
	Prefix       string
	Username     string
	PasswordFile string
	CAFile       string
	CertFile     string
	KeyFile      string
	Timeout      time.Duration
	Output       string
	// SignKeyFile holds the HMAC key of unlock.result_key_file: requests are
	// signed with it and results verified.
	SignKeyFile string

	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string

	timeoutSet bool   // -timeout given explicitly
	command    string // the command being run, for its help
}

const globalFlagsUsage = `	-broker URL[,URL…]   MQTT broker (tcp:// ssl:// ws:// wss://), or the nodes of a cluster
	                     tried in order; env KIOSKCTL_BROKER (default tcp://127.0.0.1:1883)
	-prefix P            topic prefix, mqtt.topic_prefix of the devices; env KIOSKCTL_PREFIX (default kiosk)
	-username U          broker user name; env KIOSKCTL_USERNAME
	-password-file F     file holding the broker password; env KIOSKCTL_PASSWORD_FILE
	-ca-file F           CA bundle that signed the broker's certificate (TLS)
	-cert-file F         client certificate for mutual TLS (with -key-file)
	-key-file F          client private key for mutual TLS
	-sign-key-file F     HMAC key (unlock.result_key_file): sign requests, verify results
	-timeout D           how long to wait for a device's reply (default 10s)
	-o text|json         output format (default text; json for scripts)
`

func newGlobals(m *Main) *Globals {
	env := func(k, def string) string {
		if v := m.Getenv(k); v != "" {
			return v
		}
		return def
	}
	return &Globals{
		Broker:       env("KIOSKCTL_BROKER", "tcp://127.0.0.1:1883"),
		Prefix:       env("KIOSKCTL_PREFIX", contract.DefaultTopicPrefix),
		Username:     env("KIOSKCTL_USERNAME", ""),
		PasswordFile: env("KIOSKCTL_PASSWORD_FILE", ""),
		Timeout:      10 * time.Second,
		Output:       "text",
		Stdout:       m.Stdout,
		Stderr:       m.Stderr,
		Getenv:       m.Getenv,
	}
}

// register adds the global flags to fs, with their current values as
// defaults so flags given before the command name survive a second parse.
func (g *Globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.Broker, "broker", g.Broker, "MQTT broker URL")
	fs.StringVar(&g.Prefix, "prefix", g.Prefix, "topic prefix")
	fs.StringVar(&g.Username, "username", g.Username, "broker user name")
	fs.StringVar(&g.PasswordFile, "password-file", g.PasswordFile, "file holding the broker password")
	fs.StringVar(&g.CAFile, "ca-file", g.CAFile, "CA certificate bundle (TLS)")
	fs.StringVar(&g.CertFile, "cert-file", g.CertFile, "client certificate (mutual TLS)")
	fs.StringVar(&g.KeyFile, "key-file", g.KeyFile, "client private key (mutual TLS)")
	fs.StringVar(&g.SignKeyFile, "sign-key-file", g.SignKeyFile, "HMAC key to sign requests and verify results")
	fs.Func("timeout", "reply timeout", func(s string) error {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return fmt.Errorf("want a positive duration such as 10s")
		}
		g.Timeout, g.timeoutSet = d, true
		return nil
	})
	fs.Func("o", "output format: text or json", func(s string) error {
		if s != "text" && s != "json" {
			return fmt.Errorf("want text or json")
		}
		g.Output = s
		return nil
	})
}

// parse parses a command's args with its own flags plus the global ones.
// Positional arguments are refused: every input is a named flag.
func (g *Globals) parse(fs *flag.FlagSet, usage string, args []string) error {
	if err := g.parseLeading(fs, usage, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q (every input is a flag, e.g. -device ID)", fs.Arg(0))
	}
	return nil
}

// parseLeading parses the flags in args up to the first word that is not
// one, which it leaves in fs.Args(): the action of a command that has
// actions (sim).
func (g *Globals) parseLeading(fs *flag.FlagSet, usage string, args []string) error {
	fs.SetOutput(io.Discard)
	g.register(fs)
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			fmt.Fprint(g.Stdout, commandHelp(g.command, usage))
			return err
		}
		return &usageError{err}
	}
	return nil
}

// JSON reports whether output is for scripts.
func (g *Globals) JSON() bool { return g.Output == "json" }

// printJSON writes v as one line of JSON.
func (g *Globals) printJSON(v any) error { return writeJSONLine(g.Stdout, v) }

// signed signs a request with key at the current time: ts and sig are what
// the request carries, none when no key is configured (key nil).
func signed(key []byte, sign func(key []byte, ts int64) string) (ts int64, sig string) {
	if key == nil {
		return 0, ""
	}
	ts = time.Now().Unix()
	return ts, sign(key, ts)
}

// signKey reads the HMAC key, or returns nil when none is configured.
func (g *Globals) signKey() ([]byte, error) {
	if g.SignKeyFile == "" {
		return nil, nil
	}
	b, err := os.ReadFile(g.SignKeyFile)
	if err != nil {
		return nil, fmt.Errorf("read -sign-key-file: %w", err)
	}
	// Trimmed like the daemon's config.ReadSecret: editors add newlines.
	k := []byte(strings.TrimSpace(string(b)))
	if len(k) == 0 {
		return nil, fmt.Errorf("-sign-key-file %s is empty", g.SignKeyFile)
	}
	return k, nil
}

// topic returns "<prefix>/<device>/<suffix>".
func (g *Globals) topic(device, suffix string) string {
	return g.Prefix + "/" + device + "/" + suffix
}

// requireDevice checks the -device flag.
func requireDevice(id string) error {
	if id == "" {
		return usagef("-device is required (the device's device_id, see 'kioskctl status')")
	}
	if !contract.ValidDeviceID(id) {
		return usagef("-device %q: want 1-64 characters of A-Z a-z 0-9 _ -", id)
	}
	return nil
}

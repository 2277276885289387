package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/kioskpay/kioskpay/assemble"
	"github.com/kioskpay/kioskpay/config"
	"github.com/kioskpay/kioskpay/device"
	"github.com/kioskpay/kioskpay/internal/cli"
	"github.com/kioskpay/kioskpay/internal/clock"
	"github.com/kioskpay/kioskpay/link"
	"github.com/kioskpay/kioskpay/mqttclient"
	"github.com/kioskpay/kioskpay/payment"
	"github.com/kioskpay/kioskpay/payment/accounts"
	"github.com/kioskpay/kioskpay/store"
)

// doctorOrderNo is queried at each provider: an order that cannot exist,
// so a correctly signed request must come back "no such order".
const doctorOrderNo = "kioskpaydoctor000000000000000001"

// checkTimeout bounds each network check.
const checkTimeout = 15 * time.Second

// report prints one line per check and remembers failures.
type report struct {
	w      io.Writer
	failed int
}

func (r *report) ok(name, detail string)   { r.line("ok", name, detail) }
func (r *report) warn(name, detail string) { r.line("warn", name, detail) }
func (r *report) fail(name, detail string) {
	r.failed++
	r.line("FAIL", name, detail)
}

// skip reports a check that cannot run because a key it depends on is
// broken; that key's own line already failed.
func (r *report) skip(name, key string) {
	r.line("skip", name, "not checked until "+key+" is fixed")
}

func (r *report) line(status, name, detail string) {
	// One line per check, whatever the detail contains.
	detail = strings.ReplaceAll(detail, "\n", "; ")
	fmt.Fprintf(r.w, "%-4s  %-34s %s\n", status, name, detail)
}

const doctorUsage = `kioskpayd doctor checks a device's set-up: configuration, key files, clock, state
directory (free space), the order store (a full consistency check, when the daemon is
stopped), broker login, both providers (a signed query) and display access.

Usage:
  kioskpayd doctor -config FILE

It prints one line per check (ok, warn, FAIL, or skip when the check depends on
a configuration key that is broken) and never prints key material or passwords.
Every configuration problem gets its own line.

Exit codes: 0 every check passed, 1 a check failed, 2 bad configuration or usage.
`

// brokenKeys are the configuration keys with a problem, for skipping the
// checks that depend on them.
type brokenKeys []string

// under returns the first broken key that is one of keys or lies under
// one of them ("mqtt" covers "mqtt.url"), or "".
func (b brokenKeys) under(keys ...string) string {
	for _, bad := range b {
		for _, k := range keys {
			if bad == k || strings.HasPrefix(bad, k+".") {
				return bad
			}
		}
	}
	return ""
}

// runDoctor checks everything the daemon needs, one line per check, and
// exits 0 only when all pass. It never prints key material or passwords:
// every message is built from file names, keys and provider error codes.
// A configuration with problems is still checked as far as it can be: each
// problem is a line of its own, and the checks that do not depend on a
// broken key run as usual.
func runDoctor(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kioskpayd doctor", flag.ContinueOnError)
	configPath := fs.String("config", "", "configuration file")
	if code, done := cli.Parse(fs, args, doctorUsage, false, stdout, stderr); done {
		return code
	}
	if *configPath == "" {
		return cli.Usagef(stderr, "kioskpayd doctor", "-config FILE is required")
	}
	r := &report{w: stdout}
	cfg, errs := config.Check(*configPath)
	var broken brokenKeys
	for _, err := range errs {
		name := "config"
		var ce *config.Error
		if errors.As(err, &ce) && ce.Key != "" {
			name += " " + ce.Key
			broken = append(broken, ce.Key)
			err = errors.New(ce.Msg)
		}
		r.fail(name, err.Error())
	}
	if cfg == nil {
		fmt.Fprintf(stdout, "%d check(s) failed; nothing else can be checked until the file reads as TOML\n", r.failed)
		return exitBadConfig
	}
	if len(errs) == 0 {
		r.ok("config", *configPath+" (device "+cfg.DeviceID+")")
	}

	providers := checkKeys(r, cfg, broken)
	checkMQTTFiles(r, cfg, broken)
	checkClock(r, cfg, broken)
	checkStateDir(r, cfg, broken)
	checkStore(r, cfg, broken)
	checkBroker(ctx, r, cfg, broken)
	checkProviders(ctx, r, providers)
	checkGateway(ctx, r, cfg, broken)
	checkDisplay(r, cfg, broken)
	checkUnlock(r, cfg, broken)

	switch {
	case len(errs) > 0:
		fmt.Fprintf(stdout, "%d check(s) failed, %d of them in the configuration\n", r.failed, len(errs))
		return exitBadConfig
	case r.failed > 0:
		fmt.Fprintf(stdout, "%d check(s) failed\n", r.failed)
		return exitFatal
	}
	fmt.Fprintln(stdout, "all checks passed")
	return exitOK
}

type account struct {
	pid  string
	name payment.ProviderName
	p    payment.Provider
}

// checkKeys loads every merchant account's key files, one line each.
func checkKeys(r *report, cfg *config.Config, broken brokenKeys) []account {
	var out []account
	pids := make([]string, 0, len(cfg.Merchants))
	for pid := range cfg.Merchants {
		pids = append(pids, pid)
	}
	sort.Strings(pids)
	for _, pid := range pids {
		m := cfg.Merchants[pid]
		name := "keys merchants." + pid
		if bad := broken.under("merchants."+pid, "payment.notify_url"); bad != "" {
			r.skip(name, bad)
			continue
		}
		one := &config.Config{DeviceID: cfg.DeviceID, Payment: cfg.Payment, Merchants: map[string]config.Merchant{pid: m}}
		ps, err := accounts.Providers(one, nil)
		if err != nil {
			r.fail(name, err.Error())
			continue
		}
		var names []string
		for n, p := range ps[pid] {
			out = append(out, account{pid, n, p})
			names = append(names, string(n))
		}
		slices.Sort(names)
		r.ok(name, strings.Join(names, ", ")+": key files parse")
	}
	if bad := broken.under("unlock.result_key_file"); bad != "" {
		r.skip("keys unlock.result_key_file", bad)
	} else if cfg.Unlock.ResultKeyFile != "" {
		k, err := config.ReadSecret("unlock.result_key_file", cfg.Unlock.ResultKeyFile)
		switch {
		case err != nil:
			r.fail("keys unlock.result_key_file", err.Error())
		case len(k) < 16:
			r.fail("keys unlock.result_key_file", fmt.Sprintf("%s: the HMAC key is only %d bytes; use at least 16 (32 recommended)", cfg.Unlock.ResultKeyFile, len(k)))
		default:
			r.ok("keys unlock.result_key_file", cfg.Unlock.ResultKeyFile)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].pid != out[j].pid {
			return out[i].pid < out[j].pid
		}
		return out[i].name < out[j].name
	})
	return out
}

// checkMQTTFiles checks the broker password and TLS files, and that the
// client certificate and key belong together.
func checkMQTTFiles(r *report, cfg *config.Config, broken brokenKeys) {
	if bad := broken.under("mqtt"); bad != "" {
		r.skip("keys mqtt", bad)
		return
	}
	if cfg.MQTT.PasswordFile != "" {
		if _, err := config.ReadSecret("mqtt.password_file", cfg.MQTT.PasswordFile); err != nil {
			r.fail("keys mqtt.password_file", err.Error())
		} else {
			r.ok("keys mqtt.password_file", cfg.MQTT.PasswordFile)
		}
	}
	if cfg.MQTT.CAFile == "" && cfg.MQTT.CertFile == "" {
		return
	}
	if _, err := mqttclient.TLSConfig(cfg.MQTT.CAFile, cfg.MQTT.CertFile, cfg.MQTT.KeyFile); err != nil {
		r.fail("keys mqtt TLS", err.Error())
		return
	}
	if cfg.MQTT.CertFile != "" {
		detail := cfg.MQTT.CertFile + " matches " + cfg.MQTT.KeyFile
		if pemText, err := os.ReadFile(cfg.MQTT.CertFile); err == nil {
			if exp, err := accounts.CertificateExpiry(string(pemText)); err == nil {
				left := time.Until(exp)
				detail += fmt.Sprintf(", valid until %s", exp.UTC().Format(time.RFC3339))
				if left < 0 {
					r.fail("keys mqtt client certificate", cfg.MQTT.CertFile+" expired at "+exp.UTC().Format(time.RFC3339))
					return
				}
				if left < 30*24*time.Hour {
					r.warn("keys mqtt client certificate", detail+" (less than 30 days left)")
					return
				}
			}
		}
		r.ok("keys mqtt client certificate", detail)
	} else {
		r.ok("keys mqtt.ca_file", cfg.MQTT.CAFile)
	}
}

func checkClock(r *report, cfg *config.Config, broken brokenKeys) {
	if bad := broken.under("clock"); bad != "" {
		r.skip("clock", bad)
		return
	}
	c, err := clock.New(cfg.Clock.SyncCheck)
	if err != nil {
		r.fail("clock", err.Error())
		return
	}
	if cfg.Clock.SyncCheck == config.SyncNone {
		r.ok("clock", "sync_check = none: the clock is trusted ("+time.Now().UTC().Format(time.RFC3339)+")")
		return
	}
	ok, err := c.Synced()
	switch {
	case err != nil:
		r.fail("clock", err.Error())
	case !ok:
		r.fail("clock", "the kernel reports the clock unsynchronised (STA_UNSYNC); orders are refused until NTP has synchronised it")
	default:
		r.ok("clock", "synchronised ("+time.Now().UTC().Format(time.RFC3339)+")")
	}
}

func checkStateDir(r *report, cfg *config.Config, broken brokenKeys) {
	if bad := broken.under("state_dir"); bad != "" {
		r.skip("state_dir", bad)
		return
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		r.fail("state_dir", err.Error())
		return
	}
	f, err := os.CreateTemp(cfg.StateDir, ".doctor-*")
	if err != nil {
		r.fail("state_dir", fmt.Sprintf("%s is not writable: %v", cfg.StateDir, errors.Unwrap(err)))
		return
	}
	name := f.Name()
	f.Close()
	os.Remove(name)
	free, err := store.FreeSpace(filepath.Join(cfg.StateDir, "orders.db"))
	switch {
	case err != nil:
		r.fail("state_dir", fmt.Sprintf("%s: free space: %v", cfg.StateDir, err))
	case free < device.DefaultMinFree:
		r.fail("state_dir", fmt.Sprintf("%s: storage full: %s free, below the %s kioskpayd needs to take orders (they are refused with STORAGE_FULL); free some space",
			cfg.StateDir, sizeText(free), sizeText(device.DefaultMinFree)))
	default:
		r.ok("state_dir", fmt.Sprintf("%s is writable, %s free", cfg.StateDir, sizeText(free)))
	}
}

// checkStore runs the store's full consistency check (every page; bbolt's
// own check) when the daemon is not running: it holds the file's lock.
func checkStore(r *report, cfg *config.Config, broken brokenKeys) {
	if bad := broken.under("state_dir"); bad != "" {
		r.skip("store", bad)
		return
	}
	path := filepath.Join(cfg.StateDir, storeFile)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		r.ok("store", path+" does not exist yet (created at the first start)")
		return
	}
	problems, err := store.Check(path)
	switch {
	case errors.Is(err, store.ErrLocked):
		r.warn("store", path+" is in use by kioskpayd: not checked (stop it and run kioskpayd recover -check)")
	case err != nil:
		r.fail("store", err.Error())
	case len(problems) > 0:
		r.fail("store", fmt.Sprintf("%s is damaged: %s (%d problems; kioskpayd recover -config FILE rebuilds it, and the daemon does so by itself at start when it finds it)",
			path, problems[0], len(problems)))
	default:
		r.ok("store", path+" passes the full consistency check")
	}
	// Size and count, read without the lock: there while the daemon runs
	// too.
	if st, err := store.Stat(path); err == nil {
		count := fmt.Sprintf("%d orders", st.Orders)
		if !st.CountKnown {
			count = "order count not recorded yet (schema 1: counted when kioskpayd next starts)"
		}
		detail := fmt.Sprintf("%s: %s (%s of pages in use), %s", path, sizeText(uint64(st.Size)), sizeText(uint64(st.InUse)), count)
		if st.CountKnown && st.Orders > 0 {
			detail += fmt.Sprintf(", %s per order", sizeText(uint64(st.InUse)/st.Orders))
		}
		r.ok("store size", detail+" (bbolt never shrinks its file: kioskpayd compact, with the daemon stopped, does)")
	}
}

// sizeText renders a byte count for people.
func sizeText(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// checkBroker connects to each configured broker with the configured
// credentials under a client id of its own (a clean session), so a running
// daemon's session and connection are left alone. Every node of a cluster
// is checked: the daemon fails over only to nodes that let it in.
func checkBroker(ctx context.Context, r *report, cfg *config.Config, broken brokenKeys) {
	if bad := broken.under("mqtt", "device_id"); bad != "" {
		r.skip("broker "+strings.Join(cfg.MQTT.Brokers(), ","), bad)
		return
	}
	o, err := assemble.LinkOptions(cfg, nil)
	if err != nil {
		r.fail("broker "+strings.Join(cfg.MQTT.Brokers(), ","), err.Error())
		return
	}
	for _, u := range o.URLs {
		checkOneBroker(ctx, r, o, u)
	}
}

func checkOneBroker(ctx context.Context, r *report, o link.Options, u string) {
	name := "broker " + u
	co := mqttclient.Config{
		Brokers: mqttclient.NewBrokers([]string{u}), ClientID: o.ClientID + "-doctor",
		Username: o.Username, Password: o.Password, TLS: o.TLS, ConnectTimeout: checkTimeout,
	}.Options().SetCleanSession(true).SetAutoReconnect(false)
	c := mqtt.NewClient(co)
	if err := mqttclient.Wait(ctx, c.Connect(), checkTimeout+time.Second); err != nil {
		c.Disconnect(0)
		r.fail(name, mqttclient.ConnectError(err).Error())
		return
	}
	c.Disconnect(100)
	who := "anonymous"
	if o.Username != "" {
		who = "as " + o.Username
	}
	if o.TLS != nil && len(o.TLS.Certificates) > 0 {
		who += " with client certificate"
	}
	r.ok(name, "connected "+who)
}

// checkProviders sends each account a signed query for an order that does
// not exist. "No such order" proves the whole path: network, TLS, our
// signature, the provider's signature over the answer, and the clock.
func checkProviders(ctx context.Context, r *report, accounts []account) {
	for _, a := range accounts {
		name := fmt.Sprintf("provider %s (%s)", a.name, a.pid)
		qctx, cancel := context.WithTimeout(ctx, checkTimeout)
		st, err := a.p.Query(qctx, doctorOrderNo)
		cancel()
		switch {
		case err == nil && st.State == payment.StateNotCreated:
			r.ok(name, "reachable; signed query answered \"no such order\"")
		case err == nil:
			r.fail(name, fmt.Sprintf("a query for a made-up order returned state %s; is this the right merchant?", st.State))
		case payment.IsRejected(err, "ORDER_NOT_EXIST") || payment.IsRejected(err, "ACQ.TRADE_NOT_EXIST"):
			r.ok(name, "reachable; signed query answered \"no such order\"")
		case payment.IsRejected(err, ""):
			r.fail(name, "the provider refused the request: "+err.Error())
		default:
			r.fail(name, "no definite answer: "+err.Error())
		}
	}
}

// checkDisplay checks that each configured output can be used.
func checkDisplay(r *report, cfg *config.Config, broken brokenKeys) {
	if bad := broken.under("display"); bad != "" {
		r.skip("display", bad)
		return
	}
	for _, o := range cfg.Display.Outputs {
		switch o {
		case config.OutputFB:
			f, err := os.OpenFile(cfg.Display.FBDevice, os.O_WRONLY, 0)
			if err != nil {
				r.fail("display fb", fmt.Sprintf("%s: %v (the daemon's user needs the video group)", cfg.Display.FBDevice, errors.Unwrap(err)))
				continue
			}
			f.Close()
			r.ok("display fb", cfg.Display.FBDevice+" is writable")
		case config.OutputPNG:
			dir := filepath.Dir(cfg.Display.PNGPath)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				r.fail("display png", err.Error())
				continue
			}
			f, err := os.CreateTemp(dir, ".doctor-*")
			if err != nil {
				r.fail("display png", fmt.Sprintf("%s is not writable: %v", dir, errors.Unwrap(err)))
				continue
			}
			n := f.Name()
			f.Close()
			os.Remove(n)
			r.ok("display png", dir+" is writable")
		case config.OutputWeb:
			ln, err := net.Listen("tcp", cfg.Display.WebListen)
			if errors.Is(err, syscall.EADDRINUSE) {
				r.warn("display web", cfg.Display.WebListen+" is in use (expected while kioskpayd runs)")
				continue
			}
			if err != nil {
				r.fail("display web", err.Error())
				continue
			}
			ln.Close()
			r.ok("display web", cfg.Display.WebListen+" can be listened on")
		case config.OutputTTY:
			r.ok("display tty", "standard output")
		}
	}
	if cfg.Display.FontFile != "" {
		if _, err := os.Stat(cfg.Display.FontFile); err != nil {
			r.fail("display font_file", err.Error())
		} else {
			r.ok("display font_file", cfg.Display.FontFile)
		}
	}
}

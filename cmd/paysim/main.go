// Command paysim serves simulated Alipay and WeChat Pay APIs (docs/contract.md §7) so
// kioskpayd can run end to end without a merchant account:
//
//	paysim -listen 127.0.0.1:9000 -keys DIR
//
// On first start it generates the merchant and provider keys and keeps them
// in DIR/paysim-keys.json; later starts load that file, so a daemon
// configured from an earlier run keeps working across simulator restarts.
// Every start (re)writes the daemon's key files and DIR/kioskpayd.toml
// pointing at the current listen address. Simulated orders live in memory
// only and are gone after a restart.
//
// The simulator behaves like the real services by default; the realism
// flags tune or switch off what a test or demo needs otherwise (see
// payment/paysim's package documentation):
//
//	-refund-delay 1s-10s       WeChat refunds PROCESSING → SUCCESS by themselves ("never", "2s", "0s-1s")
//	-refund-window 8760h       Alipay TRADE_SUCCESS → TRADE_FINISHED (0 = never)
//	-alipay-zero-amounts=true  query answers carry "0.00" receipt/buyer/invoice amounts (=false: filled)
//	-strict-refund-total=true  WeChat refunds must name the provider-side total (=false: lenient)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kioskpay/kioskpay/internal/cli"
	"github.com/kioskpay/kioskpay/payment/paysim"
	"github.com/kioskpay/kioskpay/payment/paysim/alisim"
	"github.com/kioskpay/kioskpay/payment/paysim/wxsim"
)

var errUsage = errors.New("usage")

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

const help = `paysim serves simulated WeChat Pay (APIv3) and Alipay (OpenAPI) endpoints with test
hooks, and writes the keys and config a kioskpayd needs to use them.

Usage:
  paysim -keys DIR [-listen ADDR] [flags]

Flags:
%s
Exit codes: 0 clean stop (SIGTERM/SIGINT), 1 fatal error, 2 bad usage.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, nil)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "paysim:", err)
		os.Exit(1)
	}
}

// run is main without the process: it serves until ctx is done. ready, if
// not nil, is called with the base URL once the listener is up and the files
// are written.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, ready func(baseURL string)) error {
	fs := flag.NewFlagSet("paysim", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:9000", "address to serve both provider APIs on")
	keysDir := fs.String("keys", "", "directory for key files and kioskpayd.toml (required)")
	baseFlag := fs.String("base-url", "", "URL the daemon reaches this simulator at (default http://<listen address>)")
	hold := fs.Duration("timeout-hold", paysim.DefaultTimeoutHold, "how long a \"timeout\" fault holds a request")
	verbose := fs.Bool("v", false, "log every API call and notification attempt (debug level)")
	realism := paysim.DefaultRealism()
	fs.Var(refundDelayFlag{&realism}, "refund-delay", "how long WeChat refunds stay PROCESSING before they succeed by themselves: MIN-MAX, a fixed duration, or never")
	fs.DurationVar(&realism.AlipayRefundWindow, "refund-window", realism.AlipayRefundWindow, "how long a paid Alipay trade stays refundable before TRADE_FINISHED (0 = forever)")
	fs.BoolVar(&realism.AlipayZeroQueryAmounts, "alipay-zero-amounts", realism.AlipayZeroQueryAmounts, "answer alipay.trade.query with \"0.00\" buyer_pay_amount, invoice_amount and receipt_amount, as most real answers do (=false: filled amounts)")
	fs.BoolVar(&realism.WxStrictRefundTotal, "strict-refund-total", realism.WxStrictRefundTotal, "refuse WeChat refunds whose amount.total is not the provider-side order total, as WeChat does (=false: lenient)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if code, done := cli.Parse(fs, args, fmt.Sprintf(help, cli.Flags(fs)), false, stdout, stderr); done {
		if code == cli.ExitOK {
			return flag.ErrHelp
		}
		return errUsage
	}
	if *showVersion {
		fmt.Fprintln(stdout, "paysim", cli.Version(version))
		return nil
	}
	if *keysDir == "" {
		cli.Usagef(stderr, "paysim", "-keys DIR is required")
		return errUsage
	}
	if err := realism.Validate(); err != nil {
		fmt.Fprintln(stderr, err)
		return errUsage
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	// The simulator logs API calls at debug level; only -v shows them.
	simLevel := slog.LevelInfo
	if *verbose {
		simLevel = slog.LevelDebug
	}
	simLog := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: simLevel}))

	keys, loaded, err := loadOrGenerateKeys(*keysDir)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	baseURL := *baseFlag
	if baseURL == "" {
		baseURL = "http://" + advertised(ln.Addr().(*net.TCPAddr))
	}
	cfgPath, err := keys.WriteDaemonFiles(*keysDir, baseURL)
	if err != nil {
		return err
	}

	sim, err := paysim.New(paysim.Options{Keys: keys, Logger: simLog, TimeoutHold: *hold, Realism: &realism})
	if err != nil {
		return err
	}
	wxsim.Register(sim)
	alisim.Register(sim)
	defer sim.Close()
	srv := &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}

	how := "generated"
	if loaded {
		how = "loaded"
	}
	abs, _ := filepath.Abs(*keysDir)
	fmt.Fprintf(stdout, `paysim serving %[1]s
  Alipay gateway    %[1]s/gateway.do
  WeChat Pay APIv3  %[1]s/v3/
keys %s in %s (simulator keys: paysim-keys.json)
daemon config     %s
  run: kioskpayd -config %[4]s
realism: %[5]s
hooks:
  POST   %[1]s/_sim/scan             {"out_trade_no","provider"?}
  POST   %[1]s/_sim/pay              {"provider":"wxpay|alipay","out_trade_no","amount"?,"discount"?,"discount_by"?:"%[6]s"}
  POST   %[1]s/_sim/refund-complete  {"provider","out_refund_no"}
  POST   %[1]s/_sim/refund-fail      {"provider":"wxpay","out_refund_no","status":"%[7]s"}
  POST   %[1]s/_sim/fault            {"provider"?,"api"?,"kind":"%[8]s","rate"?,"count"?}
  DELETE %[1]s/_sim/fault
  GET    %[1]s/_sim/stats
  GET    %[1]s/_sim/orders
`, baseURL, how, abs, cfgPath, describeRealism(realism),
		alternatives(paysim.DiscountPlatform, paysim.DiscountMerchant), alternatives(paysim.RefundAbnormal, paysim.RefundClosed),
		alternatives(paysim.FaultKinds()...))
	log.Info("paysim started", "addr", ln.Addr().String(), "keys", how)
	if ready != nil {
		ready(baseURL)
	}

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sim.Close() // releases requests held by a timeout fault
	if err := srv.Shutdown(shutdown); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("paysim stopped")
	return nil
}

// alternatives joins a hook field's values as the usage text shows them:
// "platform|merchant".
func alternatives[T ~string](values ...T) string {
	s := make([]string, len(values))
	for i, v := range values {
		s[i] = string(v)
	}
	return strings.Join(s, "|")
}

// advertised is the host:port a local daemon should use for addr: a
// wildcard listen address (dual-stack on Linux) is reached through
// 127.0.0.1.
func advertised(addr *net.TCPAddr) string {
	ip := addr.IP
	if ip == nil || ip.IsUnspecified() {
		ip = net.IPv4(127, 0, 0, 1)
	}
	return net.JoinHostPort(ip.String(), fmt.Sprint(addr.Port))
}

// refundDelayFlag sets Realism.WxRefundMin and WxRefundMax from "MIN-MAX",
// one duration, or "never".
type refundDelayFlag struct{ r *paysim.Realism }

func (f refundDelayFlag) String() string {
	if f.r == nil {
		return ""
	}
	if f.r.WxRefundMax == paysim.Never {
		return "never"
	}
	return f.r.WxRefundMin.String() + "-" + f.r.WxRefundMax.String()
}

func (f refundDelayFlag) Set(v string) error {
	if v == "never" {
		f.r.WxRefundMax = paysim.Never
		return nil
	}
	lo, hi, isRange := strings.Cut(v, "-")
	from, err := time.ParseDuration(lo)
	if err != nil {
		return fmt.Errorf("want MIN-MAX (e.g. 1s-10s), a duration, or never: %w", err)
	}
	to := from
	if isRange {
		if to, err = time.ParseDuration(hi); err != nil {
			return fmt.Errorf("want MIN-MAX (e.g. 1s-10s), a duration, or never: %w", err)
		}
	}
	f.r.WxRefundMin, f.r.WxRefundMax = from, to
	return nil
}

// describeRealism is the startup line that says how the simulator behaves.
func describeRealism(r paysim.Realism) string {
	refunds := "WeChat refunds complete after " + refundDelayFlag{&r}.String()
	if r.WxRefundMax == paysim.Never {
		refunds = "WeChat refunds stay PROCESSING until /_sim/refund-complete"
	}
	window := "Alipay trades finish " + r.AlipayRefundWindow.String() + " after payment"
	if r.AlipayRefundWindow == 0 {
		window = "Alipay trades never finish"
	}
	amounts := "Alipay query amounts filled"
	if r.AlipayZeroQueryAmounts {
		amounts = `Alipay query amounts "0.00"`
	}
	total := "lenient"
	if r.WxStrictRefundTotal {
		total = "strict"
	}
	return fmt.Sprintf("%s; %s; %s; WeChat refund total %s", refunds, window, amounts, total)
}

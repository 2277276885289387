// Command paysim serves simulated Alipay and WeChat Pay APIs (SPEC §6) so
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
	"syscall"
	"time"

	"github.com/kioskpay/kioskpay/payment/paysim"
)

var errUsage = errors.New("usage")

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
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:9000", "address to serve both provider APIs on")
	keysDir := fs.String("keys", "", "directory for key files and kioskpayd.toml (required)")
	baseFlag := fs.String("base-url", "", "URL the daemon reaches this simulator at (default http://<listen address>)")
	hold := fs.Duration("timeout-hold", 30*time.Second, "how long a \"timeout\" fault holds a request")
	verbose := fs.Bool("v", false, "log every API call")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: paysim -listen ADDR -keys DIR [-base-url URL] [-timeout-hold D] [-v]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if *keysDir == "" || fs.NArg() > 0 {
		fs.Usage()
		return errUsage
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	// The simulator logs one line per API call at Info; only -v shows them.
	simLevel := slog.LevelWarn
	if *verbose {
		simLevel = slog.LevelInfo
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

	sim, err := paysim.New(paysim.Options{Keys: keys, Logger: simLog, TimeoutHold: *hold})
	if err != nil {
		return err
	}
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
hooks:
  POST   %[1]s/_sim/scan             {"out_trade_no"}
  POST   %[1]s/_sim/pay              {"provider":"wxpay|alipay","out_trade_no","amount"?}
  POST   %[1]s/_sim/refund-complete  {"provider","out_refund_no"}
  POST   %[1]s/_sim/fault            {"provider"?,"api"?,"kind":"5xx|timeout|bad_sign|stale_ts|rate_limit","rate"?,"count"?}
  DELETE %[1]s/_sim/fault
  GET    %[1]s/_sim/stats
  GET    %[1]s/_sim/orders
`, baseURL, how, abs, cfgPath)
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

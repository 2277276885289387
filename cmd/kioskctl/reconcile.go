package main

import (
	"context"
	"flag"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/kioskpay/kioskpay/contract"
)

// ReconcileCommand has a device compare its orders with the providers'.
type ReconcileCommand struct{}

const reconcileUsage = `Usage: kioskctl reconcile -device ID [-since T]

Asks the device to query the provider for every order since T and to report
where its own record disagrees (e.g. paid at the provider, expired locally).
Exit 0 when all agree, 3 when there are mismatches, 1 on error.

Flags:
	-device ID    device_id (required)
	-since T      RFC 3339 time or a duration back from now, e.g. 72h (default 24h)

The device queries each order in turn, so the default -timeout is 2m here.
`

// Usage implements command.
func (c *ReconcileCommand) Usage() string {
	return reconcileUsage + "\nGlobal flags:\n" + globalFlagsUsage
}

// Run implements command.
func (c *ReconcileCommand) Run(ctx context.Context, g *Globals, args []string) error {
	fs := flag.NewFlagSet("reconcile", flag.ContinueOnError)
	var dev, sinceFlag string
	fs.StringVar(&dev, "device", "", "")
	fs.StringVar(&sinceFlag, "since", "", "")
	if err := g.parse(fs, c.Usage(), args); err != nil {
		return err
	}
	if err := requireDevice(dev); err != nil {
		return err
	}
	since, err := parseSince(sinceFlag, time.Now())
	if err != nil {
		return err
	}
	if !g.timeoutSet {
		g.Timeout = 2 * time.Minute
	}
	req := contract.ReconcilePayload{RequestID: newRequestID()}
	if !since.IsZero() {
		req.Since = since.Format(time.RFC3339)
	}
	raw, err := roundTrip(ctx, g, dev, contract.TopicReconcile, req.RequestID, req)
	if err != nil {
		return err
	}
	r, err := decodeReply[contract.ReconcileReply](dev, raw)
	if err != nil {
		return err
	}
	if !g.JSON() {
		fmt.Fprintf(g.Stdout, "checked %s (%s), %s\n", count(r.Checked, "order"), count(r.ProviderOrders, "provider order"), count(len(r.Mismatches), "mismatch"))
		if len(r.Mismatches) > 0 {
			w := tabwriter.NewWriter(g.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "OUT_TRADE_NO\tLOCAL\tPROVIDER_STATE\tPROVIDER\tDETAIL")
			for _, m := range r.Mismatches {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", m.OutTradeNo, m.LocalState, m.ProviderState, m.Provider, m.Detail)
			}
			w.Flush()
		}
	}
	if len(r.Mismatches) > 0 {
		orders := map[string]bool{}
		for _, m := range r.Mismatches {
			orders[m.OutTradeNo] = true
		}
		return &exitError{code: ExitNotPaid, err: fmt.Errorf("%s of %s disagree with the provider", count(len(orders), "order"), dev)}
	}
	return nil
}

// parseSince accepts an RFC 3339 time or a duration back from now; "" means
// the device's default window.
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, usagef("-since %q: want an RFC 3339 time (2025-01-02T15:04:05+08:00) or a duration such as 72h", s)
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"text/tabwriter"
)

// SimCommand drives a paysim simulator through its /_sim/ hooks: the
// buyer's side of a payment, and provider faults, for tests and demos.
type SimCommand struct{}

const simUsage = `Usage: kioskctl sim [-sim URL] <action> [flags]

Actions:
	pay -provider wxpay|alipay -out-trade-no N [-discount FEN [-discount-by platform|merchant]] [-amount FEN]
	                 the buyer pays; notifications follow. -discount lowers what the
	                 buyer pays (a coupon, funded by the platform or by the merchant);
	                 -amount is the order total the provider records (default the
	                 order's; another value simulates an out_trade_no collision)
	scan -out-trade-no N [-provider P]
	                 the buyer scans the code: an Alipay trade now exists, a WeChat
	                 order is USERPAYING (default: every provider that has the order)
	refund-complete -provider P -out-refund-no R
	                 a processing refund succeeds now (WeChat refunds also succeed
	                 by themselves after a few seconds unless paysim runs with
	                 -refund-delay never)
	refund-fail -provider wxpay -out-refund-no R -status ABNORMAL|CLOSED
	                 a processing WeChat refund fails; REFUND.ABNORMAL or
	                 REFUND.CLOSED is notified
	fault -kind K [-provider P] [-api A] [-rate R] [-count N]
	                 inject a fault for a share (-rate 0..1) or the next N calls (-count);
	                 K: 5xx, timeout, bad_sign, stale_ts, rate_limit, 202 (WeChat
	                 "accepted, repeat"), 20000 (Alipay unavailable), system_error
	                 (Alipay ACQ.SYSTEM_ERROR after processing)
	fault -clear     remove every fault
	orders           list the simulator's orders
	stats            calls per API

Flags:
	-sim URL         the simulator (default http://127.0.0.1:9000; env KIOSKCTL_SIM)
`

// Usage implements command.
func (c *SimCommand) Usage() string { return simUsage + "\nGlobal flags:\n" + globalFlagsUsage }

// Run implements command.
func (c *SimCommand) Run(ctx context.Context, g *Globals, args []string) error {
	sim := g.Getenv("KIOSKCTL_SIM")
	if sim == "" {
		sim = "http://127.0.0.1:9000"
	}
	// Flags may come before the action as well as after it
	// ("sim -sim URL pay …" and "sim pay -sim URL …"): the leading ones are
	// parsed first and kept as defaults for the action's flag set.
	pre := flag.NewFlagSet("sim", flag.ContinueOnError)
	pre.StringVar(&sim, "sim", sim, "")
	if err := g.parseLeading(pre, c.Usage(), args); err != nil {
		return err
	}
	if pre.NArg() == 0 {
		return usagef("sim needs an action: pay, scan, refund-complete, refund-fail, fault, orders or stats")
	}
	action, args := pre.Arg(0), pre.Args()[1:]
	fs := flag.NewFlagSet("sim "+action, flag.ContinueOnError)
	fs.StringVar(&sim, "sim", sim, "")
	var provider, outTradeNo, outRefundNo, kind, api, discountBy, status string
	var amount, discount int64
	var rate float64
	var count int
	var clear bool
	var method, path string
	var body any
	switch action {
	case "pay":
		fs.StringVar(&provider, "provider", "", "")
		fs.StringVar(&outTradeNo, "out-trade-no", "", "")
		fs.Int64Var(&amount, "amount", 0, "")
		fs.Int64Var(&discount, "discount", 0, "")
		fs.StringVar(&discountBy, "discount-by", "", "")
	case "scan":
		fs.StringVar(&outTradeNo, "out-trade-no", "", "")
		fs.StringVar(&provider, "provider", "", "")
	case "refund-complete":
		fs.StringVar(&provider, "provider", "", "")
		fs.StringVar(&outRefundNo, "out-refund-no", "", "")
	case "refund-fail":
		fs.StringVar(&provider, "provider", "", "")
		fs.StringVar(&outRefundNo, "out-refund-no", "", "")
		fs.StringVar(&status, "status", "", "")
	case "fault":
		fs.StringVar(&provider, "provider", "", "")
		fs.StringVar(&kind, "kind", "", "")
		fs.StringVar(&api, "api", "", "")
		fs.Float64Var(&rate, "rate", 0, "")
		fs.IntVar(&count, "count", 0, "")
		fs.BoolVar(&clear, "clear", false, "")
	case "orders", "stats":
	default:
		return usagef("unknown sim action %q: want pay, scan, refund-complete, refund-fail, fault, orders or stats", action)
	}
	if err := g.parse(fs, c.Usage(), args); err != nil {
		return err
	}
	checkProvider := func() error {
		if provider != "wxpay" && provider != "alipay" {
			return usagef("-provider is required: wxpay or alipay")
		}
		return nil
	}
	switch action {
	case "pay":
		if err := checkProvider(); err != nil {
			return err
		}
		if outTradeNo == "" {
			return usagef("-out-trade-no is required")
		}
		if amount < 0 {
			return usagef("-amount must be positive fen")
		}
		if discount < 0 {
			return usagef("-discount must be ≥ 0 fen")
		}
		if discountBy != "" && discountBy != "platform" && discountBy != "merchant" {
			return usagef("-discount-by %q: want platform or merchant", discountBy)
		}
		if discountBy != "" && discount == 0 {
			return usagef("-discount-by needs -discount")
		}
		in := map[string]any{"provider": provider, "out_trade_no": outTradeNo}
		if amount > 0 {
			in["amount"] = amount
		}
		if discount > 0 {
			in["discount"] = discount
		}
		if discountBy != "" {
			in["discount_by"] = discountBy
		}
		method, path, body = http.MethodPost, "/_sim/pay", in
	case "scan":
		if outTradeNo == "" {
			return usagef("-out-trade-no is required")
		}
		in := map[string]any{"out_trade_no": outTradeNo}
		if provider != "" {
			if err := checkProvider(); err != nil {
				return err
			}
			in["provider"] = provider
		}
		method, path, body = http.MethodPost, "/_sim/scan", in
	case "refund-complete":
		if err := checkProvider(); err != nil {
			return err
		}
		if outRefundNo == "" {
			return usagef("-out-refund-no is required")
		}
		method, path, body = http.MethodPost, "/_sim/refund-complete", map[string]any{"provider": provider, "out_refund_no": outRefundNo}
	case "refund-fail":
		if err := checkProvider(); err != nil {
			return err
		}
		if outRefundNo == "" {
			return usagef("-out-refund-no is required")
		}
		if status != "ABNORMAL" && status != "CLOSED" {
			return usagef("-status is required: ABNORMAL or CLOSED")
		}
		method, path, body = http.MethodPost, "/_sim/refund-fail", map[string]any{"provider": provider, "out_refund_no": outRefundNo, "status": status}
	case "fault":
		if clear {
			method, path = http.MethodDelete, "/_sim/fault"
			break
		}
		if kind == "" {
			return usagef("-kind is required (5xx, timeout, bad_sign, stale_ts, rate_limit, 202, 20000, system_error), or -clear")
		}
		if provider != "" {
			if err := checkProvider(); err != nil {
				return err
			}
		}
		in := map[string]any{"kind": kind}
		for k, v := range map[string]any{"provider": provider, "api": api} {
			if v != "" {
				in[k] = v
			}
		}
		if rate != 0 {
			in["rate"] = rate
		}
		if count != 0 {
			in["count"] = count
		}
		method, path, body = http.MethodPost, "/_sim/fault", in
	case "orders":
		method, path = http.MethodGet, "/_sim/orders"
	case "stats":
		method, path = http.MethodGet, "/_sim/stats"
	}
	out, err := simCall(ctx, g, sim, method, path, body)
	if err != nil {
		return err
	}
	if g.JSON() {
		return g.printJSON(json.RawMessage(out))
	}
	switch action {
	case "orders":
		return printSimOrders(g, out)
	case "stats":
		return printSimStats(g, out)
	case "fault":
		if clear {
			fmt.Fprintln(g.Stdout, "faults cleared")
		} else {
			fmt.Fprintf(g.Stdout, "fault %s injected\n", kind)
		}
	default:
		fmt.Fprintln(g.Stdout, "ok")
	}
	return nil
}

// simCall sends one hook request and returns the response body; a non-2xx
// answer becomes an error carrying the simulator's message.
func simCall(ctx context.Context, g *Globals, base, method, path string, in any) ([]byte, error) {
	var rd io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, g.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(base, "/")+path, rd)
	if err != nil {
		return nil, usagef("-sim %q: %v", base, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("paysim at %s: %w (is it running? start it with 'paysim -listen 127.0.0.1:9000 -keys DIR')", base, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, fmt.Errorf("paysim %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(out, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("paysim refused (%s): %s", resp.Status, e.Error)
		}
		return nil, fmt.Errorf("paysim %s %s: %s", method, path, resp.Status)
	}
	return out, nil
}

func printSimOrders(g *Globals, out []byte) error {
	var orders []struct {
		Provider      string `json:"provider"`
		OutTradeNo    string `json:"out_trade_no"`
		State         string `json:"state"`
		Total         int64  `json:"total"`
		Paid          int64  `json:"paid"`
		Received      int64  `json:"received"`
		Refunded      int64  `json:"refunded"`
		TransactionID string `json:"transaction_id"`
	}
	if err := json.Unmarshal(out, &orders); err != nil {
		return fmt.Errorf("paysim orders: %w", err)
	}
	w := tabwriter.NewWriter(g.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "PROVIDER\tOUT_TRADE_NO\tSTATE\tTOTAL\tPAID\tRECEIVED\tREFUNDED\tTRANSACTION")
	for _, o := range orders {
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", o.Provider, o.OutTradeNo, o.State, o.Total, o.Paid, o.Received, o.Refunded, dash(o.TransactionID))
	}
	return w.Flush()
}

func printSimStats(g *Globals, out []byte) error {
	var stats map[string]int
	if err := json.Unmarshal(out, &stats); err != nil {
		return fmt.Errorf("paysim stats: %w", err)
	}
	keys := make([]string, 0, len(stats))
	for k := range stats {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	w := tabwriter.NewWriter(g.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "API\tCALLS")
	for _, k := range keys {
		fmt.Fprintf(w, "%s\t%d\n", k, stats[k])
	}
	return w.Flush()
}

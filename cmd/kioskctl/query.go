package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"text/tabwriter"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/payment"
)

// QueryCommand asks a device for one order's current state.
type QueryCommand struct{}

const queryUsage = `Usage: kioskctl query -device ID -out-trade-no N

Prints the device's record of the order: state, seed status, amounts,
provider, transaction id.

Flags:
	-device ID          device_id (required)
	-out-trade-no N     the order (required)
`

// Usage implements command.
func (c *QueryCommand) Usage() string { return queryUsage + "\nGlobal flags:\n" + globalFlagsUsage }

// Run implements command.
func (c *QueryCommand) Run(ctx context.Context, g *Globals, args []string) error {
	dev, no, err := parseOrderFlags(g, "query", c.Usage(), args, nil)
	if err != nil {
		return err
	}
	req := contract.OrderPayload{RequestID: newRequestID(), OutTradeNo: no}
	raw, err := roundTrip(ctx, g, dev, contract.TopicQuery, req.RequestID, req)
	if err != nil || g.JSON() {
		return err
	}
	r, err := decodeReply[contract.QueryReply](dev, raw)
	if err != nil {
		return err
	}
	printOrder(g, r.OrderSummary)
	return nil
}

func printOrder(g *Globals, o contract.OrderSummary) {
	w := tabwriter.NewWriter(g.Stdout, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(w, "%s\t%s\n", k, v)
		}
	}
	row("out_trade_no", o.OutTradeNo)
	row("state", fmt.Sprintf("%s (status %d)", o.State, o.Status))
	row("total_fee", o.TotalFee.String())
	if o.PaidFee != 0 {
		row("paid_fee", o.PaidFee.String())
	}
	if o.RefundedFee != 0 {
		row("refunded_fee", o.RefundedFee.String())
	}
	row("pay_type", o.PayType)
	row("provider", o.Provider)
	row("type", o.Type)
	row("transaction_id", o.TransactionID)
	row("created_at", o.CreatedAt)
	row("updated_at", o.UpdatedAt)
	row("expires_at", o.ExpiresAt)
	row("paid_at", o.PaidAt)
	if len(o.Flags) > 0 {
		row("flags", fmt.Sprint(o.Flags))
	}
	w.Flush()
}

// parseOrderFlags parses the flags of a command about one order: -device and
// -out-trade-no, both required, and those extra declares.
func parseOrderFlags(g *Globals, name, usage string, args []string, extra func(*flag.FlagSet)) (dev, no string, err error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&dev, "device", "", "")
	fs.StringVar(&no, "out-trade-no", "", "")
	if extra != nil {
		extra(fs)
	}
	if err := g.parse(fs, usage, args); err != nil {
		return "", "", err
	}
	if err := checkOrderFlags(dev, no); err != nil {
		return "", "", err
	}
	return dev, no, nil
}

func checkOrderFlags(dev, outTradeNo string) error {
	if err := requireDevice(dev); err != nil {
		return err
	}
	if outTradeNo == "" {
		return usagef("-out-trade-no is required")
	}
	if !payment.ValidOutTradeNo(outTradeNo) {
		return usagef("-out-trade-no %q: want 6-32 characters of A-Z a-z 0-9 _", outTradeNo)
	}
	return nil
}

// roundTrip sends one request and waits for its reply. In JSON mode it
// prints the reply as received; a refusal is an error either way.
func roundTrip(ctx context.Context, g *Globals, dev, suffix, requestID string, req any) ([]byte, error) {
	conn, err := g.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	raw, err := conn.request(ctx, dev, suffix, requestID, req, g.Timeout)
	if err != nil {
		return nil, err
	}
	head, err := decodeReply[contract.Reply](dev, raw)
	if err != nil {
		return nil, err
	}
	if g.JSON() {
		if err := g.printJSON(json.RawMessage(raw)); err != nil {
			return nil, err
		}
	}
	if err := refusal(head, dev); err != nil {
		return nil, err
	}
	return raw, nil
}

// decodeReply decodes a reply of device dev.
func decodeReply[R any](dev string, raw []byte) (R, error) {
	var r R
	if err := json.Unmarshal(raw, &r); err != nil {
		return r, fmt.Errorf("device %s sent an unreadable reply: %w", dev, err)
	}
	return r, nil
}

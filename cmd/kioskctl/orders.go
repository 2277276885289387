package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/kioskpay/kioskpay/contract"
)

// OrdersCommand lists a device's orders, newest first, following the
// device's paging cursor.
type OrdersCommand struct{}

const ordersUsage = `Usage: kioskctl orders -device ID [-state S] [-flag F] [-limit N]

Lists the device's orders, newest first, as a table (or -o json).

Flags:
	-device ID    device_id (required)
	-state S      only orders in this state: ` + "pending, paid, delivered, expired, cancelled, refunding, refunded, …" + `
	-flag F       only orders flagged F, e.g. refund_stuck, close_stuck, refund_abnormal,
	              refund_closed, amount_mismatch (with -state refunding: the ones still open)
	-limit N      at most N orders (default 50; 0 = all)
`

// Usage implements command.
func (c *OrdersCommand) Usage() string { return ordersUsage + "\nGlobal flags:\n" + globalFlagsUsage }

// Run implements command.
func (c *OrdersCommand) Run(ctx context.Context, g *Globals, args []string) error {
	fs := flag.NewFlagSet("orders", flag.ContinueOnError)
	var dev, state, flagName string
	limit := contract.DefaultOrdersLimit
	fs.StringVar(&dev, "device", "", "")
	fs.StringVar(&state, "state", "", "")
	fs.StringVar(&flagName, "flag", "", "")
	fs.IntVar(&limit, "limit", limit, "")
	if err := g.parse(fs, c.Usage(), args); err != nil {
		return err
	}
	if err := requireDevice(dev); err != nil {
		return err
	}
	if state != "" && !slices.Contains(contract.OrderStates, state) {
		return usagef("-state %q: want one of %s", state, strings.Join(contract.OrderStates, ", "))
	}
	if flagName != "" && !slices.Contains(contract.Flags, flagName) {
		return usagef("-flag %q: want one of %s", flagName, strings.Join(contract.Flags, ", "))
	}
	if limit < 0 {
		return usagef("-limit %d: want 0 (all) or more", limit)
	}
	conn, err := g.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	replies, err := conn.Subscribe(ctx, g.topic(dev, contract.TopicReply))
	if err != nil {
		return err
	}
	orders := []contract.OrderSummary{}
	after := ""
	for limit == 0 || len(orders) < limit {
		page := contract.MaxOrdersLimit
		if limit > 0 {
			page = min(page, limit-len(orders))
		}
		req := contract.OrdersPayload{RequestID: newRequestID(), State: state, Flag: flagName, Limit: page, After: after}
		body, _ := json.Marshal(req)
		if err := conn.Publish(ctx, g.topic(dev, contract.TopicOrders), body); err != nil {
			return err
		}
		raw, err := awaitReply(ctx, replies, dev, req.RequestID, g.Timeout)
		if err != nil {
			return err
		}
		r, err := decodeReply[contract.OrdersReply](dev, raw)
		if err != nil {
			return err
		}
		if err := refusal(r.Reply, dev); err != nil {
			return err
		}
		orders = append(orders, r.Orders...)
		// A cursor that does not move would loop forever.
		if r.Next == "" || r.Next == after || len(r.Orders) == 0 {
			break
		}
		after = r.Next
	}
	if limit > 0 && len(orders) > limit {
		orders = orders[:limit]
	}
	if g.JSON() {
		return g.printJSON(struct {
			Device string                  `json:"device"`
			Orders []contract.OrderSummary `json:"orders"`
		}{dev, orders})
	}
	if len(orders) == 0 {
		fmt.Fprintf(g.Stderr, "device %s has no orders%s%s\n", dev, map[bool]string{true: " in state " + state}[state != ""],
			map[bool]string{true: " flagged " + flagName}[flagName != ""])
		return nil
	}
	w := tabwriter.NewWriter(g.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "OUT_TRADE_NO\tSTATE\tSTATUS\tFEE\tPROVIDER\tCREATED\tTRANSACTION")
	for _, o := range orders {
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", o.OutTradeNo, o.State, o.Status, o.TotalFee, dash(o.Provider), o.CreatedAt, dash(o.TransactionID))
	}
	w.Flush()
	return nil
}

package main

import (
	"context"
	"fmt"

	"github.com/kioskpay/kioskpay/contract"
)

// CancelCommand cancels a pending order: the QR code is withdrawn and the
// order closed at the provider.
type CancelCommand struct{}

const cancelUsage = `Usage: kioskctl cancel -device ID -out-trade-no N

Asks the device to cancel a pending order (the customer walked away). A
payment that raced the cancel still counts and is reported as paid.

Flags:
	-device ID          device_id (required)
	-out-trade-no N     the order (required)
`

// Usage implements command.
func (c *CancelCommand) Usage() string { return cancelUsage + "\nGlobal flags:\n" + globalFlagsUsage }

// Run implements command.
func (c *CancelCommand) Run(ctx context.Context, g *Globals, args []string) error {
	dev, no, err := parseOrderFlags(g, "cancel", c.Usage(), args, nil)
	if err != nil {
		return err
	}
	key, err := g.signKey()
	if err != nil {
		return err
	}
	req := contract.OrderPayload{RequestID: newRequestID(), OutTradeNo: no}
	req.TS, req.Sig = signed(key, func(key []byte, ts int64) string { return contract.SignCancel(key, no, ts) })
	raw, err := roundTrip(ctx, g, dev, contract.TopicCancel, req.RequestID, req)
	if err != nil {
		return err
	}
	if !g.JSON() {
		fmt.Fprintf(g.Stdout, "%s: %s\n", no, replyMsg(raw, "cancel requested"))
	}
	return nil
}

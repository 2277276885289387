package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/display/termqr"
	"github.com/kioskpay/kioskpay/payment"
)

// PayCommand places an order on a device, shows its QR code in the terminal
// and waits for the result: the whole customer flow from the operator's
// seat.
type PayCommand struct{}

const payUsage = `Usage: kioskctl pay -device ID -fee FEN -subject TEXT [flags]

Publishes a create request to <prefix>/<ID>/pay/create, prints the QR code(s)
in the terminal, then waits for the order's result on <prefix>/<ID>/pay/result.
Exit 0 paid, 3 expired/cancelled/refunded, 1 error.

Flags:
	-device ID         device_id of the device (required)
	-fee FEN           amount in fen, e.g. 1000 for ¥10.00 (required)
	-subject TEXT      what the customer pays for (required)
	-type T            order type ([a-z0-9_]{1,32}), checked against the device's catalog
	                   (default "kioskctl")
	-provider P        wxpay, alipay or any (both codes); default: the device's payment.provider
	-out-trade-no N    order number (6-32 of A-Z a-z 0-9 _); generated when absent
	-custom JSON       object echoed back in the result, e.g. '{"seat":3}'
	-pid PID           merchant account (default: the device's "default")
	-expire D          QR lifetime, 1m..2h (default: the device's payment.expire)
	-ack               acknowledge a paid result as delivered (ok=true), as a controller would
	-wait D            how long to wait for the result (default: until the order expires, plus 2m)
	-invert            draw the QR code for dark-on-light terminals
	-no-qr             do not draw the QR code (print its content only)
`

// Usage implements command.
func (c *PayCommand) Usage() string { return payUsage + "\nGlobal flags:\n" + globalFlagsUsage }

// Run implements command.
func (c *PayCommand) Run(ctx context.Context, g *Globals, args []string) error {
	fs := flag.NewFlagSet("pay", flag.ContinueOnError)
	var (
		dev, subject, typ, provider, outTradeNo, custom, pid string
		fee                                                  int64
		expire, waitFor                                      time.Duration
		ack, invert, noQR                                    bool
	)
	fs.StringVar(&dev, "device", "", "")
	fs.Int64Var(&fee, "fee", 0, "")
	fs.StringVar(&subject, "subject", "", "")
	fs.StringVar(&typ, "type", "kioskctl", "")
	fs.StringVar(&provider, "provider", "", "")
	fs.StringVar(&outTradeNo, "out-trade-no", "", "")
	fs.StringVar(&custom, "custom", "", "")
	fs.StringVar(&pid, "pid", "", "")
	fs.DurationVar(&expire, "expire", 0, "")
	fs.DurationVar(&waitFor, "wait", 0, "")
	fs.BoolVar(&ack, "ack", false, "")
	fs.BoolVar(&invert, "invert", false, "")
	fs.BoolVar(&noQR, "no-qr", false, "")
	if err := g.parse(fs, c.Usage(), args); err != nil {
		return err
	}
	if err := requireDevice(dev); err != nil {
		return err
	}
	if fee <= 0 {
		return usagef("-fee is required: a positive amount in fen (1000 = ¥10.00)")
	}
	if subject == "" {
		return usagef("-subject is required")
	}
	switch provider {
	case "", "any", "wxpay", "alipay":
	default:
		return usagef("-provider %q: want wxpay, alipay or any", provider)
	}
	if outTradeNo == "" {
		outTradeNo = newOutTradeNo(time.Now())
	} else if !payment.ValidOutTradeNo(outTradeNo) {
		return usagef("-out-trade-no %q: want 6-32 characters of A-Z a-z 0-9 _", outTradeNo)
	}
	if expire != 0 && (expire < contract.MinExpire || expire > contract.MaxExpire) {
		return usagef("-expire %v: want 1m..2h", expire)
	}
	if custom != "" {
		var obj map[string]any
		if err := json.Unmarshal([]byte(custom), &obj); err != nil || obj == nil {
			return usagef("-custom must be a JSON object, e.g. '{\"seat\":3}'")
		}
	}
	key, err := g.signKey()
	if err != nil {
		return err
	}

	req := contract.CreatePayload{
		RequestID:  newRequestID(),
		Provider:   provider,
		NeedQRcode: true,
		Data: contract.CreateData{
			OutTradeNo: outTradeNo, TotalFee: payment.Fen(fee), Subject: subject, Type: typ,
			PID: pid, ExpireSeconds: int64(expire / time.Second),
		},
	}
	if custom != "" {
		req.Data.Custom = json.RawMessage(custom)
	}
	req.TS, req.Sig = signed(key, func(key []byte, ts int64) string {
		return contract.SignCreate(key, outTradeNo, payment.Fen(fee), typ, ts)
	})

	conn, err := g.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	// Results are subscribed to before the request goes out: a customer
	// who pays within a poll interval must not be missed.
	results, err := conn.Subscribe(ctx, g.topic(dev, contract.TopicResult))
	if err != nil {
		return err
	}
	raw, err := conn.request(ctx, dev, contract.TopicCreate, req.RequestID, req, g.Timeout)
	if err != nil {
		return err
	}
	reply, err := decodeReply[contract.CreateReply](dev, raw)
	if err != nil {
		return err
	}
	if reply.Code != 0 {
		if g.JSON() {
			_ = g.printJSON(json.RawMessage(raw))
		}
		return refusal(reply.Reply, dev)
	}
	expiresAt, _ := time.Parse(time.RFC3339, reply.ExpiresAt)
	if g.JSON() {
		if err := g.printJSON(json.RawMessage(raw)); err != nil {
			return err
		}
	} else {
		c.printQR(g, reply, subject, expiresAt, invert, noQR)
		// The last line stays open, so that an 80×24 terminal shows the
		// whole screen; whatever is printed next starts a new line.
		defer fmt.Fprintln(g.Stdout)
	}

	if waitFor == 0 {
		waitFor = 2 * time.Minute
		if !expiresAt.IsZero() {
			// The device queries once more and closes the order at
			// the deadline; its result follows shortly after.
			waitFor += time.Until(expiresAt)
		}
	}
	res, rawRes, err := awaitResult(ctx, results, reply.OutTradeNo, waitFor)
	if err != nil {
		return fmt.Errorf("%w; the order may still be paid: check with 'kioskctl query -device %s -out-trade-no %s'", err, dev, reply.OutTradeNo)
	}
	verified := ""
	if key != nil {
		if !res.VerifySignature(key) {
			return fmt.Errorf("result for %s has an invalid signature: do NOT deliver; check -sign-key-file matches the device's unlock.result_key_file", res.OutTradeNo)
		}
		verified = " (signature verified)"
	}
	if g.JSON() {
		if err := g.printJSON(json.RawMessage(rawRes)); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(g.Stdout, "\n%s: %s %s%s", res.OutTradeNo, strings.ToUpper(string(res.Status)), res.TotalFee, verified)
		if res.TransactionID != "" {
			fmt.Fprintf(g.Stdout, "\ntransaction %s paid at %s", res.TransactionID, res.PaidAt)
		}
		if res.Reason != "" {
			fmt.Fprintf(g.Stdout, "\nreason: %s", res.Reason)
		}
	}
	if res.Status != contract.ResultPaid {
		return &exitError{code: ExitNotPaid}
	}
	if ack {
		a := contract.AckPayload{RequestID: newRequestID(), OutTradeNo: res.OutTradeNo, OK: true}
		a.TS, a.Sig = signed(key, func(key []byte, ts int64) string { return contract.SignAck(key, a.OutTradeNo, true, ts) })
		b, _ := json.Marshal(a)
		if err := conn.Publish(ctx, g.topic(dev, contract.TopicAck), b); err != nil {
			return fmt.Errorf("paid, but the ack was not sent (the device will refund after unlock.ack_timeout unless acked): %w", err)
		}
		if !g.JSON() {
			fmt.Fprint(g.Stdout, "\nacknowledged as delivered")
		}
	} else if !g.JSON() {
		fmt.Fprint(g.Stdout, "\nnot acknowledged: the device's controller must ack it (or pass -ack), else it is refunded after unlock.ack_timeout with on_no_ack=refund")
	}
	return nil
}

// printQR draws what the customer sees, sized for the terminal: the
// amount and subject, the code(s) under their labels (two side by side
// when they fit, so both stay on an 80×24 screen), and the order number
// with the deadline on a last line left open (no newline).
func (c *PayCommand) printQR(g *Globals, r contract.CreateReply, subject string, expiresAt time.Time, invert, noQR bool) {
	width := g.termWidth()
	var codes []termqr.Code
	if r.OrderInfo.CodeURL != "" {
		codes = append(codes, termqr.Code{Label: "WeChat Pay", Content: r.OrderInfo.CodeURL})
	}
	if r.OrderInfo.QRCode != "" {
		codes = append(codes, termqr.Code{Label: "Alipay", Content: r.OrderInfo.QRCode})
	}
	fmt.Fprintln(g.Stdout, termqr.Fit(r.TotalFee.String()+"  "+subject, width))
	var lines []string
	if !noQR {
		var err error
		if lines, err = termqr.Lines(codes, width, invert); err != nil {
			fmt.Fprintf(g.Stderr, "cannot draw the QR code: %v\n", err)
			noQR = true
		}
	}
	if noQR {
		lines = nil
		for _, code := range codes {
			lines = append(lines, code.Label+": "+code.Content)
		}
	}
	for _, l := range lines {
		fmt.Fprintln(g.Stdout, l)
	}
	// As much of the last line as fits: a narrow terminal loses the end.
	last := "order " + r.OutTradeNo
	parts := []string{"waiting for payment…"}
	if !expiresAt.IsZero() {
		parts = append([]string{"expires at " + expiresAt.Local().Format("15:04:05")}, parts...)
	}
	for _, p := range parts {
		if len([]rune(last+" · "+p)) > width {
			break
		}
		last += " · " + p
	}
	fmt.Fprint(g.Stdout, termqr.Fit(last, width))
}

// awaitResult waits for the first result of outTradeNo. Results are
// re-published until acknowledged, so later copies are ignored.
func awaitResult(ctx context.Context, ch <-chan message, outTradeNo string, timeout time.Duration) (contract.Result, []byte, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case m := <-ch:
			var r contract.Result
			if json.Unmarshal(m.Payload, &r) == nil && r.OutTradeNo == outTradeNo {
				return r, m.Payload, nil
			}
		case <-t.C:
			return contract.Result{}, nil, fmt.Errorf("no result for %s within %v", outTradeNo, timeout.Round(time.Second))
		case <-ctx.Done():
			return contract.Result{}, nil, fmt.Errorf("interrupted while waiting for the result of %s", outTradeNo)
		}
	}
}

// newOutTradeNo generates an order number that sorts by time and is
// unique across operators: "ctl" + UTC time + random suffix (25 chars).
func newOutTradeNo(now time.Time) string {
	return "ctl" + now.UTC().Format("20060102150405") + "_" + randomHex(4)
}

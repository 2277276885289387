// Package paysim simulates the Alipay OpenAPI gateway and WeChat Pay APIv3
// closely enough that the official SDKs cannot tell the difference: requests
// are signature-checked and rejected with the real error codes, responses are
// signed the way each SDK verifies them, and orders follow the providers'
// state machines. It also sends signed notifications and offers /_sim/
// hooks to scan, pay (with discounts), settle or fail refunds and inject
// faults (docs/contract.md §7).
//
// A Server is an http.Handler, so tests run it under httptest.NewServer and
// cmd/paysim serves it on a port.
//
// # Packages
//
// This package is the core that both providers share: the Server with its
// mux and /_sim/ hooks, fault injection, notification delivery with
// retries, timers and the business clock, the key material, the realism
// switches and the orders as the hooks report them. Each provider's wire
// API and state machine is a sub-package that implements [Provider] and is
// registered with the Server:
//
//   - wxsim: WeChat Pay APIv3 (Native prepay, query, close, refunds,
//     encrypted notifications), served under /v3/;
//   - alisim: the Alipay OpenAPI gateway (precreate, query, close, cancel,
//     refunds, trade_status_sync notifications), served at /gateway.do.
//
// A simulator of both:
//
//	sim, err := paysim.New(paysim.Options{Keys: keys})
//	if err != nil { … }
//	wx := wxsim.Register(sim) // wx.Notification, wx.SetRefundBalance…
//	alisim.Register(sim)
//
// A provider answers its own wire and keeps its own orders; for everything
// else it asks the Server: [Server.Count] for /_sim/stats,
// [Server.TakeFault] and [Server.Hold] for injected faults,
// [Server.Deliver] for notifications with retries, [Server.After] and
// [Server.Now] for time, [Server.Realism] and [Server.Keys]. What both wires
// share (the UTC+8 zone, SHA256withRSA, random ids, the loopback-http rule)
// is in this package too, as are [Payment]'s paid and received amounts.
//
// # Realism
//
// By default the simulator behaves the way the real services are observed
// to behave, not the way a client would find convenient. Each behaviour that
// a test may need to turn off or tune is a field of [Realism] (defaults in
// [DefaultRealism]; change them with Options.Realism or [Server.SetRealism]):
//
//   - WxRefundMin, WxRefundMax (default 1s, 10s): a WeChat refund is
//     PROCESSING for a random time in that range, then SUCCESS by itself
//     with a REFUND.SUCCESS notification to the refund's notify_url.
//     WxRefundMax = [Never] keeps it PROCESSING until /_sim/refund-complete
//     or /_sim/refund-fail decides it.
//   - AlipayRefundWindow (default 365 days): a paid Alipay trade becomes
//     TRADE_FINISHED when its refund window ends, with a notification;
//     refunds then fail with ACQ.TRADE_HAS_FINISHED. 0 = never.
//   - AlipayZeroQueryAmounts (default true): alipay.trade.query answers
//     buyer_pay_amount, invoice_amount and receipt_amount of paid trades as
//     "0.00", as most captured real answers do; false gives the filled
//     shape.
//   - WxStrictRefundTotal (default true): a WeChat refund whose
//     amount.total is not the provider-side order total is refused, as
//     WeChat does. When false, the total the order was created with is
//     accepted too; the two differ only after /_sim/pay with another
//     "amount".
//
// Always on (no switch): discounts reported with each provider's own fields
// (WeChat payer_total and promotion_detail, Alipay buyer_pay_amount,
// receipt_amount, fund_bill_list and vouchers), WeChat USERPAYING after a
// scan, WeChat refunds notified only to the refund's own notify_url, Alipay
// cancel of a number that has no trade answered without "action", and the
// fault kinds 202 (WeChat), 20000 and system_error (Alipay) next to 5xx,
// timeout, bad_sign, stale_ts and rate_limit. The sources for every one of
// these are cited where each is implemented, in the wxsim and alisim
// package documentation.
//
// The simulator logs each API call at debug level; a notification that
// cannot be delivered is logged once per target host at info level and its
// retries at debug level.
package paysim

// Package payment holds what kioskpay knows about money independently of any
// provider: amounts in fen, the validated order request, the QR image, and the
// Provider interface that the WeChat Pay and Alipay adapters implement.
//
// The central rule of the package is that a provider answer is either a
// definite fact (the order is paid, the order is not paid, the provider
// rejected the request) or an unknown outcome. Network errors, 5xx answers,
// timeouts, rate limits and responses whose signature does not verify are
// always unknown: callers retry or query again and never treat them as "not
// paid". Only a *RejectedError is definite.
package payment

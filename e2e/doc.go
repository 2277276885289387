// Package e2e is kioskpay's acceptance suite: the real kioskpayd and
// notifyrelay binaries, built once per run by TestMain, talk over a real
// MQTT broker to a paysim served over HTTP, and a test controller sees
// exactly what a device controller or the fleet would see on the device's
// topics (replies, results, events, status). Every mechanism is
// internal/testrig's, shared with proof and kioskbench.
//
// Brokers: an in-process mochi-mqtt per test by default; the Mosquitto
// named by KIOSKPAY_TEST_MQTT_URL (e.g. tcp://127.0.0.1:1883) when set, with
// a unique device id per test. The broker-restart tests always run a
// Mosquitto of their own (persistence on) that they stop and start, and the
// secrets test a mochi that checks a password. Tests that need mosquitto or
// zbarimg (the independent QR decoder) skip when it is not installed.
//
// Every daemon, paygate and relay process's whole log (run at -log-level
// debug) is checked at cleanup: no merchant key line, APIv3 key, result HMAC key
// or broker password may appear, and no panic.
//
// Files: rig_test.go (the fixture: testrig bound to a test, the suite's
// defaults, create/ack/pay and waits that fail the test), flow_test.go
// (paid → delivered), lifecycle_test.go (expiry, cancel, supersede,
// duplicates), errors_test.go (one reply per malformed message),
// restart_test.go and more_test.go (power cuts, status, operator refund),
// broker_test.go (broker outages), money_test.go (refunds, any mode, late
// and wrong payments), moneyrule_test.go (the money rule: discounts, "0.00"
// Alipay amounts, provider-total mismatches, asynchronous, ABNORMAL and
// stuck refunds), relay_test.go (notifyrelay, forged notifications,
// secrets), signed_test.go (signed requests and results), cli_test.go (-h,
// -version and usage errors of every program), readme_test.go (every
// command of README.md's demo section against a real demo).
//
//	go test ./e2e/          # about 75 s: one test waits for a 60 s expiry
//	go test -short ./e2e/   # about 20 s: without the tests that wait or time
package e2e

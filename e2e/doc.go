// Package e2e is kioskpay's acceptance suite: the real kioskpayd and
// notifyrelay binaries, built once per run, talk over a real MQTT broker
// (in-process mochi-mqtt by default, Mosquitto when KIOSKPAY_TEST_MQTT_URL
// is set) to a paysim served over HTTP, and a test controller sees exactly
// what a device controller or the fleet would see on P/#.
//
// The package holds tests only; run them with
//
//	go test ./e2e/
package e2e

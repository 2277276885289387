package paysim

import (
	"crypto/rand"
	"math/big"
	"net"
)

// What both providers' wires have in common.

// Alphanumeric is the alphabet of the providers' random tokens (nonces,
// WeChat code_url suffixes) and of the APIv3 key.
const Alphanumeric = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

// RandomString returns n characters drawn uniformly from alphabet with
// crypto/rand.
func RandomString(alphabet string, n int) string {
	b := make([]byte, n)
	size := big.NewInt(int64(len(alphabet)))
	for i := range b {
		d, err := rand.Int(rand.Reader, size)
		if err != nil {
			panic(err) // crypto/rand does not fail
		}
		b[i] = alphabet[d.Int64()]
	}
	return string(b)
}

// RandomDigits returns n random decimal digits: the bodies of the ids the
// providers mint (transaction_id, trade_no, refund_id, buyer ids).
func RandomDigits(n int) string { return RandomString("0123456789", n) }

// LoopbackHost reports whether host names this machine. Both providers
// demand https notify URLs; the simulator also takes plain http to such a
// host, because tests have no TLS (a documented deviation).
func LoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

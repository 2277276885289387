// Package simkeys gives tests one set of paysim key material per test
// binary: generating four RSA-2048 keys takes a moment, and no test needs
// keys of its own.
package simkeys

import (
	"sync"
	"testing"

	"github.com/kioskpay/kioskpay/payment/paysim"
)

var (
	once sync.Once
	keys *paysim.Keys
	err  error
)

// Get returns the shared keys, generating them on first use.
func Get(t testing.TB) *paysim.Keys {
	t.Helper()
	once.Do(func() { keys, err = paysim.GenerateKeys() })
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

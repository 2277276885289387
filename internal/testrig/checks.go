package testrig

import (
	"errors"
	"fmt"
	"strings"

	"github.com/kioskpay/kioskpay/payment/paysim"
)

// KeySecrets returns the merchant-side secrets of keys, what a daemon or
// paygate holding them must never log: each identifying line of the two
// private keys, their whole bodies, and the WeChat APIv3 key.
func KeySecrets(k *paysim.Keys) []string {
	s := append(PEMSecrets(paysim.PrivatePEM(k.AlipayApp)), PEMSecrets(paysim.PrivatePEM(k.WxMerchant))...)
	return append(s, k.WxAPIv3Key)
}

// PEMSecrets returns the base64 lines of a PEM block long enough that
// each one alone identifies the key, and the whole body.
func PEMSecrets(pemText string) []string {
	var out []string
	var body strings.Builder
	for _, line := range strings.Split(pemText, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "-----") {
			continue
		}
		body.WriteString(line)
		if len(line) >= 16 {
			out = append(out, line)
		}
	}
	return append(out, body.String())
}

// CheckLog reports a process log that holds any of secrets (naming only
// its length and first characters), or that mentions a panic: a handler
// that blew up is a bug even when the process survived it.
func CheckLog(log string, secrets []string) error {
	var errs []error
	for _, s := range secrets {
		if s != "" && strings.Contains(log, s) {
			errs = append(errs, fmt.Errorf("log contains a secret (%d chars starting %.6q…)", len(s), s))
		}
	}
	if strings.Contains(log, "panic") {
		errs = append(errs, fmt.Errorf("log mentions a panic:\n%s", log))
	}
	return errors.Join(errs...)
}

// CheckSeqs checks the contract's result rules over the results of one
// order (pay/result messages, in any order): each outcome is published
// with one seq only, re-publications repeat it byte for byte, and
// different outcomes never share a seq.
func CheckSeqs(results []Message) error {
	seqOf := map[string]float64{}
	bodyOf := map[string]string{}
	owner := map[float64]string{}
	for _, r := range results {
		st, seq := r.Str("status"), r.Num("seq")
		if seq <= 0 {
			return fmt.Errorf("result without a seq: %s", r.Payload)
		}
		if s, ok := seqOf[st]; ok && s != seq {
			return fmt.Errorf("outcome %s published with two seqs, %v and %v", st, s, seq)
		}
		if b, ok := bodyOf[st]; ok && b != string(r.Payload) {
			return fmt.Errorf("outcome %s re-published with different bytes:\n%s\n%s", st, b, r.Payload)
		}
		if o, ok := owner[seq]; ok && o != st {
			return fmt.Errorf("seq %v used by %s and %s", seq, o, st)
		}
		seqOf[st], bodyOf[st], owner[seq] = seq, string(r.Payload), st
	}
	return nil
}

package testrig

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

func result(t *testing.T, status string, seq int, extra string) Message {
	t.Helper()
	m := Message{Topic: "pay/result", Payload: []byte(`{"status":"` + status + `","seq":` + strconv.Itoa(seq) + extra + `}`)}
	if err := json.Unmarshal(m.Payload, &m.Fields); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestCheckSeqs(t *testing.T) {
	paid, refunded := result(t, "paid", 1, ""), result(t, "refunded", 2, "")
	if err := CheckSeqs([]Message{paid, paid, refunded, refunded}); err != nil {
		t.Errorf("re-publications and a second outcome: %v", err)
	}
	for name, rs := range map[string][]Message{
		"no seq":           {result(t, "paid", 0, "")},
		"outcome re-seq'd": {paid, result(t, "paid", 3, "")},
		"other bytes":      {paid, result(t, "paid", 1, `,"x":1`)},
		"shared seq":       {paid, result(t, "refunded", 1, "")},
	} {
		if err := CheckSeqs(rs); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestCheckLog(t *testing.T) {
	secrets := PEMSecrets("-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nshort\n-----END KEY-----\n")
	if len(secrets) != 2 || secrets[1] != "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCshort" {
		t.Fatalf("PEMSecrets = %q", secrets)
	}
	if err := CheckLog(`{"msg":"ready"}`, secrets); err != nil {
		t.Errorf("clean log: %v", err)
	}
	err := CheckLog(`{"msg":"key MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"}`, secrets)
	if err == nil || strings.Contains(err.Error(), "MIIEvQIBADANBgkq") {
		t.Errorf("a leaked key line: %v (the report must not repeat the secret)", err)
	}
	if err := CheckLog("panic: runtime error", nil); err == nil {
		t.Error("a panic passed")
	}
}

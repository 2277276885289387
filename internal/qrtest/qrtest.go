// Package qrtest decodes QR codes the way a customer's phone would, with a
// real reader (zbarimg from zbar-tools), for tests of what kioskpay shows.
package qrtest

import (
	"bytes"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// Zbar returns the path of zbarimg, skipping the test when it is missing.
func Zbar(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("zbarimg")
	if err != nil {
		t.Skip("zbarimg not found: install zbar-tools (apt-get install -y zbar-tools) to check that QR codes decode")
	}
	return p
}

// Decode returns every QR content zbarimg finds in img, sorted.
func Decode(t testing.TB, img image.Image) []string {
	t.Helper()
	var buf bytes.Buffer
	if err := (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return DecodePNG(t, buf.Bytes())
}

// DecodePNG returns every QR content zbarimg finds in a PNG (or any image
// file zbarimg reads), sorted.
func DecodePNG(t testing.TB, data []byte) []string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "qr.png")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return DecodeFile(t, p)
}

// DecodeFile returns every QR content zbarimg finds in the file at path,
// sorted.
func DecodeFile(t testing.TB, path string) []string {
	t.Helper()
	out, err := exec.Command(Zbar(t), "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", path).Output()
	if err != nil {
		// zbarimg exits 4 when it finds no symbol.
		t.Logf("zbarimg %s: %v", path, err)
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			got = append(got, l)
		}
	}
	sort.Strings(got)
	return got
}

// Want fails the test unless got holds exactly the contents want, in any
// order.
func Want(t testing.TB, got []string, want ...string) {
	t.Helper()
	want = append([]string(nil), want...)
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("decoded %q, want %q", got, want)
	}
}

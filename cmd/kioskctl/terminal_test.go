package main

import (
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/display"
	"github.com/kioskpay/kioskpay/internal/mqtttest"
	"github.com/kioskpay/kioskpay/internal/qrtest"
)

// asMain makes the test binary run as kioskctl itself, so a real terminal
// can run the command without a separate build.
const asMain = "KIOSKCTL_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMain) == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// Codes as long as the providers' real ones (WeChat code_url "pr=" and 9
// characters; an Alipay qr_code of 46 characters): the widest pair that
// must fit an 80-column terminal side by side.
const (
	realCodeURL = "weixin://wxpay/bizpayurl?pr=p4lpSuKzz"
	realQRCode  = "https://qr.alipay.com/bax03431ljhokirwl38f00a7"
)

// TestPayIn80x24Terminal runs kioskctl pay in a real 80×24 terminal
// (tmux) for an order with both codes and reads the screen back: amount
// and subject on top, both codes side by side under their labels, the
// waiting line at the bottom, nothing scrolled away, and both codes
// decode from the screen drawn as pixels. With
// KIOSKPAY_DOCS_SCREENSHOTS=DIR the picture is written there
// (docs/kioskctl-pay.png in the repository is made this way).
func TestPayIn80x24Terminal(t *testing.T) {
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		t.Skip("tmux not installed (apt-get install -y tmux): it is the 80×24 terminal of this test")
	}
	qrtest.Zbar(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	d, g := setup(t)
	d.SetCodes(func(string) (string, string) { return realCodeURL, realQRCode })

	dir := t.TempDir()
	script := filepath.Join(dir, "pay.sh")
	cmd := []string{exe}
	cmd = append(cmd, g...)
	cmd = append(cmd, "pay", "-device", "dev1", "-fee", "1000", "-subject", "按摩 15 分钟", "-type", "massage_15",
		"-provider", "any", "-out-trade-no", "chair001_20261128_0001", "-ack")
	for i, a := range cmd {
		cmd[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	body := "#!/bin/sh\nclear\n" + asMain + "=1 exec " + strings.Join(cmd, " ") + "\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	sock := mqtttest.Unique("kioskctl-")
	run := func(args ...string) string {
		t.Helper()
		c := exec.Command(tmux, append([]string{"-u", "-L", sock, "-f", "/dev/null"}, args...)...)
		c.Env = append(os.Environ(), "LANG=C.UTF-8", "LC_ALL=C.UTF-8")
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	run("new-session", "-d", "-x", "80", "-y", "24", "-s", "pay", "sh "+script+"; sleep 30")
	t.Cleanup(func() { exec.Command(tmux, "-L", sock, "kill-server").Run() })

	var screen string
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(screen, "waiting for payment…") {
		if time.Now().After(deadline) {
			t.Fatalf("kioskctl pay did not get to waiting; the terminal shows:\n%s", screen)
		}
		time.Sleep(50 * time.Millisecond)
		screen = run("capture-pane", "-p", "-t", "pay")
	}
	lines := strings.Split(strings.TrimSuffix(screen, "\n"), "\n")
	t.Logf("the terminal:\n%s", screen)
	if len(lines) != 24 {
		t.Fatalf("captured %d rows, want 24", len(lines))
	}
	if lines[0] != "¥10.00  按摩 15 分钟" {
		t.Errorf("top row %q, want the amount and subject", lines[0])
	}
	if !strings.Contains(lines[1], "WeChat Pay") || !strings.Contains(lines[1], "Alipay") {
		t.Errorf("second row %q, want both labels", lines[1])
	}
	if !strings.HasPrefix(lines[23], "order chair001_20261128_0001 · expires at ") || !strings.HasSuffix(lines[23], "waiting for payment…") {
		t.Errorf("bottom row %q", lines[23])
	}
	img, err := display.TerminalImage(lines, 80, 24)
	if err != nil {
		t.Fatal(err)
	}
	qrtest.Want(t, qrtest.Decode(t, img), realCodeURL, realQRCode)
	if dir := os.Getenv("KIOSKPAY_DOCS_SCREENSHOTS"); dir != "" {
		f, err := os.Create(filepath.Join(dir, "kioskctl-pay.png"))
		if err != nil {
			t.Fatal(err)
		}
		if err := png.Encode(f, img); err != nil {
			t.Fatal(err)
		}
		f.Close()
		t.Logf("wrote %s", f.Name())
	}

	// The customer pays: the result follows on the screen.
	d.Pay("chair001_20261128_0001")
	deadline = time.Now().Add(15 * time.Second)
	for !strings.Contains(screen, "acknowledged as delivered") {
		if time.Now().After(deadline) {
			t.Fatalf("no result on the terminal:\n%s", screen)
		}
		time.Sleep(50 * time.Millisecond)
		screen = run("capture-pane", "-p", "-t", "pay")
	}
}

// TestDocsScreenshotDecodes checks the picture README.md shows: both codes
// must still scan from it.
func TestDocsScreenshotDecodes(t *testing.T) {
	qrtest.Want(t, qrtest.DecodeFile(t, "../../docs/kioskctl-pay.png"), realCodeURL, realQRCode)
}

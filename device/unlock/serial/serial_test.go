package serial

// The machine is scripted on the master side of a real pseudo-terminal
// pair; the driver opens the slave (/dev/pts/N) through go.bug.st/serial
// exactly as it opens /dev/ttyUSB0, termios settings included.

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"go.bug.st/serial"
	"golang.org/x/sys/unix"

	"github.com/kioskpay/kioskpay/device/unlock"
	"github.com/kioskpay/kioskpay/device/unlock/serial/serialconf"
	"github.com/kioskpay/kioskpay/internal/ptytest"
)

var order = unlock.Order{OutTradeNo: "chair001_0001", Type: "massage_15", TotalFee: 1000, Provider: "alipay"}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func config(port string) serialconf.Config {
	c := serialconf.DefaultConfig()
	c.Port = port
	c.Send = "START {type} {out_trade_no} {total_fee}\r\n"
	c.Expect = "OK {out_trade_no}"
	c.Reject = "ERR"
	c.Timeout = 500 * time.Millisecond
	return c
}

// device reads one command line from the master side, hands it to the test
// and performs answer.
type device struct {
	lines chan string
}

func startDevice(t *testing.T, master *os.File, answer func(line string, w io.Writer)) *device {
	t.Helper()
	d := &device{lines: make(chan string, 4)}
	go func() {
		r := bufio.NewReader(master)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				close(d.lines)
				return
			}
			d.lines <- line
			answer(line, master)
		}
	}()
	return d
}

func run(t *testing.T, cfg serialconf.Config, ctx context.Context) (unlock.Result, []unlock.Progress, error) {
	t.Helper()
	drv, err := New(cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	p, _ := drv.Plan(order)
	var reports []unlock.Progress
	res, err := drv.Run(ctx, order, p, func(p unlock.Progress) error { reports = append(reports, p); return nil })
	return res, reports, err
}

func TestScriptedDevice(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer func(line string, w io.Writer)
		want   unlock.Outcome
		reason string
	}{
		{"answers", func(_ string, w io.Writer) { io.WriteString(w, "OK chair001_0001\r\n") }, unlock.Delivered, ""},
		{"answers in pieces after noise", func(_ string, w io.Writer) {
			io.WriteString(w, "\x00\xffBOOT v1.2\r\nO")
			time.Sleep(50 * time.Millisecond) // a slow machine, not test synchronisation
			io.WriteString(w, "K chair001_")
			time.Sleep(50 * time.Millisecond)
			io.WriteString(w, "0001\r\n")
		}, unlock.Delivered, ""},
		{"silence", func(string, io.Writer) {}, unlock.NotDelivered, "no answer within 500ms"},
		{"garbage", func(_ string, w io.Writer) { io.WriteString(w, "\x1b[2J#?~~\x00\x01 OK\r\n") }, unlock.NotDelivered,
			`no expected answer within 500ms (got "\x1b[2J#?~~\x00\x01 OK\r\n")`},
		{"answer for another order", func(_ string, w io.Writer) { io.WriteString(w, "OK chair001_0000\r\n") }, unlock.NotDelivered,
			`no expected answer within 500ms (got "OK chair001_0000\r\n")`},
		{"rejects", func(_ string, w io.Writer) { io.WriteString(w, "ERR jammed\r\n") }, unlock.NotDelivered, `machine answered "ERR jammed\r\n"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			master, port := ptytest.Open(t)
			dev := startDevice(t, master, tc.answer)
			res, reports, err := run(t, config(port), context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if res.Outcome != tc.want || res.Reason != tc.reason {
				t.Errorf("got %s %q, want %s %q", res.Outcome, res.Reason, tc.want, tc.reason)
			}
			if got := <-dev.lines; got != "START massage_15 chair001_0001 1000\r\n" {
				t.Errorf("device got %q", got)
			}
			if len(reports) != 1 || !reports[0].Started {
				t.Errorf("reports %+v, want the start committed once", reports)
			}
		})
	}
}

func TestStaleInputDiscarded(t *testing.T) {
	master, port := ptytest.Open(t)
	// Hold the slave open so the stale answer waits in its input queue.
	hold, err := os.OpenFile(port, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	io.WriteString(master, "OK chair001_0001\r\n")
	// Make sure the kernel has queued it on the slave before the run.
	deadline := time.Now().Add(2 * time.Second)
	for {
		n, _ := unix.IoctlGetInt(int(hold.Fd()), unix.TIOCINQ)
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("stale answer never queued")
		}
		time.Sleep(5 * time.Millisecond)
	}
	startDevice(t, master, func(string, io.Writer) {})
	res, _, err := run(t, config(port), context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != unlock.NotDelivered {
		t.Errorf("a stale answer queued before the order delivered it: %+v", res)
	}
}

func TestFraming(t *testing.T) {
	master, port := ptytest.Open(t)
	checked := make(chan struct{})
	dev := startDevice(t, master, func(_ string, w io.Writer) {
		<-checked // answer only once the test has read the settings
		io.WriteString(w, "OK chair001_0001\n")
	})
	cfg := config(port)
	cfg.Timeout = 10 * time.Second
	cfg.Baud, cfg.DataBits, cfg.Parity, cfg.StopBits = 19200, 7, "even", "2"
	drv, _ := New(cfg, quiet())
	p, _ := drv.Plan(order)
	errc := make(chan error, 1)
	go func() {
		_, err := drv.Run(context.Background(), order, p, func(unlock.Progress) error { return nil })
		errc <- err
	}()
	// The line has arrived, so the driver holds the port open: read the
	// slave's termios (TCGETS on the master reads its peer's), the
	// settings the machine's UART would have to match. Linux's pty driver
	// forces CS8 and clears PARENB on every change (pty_set_termios in
	// drivers/tty/pty.c), so through a pty only speed and stop bits are
	// visible; TestModeMapping covers data bits and parity.
	<-dev.lines
	tio, err := unix.IoctlGetTermios(int(master.Fd()), unix.TCGETS)
	close(checked)
	if err != nil {
		t.Fatal(err)
	}
	if tio.Cflag&unix.CBAUD != unix.B19200 || tio.Cflag&unix.CSTOPB == 0 {
		t.Errorf("cflag %#o: want 19200 baud and two stop bits", tio.Cflag)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestModeMapping(t *testing.T) {
	c := config("/dev/ttyUSB0")
	c.Baud, c.DataBits, c.Parity, c.StopBits = 1200, 7, "mark", "1.5"
	m := mode(c)
	if m.BaudRate != 1200 || m.DataBits != 7 || m.Parity != serial.MarkParity || m.StopBits != serial.OnePointFiveStopBits {
		t.Errorf("mode %+v", m)
	}
}

func TestStopAfterWriteIsNotResumable(t *testing.T) {
	master, port := ptytest.Open(t)
	dev := startDevice(t, master, func(string, io.Writer) {})
	cfg := config(port)
	cfg.Timeout = time.Minute
	drv, _ := New(cfg, quiet())
	p, _ := drv.Plan(order)
	ctx, cancel := context.WithCancel(context.Background())
	type out struct {
		res unlock.Result
		err error
	}
	done := make(chan out, 1)
	go func() {
		res, err := drv.Run(ctx, order, p, func(unlock.Progress) error { return nil })
		done <- out{res, err}
	}()
	<-dev.lines // the line reached the machine
	cancel()
	o := <-done
	if !errors.Is(o.err, context.Canceled) || o.res.Outcome != 0 || !o.res.Progress.Started {
		t.Fatalf("got %+v %v, want canceled with no outcome", o.res, o.err)
	}
	if _, err := drv.Resume(context.Background(), order, o.res.Progress, nil); !errors.Is(err, unlock.ErrNotResumable) {
		t.Errorf("Resume after the write: %v, want ErrNotResumable", err)
	}
}

func TestMissingPort(t *testing.T) {
	res, reports, err := run(t, config("/dev/ttyNOPE9"), context.Background())
	if err != nil || res.Outcome != unlock.NotDelivered || !strings.HasPrefix(res.Reason, "serial port:") {
		t.Errorf("got %+v %v, want not delivered naming the port", res, err)
	}
	if len(reports) != 0 || res.Progress.Started {
		t.Errorf("a port that did not open committed a start: %+v", reports)
	}
}

func TestResumeNeverStarted(t *testing.T) {
	master, port := ptytest.Open(t)
	startDevice(t, master, func(_ string, w io.Writer) { io.WriteString(w, "OK chair001_0001\r\n") })
	drv, _ := New(config(port), quiet())
	p, _ := drv.Plan(order)
	res, err := drv.Resume(context.Background(), order, p, func(unlock.Progress) error { return nil })
	if err != nil || res.Outcome != unlock.Delivered {
		t.Errorf("Resume of a never-started plan: %+v %v", res, err)
	}
}

func TestValidate(t *testing.T) {
	ok := config("/dev/ttyUSB0")
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		edit func(*serialconf.Config)
		want string
	}{
		{func(c *serialconf.Config) { c.Port = "" }, "unlock.serial.port"},
		{func(c *serialconf.Config) { c.Baud = 0 }, "unlock.serial.baud"},
		{func(c *serialconf.Config) { c.DataBits = 9 }, "unlock.serial.data_bits"},
		{func(c *serialconf.Config) { c.Parity = "N" }, "unlock.serial.parity"},
		{func(c *serialconf.Config) { c.StopBits = "3" }, "unlock.serial.stop_bits"},
		{func(c *serialconf.Config) { c.Send = "" }, "unlock.serial.send: must be set"},
		{func(c *serialconf.Config) { c.Expect = "" }, "unlock.serial.expect: must be set"},
		{func(c *serialconf.Config) { c.Send = "GO {order}\r\n" }, "unlock.serial.send: unknown placeholder {order}"},
		{func(c *serialconf.Config) { c.Reject = "OK" }, "unlock.serial.reject: is part of unlock.serial.expect"},
		{func(c *serialconf.Config) { c.Timeout = 0 }, "unlock.serial.timeout"},
	} {
		c := ok
		tc.edit(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}
}

func TestExpand(t *testing.T) {
	got := Expand(`{"cmd":"start","no":"{out_trade_no}","t":"{type}","fee":{total_fee}}`+"\n", order)
	want := `{"cmd":"start","no":"chair001_0001","t":"massage_15","fee":1000}` + "\n"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestDoctor(t *testing.T) {
	_, port := ptytest.Open(t)
	if c := Doctor(config(port)); c[0].Status != unlock.OK {
		t.Errorf("pty: %+v", c)
	}
	if c := Doctor(config("/dev/ttyNOPE9")); c[0].Status != unlock.Fail {
		t.Errorf("missing: %+v", c)
	}
	if c := Doctor(config("/etc/hostname")); c[0].Status != unlock.Fail {
		t.Errorf("regular file: %+v", c)
	}
}

// Every value the table accepts maps to a port setting, and no other.
func TestTableValuesMapToPortSettings(t *testing.T) {
	for _, p := range serialconf.Parities {
		if _, ok := parities[p]; !ok {
			t.Errorf("parity %q has no port setting", p)
		}
	}
	for _, s := range serialconf.StopBitsValues {
		if _, ok := stopBits[s]; !ok {
			t.Errorf("stop bits %q have no port setting", s)
		}
	}
	if len(parities) != len(serialconf.Parities) || len(stopBits) != len(serialconf.StopBitsValues) {
		t.Errorf("port settings for values the table refuses: %v %v", parities, stopBits)
	}
}

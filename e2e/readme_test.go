package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/internal/syncbuf"
	"github.com/kioskpay/kioskpay/internal/testrig"
)

// readmeStep is one command of README.md's demo section with what it must
// make the device publish: each "#    → TOPIC PAYLOAD" comment under it,
// where "…" stands for anything.
type readmeStep struct {
	cmd    string
	expect []*regexp.Regexp
}

// readmeDemoSteps reads the command blocks of README.md's demo section. A
// command may go on over lines while a single quote is open; comment lines
// are left out, except the expectations.
func readmeDemoSteps(t *testing.T) []readmeStep {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## The demo, step by step\n")
	if !ok {
		t.Fatal(`README.md has no "## The demo, step by step" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var steps []readmeStep
	var expect *strings.Builder
	flush := func() {
		if expect == nil {
			return
		}
		pat := regexp.QuoteMeta(expect.String())
		pat = strings.ReplaceAll(pat, "…", ".*")
		steps[len(steps)-1].expect = append(steps[len(steps)-1].expect, regexp.MustCompile("^"+pat+"$"))
		expect = nil
	}
	inBlock, open := false, false
	for _, line := range strings.Split(section, "\n") {
		switch {
		case strings.HasPrefix(line, "```"):
			inBlock = !inBlock && strings.TrimPrefix(line, "```") == "sh"
			flush()
			continue
		case !inBlock:
			continue
		case open:
			steps[len(steps)-1].cmd += "\n" + line
		case strings.HasPrefix(line, "#"):
			text := strings.TrimSpace(strings.TrimPrefix(line, "#"))
			if arrow, ok := strings.CutPrefix(text, "→ "); ok && len(steps) > 0 {
				flush()
				expect = &strings.Builder{}
				expect.WriteString(arrow)
			} else if expect != nil && strings.HasPrefix(line, "#      ") {
				expect.WriteString(text)
			} else {
				flush()
			}
			continue
		case strings.TrimSpace(line) == "":
			flush()
			continue
		default:
			flush()
			steps = append(steps, readmeStep{cmd: line})
		}
		open = strings.Count(steps[len(steps)-1].cmd, "'")%2 == 1
	}
	flush()
	if len(steps) == 0 {
		t.Fatal("no commands in README.md's demo section")
	}
	return steps
}

// demoProcess is a running `kioskpayd -demo`.
type demoProcess struct {
	p      *testrig.Daemon   // its log is the demo's stderr
	out    *syncbuf.Buffer   // its stdout: the instructions
	fields map[string]string // "MQTT broker" → tcp://…, from the printed table
	stdin  io.Writer
}

// stop stops the demo with SIGTERM and returns its exit code.
func (d *demoProcess) stop(t *testing.T) int {
	t.Helper()
	code, err := d.p.Stop(20 * time.Second)
	if err != nil {
		t.Errorf("kioskpayd -demo did not stop on SIGTERM: %v", err)
	}
	return code
}

func startDemo(t *testing.T) *demoProcess {
	t.Helper()
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	d := &demoProcess{out: &syncbuf.Buffer{}, fields: map[string]string{}, stdin: stdinW}
	d.p = testrig.NewDaemon(filepath.Join(binDir, "kioskpayd"), "", filepath.Join(t.TempDir(), "demo.log"))
	d.p.Args, d.p.Stdin, d.p.Stdout = []string{"-demo"}, stdinR, d.out
	if err := d.p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.stop(t)
		stdinR.Close()
		stdinW.Close()
		if t.Failed() {
			t.Logf("kioskpayd -demo stdout:\n%s\nstderr:\n%s", d.out, d.p.LogText())
		}
	})
	// The demo prints to a buffer: look at it every few milliseconds.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(60 * time.Second)
	for !strings.Contains(d.out.String(), "Press Enter") {
		if !d.p.Running() {
			t.Fatalf("kioskpayd -demo exited:\n%s%s", d.out, d.p.LogText())
		}
		select {
		case <-deadline:
			t.Fatalf("kioskpayd -demo printed no instructions:\n%s%s", d.out, d.p.LogText())
		case <-tick.C:
		}
	}
	d.fields = testrig.DemoEndpoints(d.out.String())
	if len(d.fields) != 5 {
		t.Fatalf("endpoints %v from:\n%s", d.fields, d.out)
	}
	return d
}

// demoCommands returns the commands the demo printed, one per line.
func demoCommands(out string) []string {
	var cmds []string
	for _, l := range strings.Split(out, "\n") {
		for _, p := range []string{"   mosquitto_", "   curl ", "   go run "} {
			if strings.HasPrefix(l, p) {
				cmds = append(cmds, strings.TrimSpace(l))
			}
		}
	}
	return cmds
}

// TestReadmeDemo runs every command of README.md's demo section, as a
// newcomer would paste it, against a real `kioskpayd -demo`: the real
// mosquitto_sub and mosquitto_pub, curl, and kioskctl (the built binary in
// place of `go run ./cmd/kioskctl`), with the demo's ports in place of
// 1883 and SIM. Each command must succeed and each "→" line under it must
// show up on the device's topics. The demo must print the same commands,
// and its log must stay quiet while it runs.
func TestReadmeDemo(t *testing.T) {
	for _, p := range []string{"mosquitto_sub", "mosquitto_pub", "curl"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s not installed (apt-get install -y mosquitto-clients curl): README.md's demo uses it", p)
		}
	}
	steps := readmeDemoSteps(t)
	d := startDemo(t)
	brokerURL := d.fields[testrig.DemoBroker]
	port := brokerURL[strings.LastIndex(brokerURL, ":")+1:]
	simURL, webURL := d.fields[testrig.DemoSim], strings.TrimSuffix(d.fields[testrig.DemoWeb], "/")
	toDemo := strings.NewReplacer(
		"go run ./cmd/kioskctl", filepath.Join(binDir, "kioskctl"),
		"-p 1883", "-p "+port,
		"tcp://127.0.0.1:1883", brokerURL,
		"http://127.0.0.1:SIM", simURL,
		"http://127.0.0.1:8088", webURL,
	)

	// The demo prints README's commands, with its own ports.
	fromDemo := strings.NewReplacer("-p "+port+" ", "-p 1883 ", brokerURL, "tcp://127.0.0.1:1883", simURL, "http://127.0.0.1:SIM")
	var printed, written []string
	for _, c := range demoCommands(d.out.String()) {
		printed = append(printed, fromDemo.Replace(c))
	}
	for _, s := range steps {
		written = append(written, regexp.MustCompile(`\n\s*`).ReplaceAllString(s.cmd, ""))
	}
	if strings.Join(printed, "\n") != strings.Join(written, "\n") {
		t.Errorf("the demo prints other commands than README.md:\ndemo:\n%s\nREADME:\n%s", strings.Join(printed, "\n"), strings.Join(written, "\n"))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var topics *lineLog // mosquitto_sub's output
	var pay *exec.Cmd   // kioskctl pay, running until paid
	var payOut *syncbuf.Buffer
	orderNo := ""
	for i, s := range steps {
		cmd := toDemo.Replace(s.cmd)
		if strings.Contains(cmd, "<the number it printed>") {
			if orderNo == "" {
				t.Fatalf("step %d needs the order number, but nothing printed one: %s", i+1, s.cmd)
			}
			cmd = strings.ReplaceAll(cmd, "<the number it printed>", orderNo)
		}
		t.Logf("$ %s", cmd)
		sh := exec.CommandContext(ctx, "bash", "-c", cmd)
		switch {
		case strings.HasPrefix(cmd, "mosquitto_sub"):
			// Runs until the end, like the second terminal it is.
			topics = newLineLog()
			sh.Stdout = topics
			if err := sh.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { sh.Process.Kill(); sh.Wait() })
			topics.waitFor(t, regexp.MustCompile(`^kiosk/\S+/status \{"online":true`), 10*time.Second)
		case strings.Contains(cmd, " pay -device"):
			// kioskctl pay waits for the payment: it runs on while the
			// next command pays.
			payOut = &syncbuf.Buffer{}
			sh.Stdout, sh.Stderr = payOut, payOut
			if err := sh.Start(); err != nil {
				t.Fatal(err)
			}
			pay = sh
			m := waitMatch(t, payOut, regexp.MustCompile(`order (\S+) · expires`), 20*time.Second)
			orderNo = m[1]
		default:
			out, err := sh.CombinedOutput()
			if err != nil {
				t.Fatalf("step %d: %s: %v\n%s", i+1, s.cmd, err, out)
			}
		}
		for _, want := range s.expect {
			if topics == nil {
				t.Fatalf("step %d expects %s, but no mosquitto_sub runs before it", i+1, want)
			}
			topics.waitFor(t, want, 15*time.Second)
		}
	}
	if pay != nil {
		done := make(chan error, 1)
		go func() { done <- pay.Wait() }()
		select {
		case err := <-done:
			if err != nil || !strings.Contains(payOut.String(), ": PAID ¥10.00") {
				t.Fatalf("kioskctl pay: %v\n%s", err, payOut)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("kioskctl pay did not finish:\n%s", payOut)
		}
	}

	// Enter prints the walk-through again.
	before := strings.Count(d.out.String(), "Press Enter")
	fmt.Fprintln(d.stdin)
	waitMatch(t, d.out, regexp.MustCompile(fmt.Sprintf(`(?s)(Press Enter.*){%d}`, before+1)), 10*time.Second)

	// Quiet: while the demo ran, nothing logged above info, nothing from
	// the parts around the daemon, and after start-up little besides one
	// line per transition. (Stopping may interrupt calls in flight.)
	logs := d.p.LogText()
	if code := d.stop(t); code != 0 {
		t.Errorf("demo exit code %d", code)
	}
	_, session, _ := strings.Cut(logs, "kioskpayd ready")
	other := 0
	for _, l := range strings.Split(session, "\n")[1:] {
		switch {
		case l == "":
		case strings.Contains(l, `"level":"WARN"`) || strings.Contains(l, `"level":"ERROR"`):
			t.Errorf("the demo logged a problem: %s", l)
		case regexp.MustCompile(`"component":"(paysim|notifyrelay|broker)"`).MatchString(l):
			t.Errorf("a routine line from the demo's helpers: %s", l)
		case !strings.Contains(l, `"msg":"order transition"`):
			other++
		}
	}
	if other > 2 {
		t.Errorf("%d log lines besides order transitions while the demo ran:\n%s", other, session)
	}
}

// lineLog collects lines written to it, for waiting on one.
type lineLog struct {
	buf syncbuf.Buffer
}

func newLineLog() *lineLog { return &lineLog{} }

func (l *lineLog) Write(p []byte) (int, error) { return l.buf.Write(p) }

// waitFor waits until a whole line matches re.
func (l *lineLog) waitFor(t *testing.T, re *regexp.Regexp, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		sc := bufio.NewScanner(strings.NewReader(l.buf.String()))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if re.MatchString(sc.Text()) {
				return
			}
		}
		if time.Now().After(deadline) {
			var short []string
			for _, line := range strings.Split(l.buf.String(), "\n") {
				if len(line) > 300 {
					line = line[:300] + "…"
				}
				short = append(short, line)
			}
			t.Fatalf("no line matching %s within %s; mosquitto_sub printed:\n%s", re, d, strings.Join(short, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitMatch waits until b's text matches re and returns the submatches.
func waitMatch(t *testing.T, b *syncbuf.Buffer, re *regexp.Regexp, d time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if m := re.FindStringSubmatch(b.String()); m != nil {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s in:\n%s", re, d, b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

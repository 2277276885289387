package qemuvm

import (
	"strings"
	"testing"
	"time"
)

// Lines as qemu 7.2's log trace backend writes them with -msg timestamp=on
// (captured from a run of TestQEMUGPIO). The initramfs writer has no test
// of its own: the kernel unpacking it in TestQEMUGPIO is the decoder.
func TestParseTrace(t *testing.T) {
	in := `22465@1795853310.629069:pl061_update /machine/unattached/device[6] GPIODIR 0x1 GPIODATA 0x8 pullups 0x0 floating 0x0
22465@1795853310.629077:pl061_input_change /machine/unattached/device[6] input 3 changed to 1
qemu-system-aarch64: some warning
22469@1795853310.729108:pl061_set_output /machine/unattached/device[6] setting output 0 to 1
`
	events, err := ParseTrace(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 3 {
		t.Fatalf("got %d events, want 3: %+v", len(events), events)
	}
	e := events[1]
	if e.Name != "pl061_input_change" || e.Args != "/machine/unattached/device[6] input 3 changed to 1" ||
		!e.At.Equal(time.Unix(1795853310, 629077000)) {
		t.Errorf("event %+v", e)
	}
	if d := events[2].At.Sub(events[1].At); d != 100031*time.Microsecond {
		t.Errorf("interval %s, want 100.031ms", d)
	}
}

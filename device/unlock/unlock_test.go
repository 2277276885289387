package unlock

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// The engine stores Progress as JSON and hands it back to Resume after a
// restart: every field must survive the trip, and an untouched plan must
// stay small.
func TestProgressJSON(t *testing.T) {
	p := Progress{Driver: DriverGPIO, Mode: "relay", Started: true, Outcome: Delivered,
		RelayPaid: 15 * time.Minute, RelayUsed: 10 * time.Second,
		RelayOnSince: time.Date(2026, 11, 28, 8, 0, 0, 123456789, time.UTC)}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var back Progress
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p, back) {
		t.Errorf("round trip\n got %+v\nwant %+v", back, p)
	}
	b, _ = json.Marshal(Progress{Driver: DriverExec, Mode: "program"})
	if string(b) != `{"driver":"exec","mode":"program","started":false}` {
		t.Errorf("plan JSON %s", b)
	}
}

func TestOutcomeString(t *testing.T) {
	for o, want := range map[Outcome]string{Delivered: "delivered", NotDelivered: "not_delivered", 0: "outcome(0)"} {
		if o.String() != want {
			t.Errorf("%d: %q, want %q", o, o.String(), want)
		}
	}
}

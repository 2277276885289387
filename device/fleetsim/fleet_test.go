package fleetsim

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/internal/mqtttest"
)

func TestFleetStartAndClear(t *testing.T) {
	url := mqtttest.Broker(t)
	prefix := mqtttest.Unique("fleet")
	ctx := context.Background()
	f, err := Start(ctx, Options{Conn: Conn{Brokers: []string{url}}, Prefix: prefix, Devices: 50, Online: 4,
		IDFormat: "chair-%03d", Versions: []string{"1.0", "2.0"}, Publishers: 3})
	if err != nil {
		t.Fatal(err)
	}
	if f.ID(7) != "chair-007" || len(f.Online()) != 4 || f.Online()[3].ID() != "chair-003" {
		t.Fatalf("ids: %s, %d online", f.ID(7), len(f.Online()))
	}
	sub := mqtttest.Subscribe(t, url, prefix+"/+/status")
	versions := map[string]int{}
	for i := 0; i < 50; i++ {
		var s contract.Status
		if err := json.Unmarshal(sub.Next(t, "", 5*time.Second).Payload, &s); err != nil {
			t.Fatal(err)
		}
		versions[s.Version]++
	}
	if versions["1.0"] != 2 || versions["2.0"] != 2 || versions[""] != 46 {
		t.Fatalf("versions %v", versions)
	}
	if err := f.Close(ctx, true); err != nil {
		t.Fatal(err)
	}
	// No status may be left retained. The broker acknowledges a publish
	// before it forwards it to subscribers, so the devices' last offline
	// statuses and the clears themselves may still arrive live (not
	// retained) on a subscription made just after Close: those are not
	// leftovers.
	after := mqtttest.Subscribe(t, url, prefix+"/+/status")
	deadline := time.After(300 * time.Millisecond)
	for {
		select {
		case m := <-after.C:
			if m.Retained {
				t.Fatalf("status left after clear on %s (retained %v): %s", m.Topic, m.Retained, m.Payload)
			}
		case <-deadline:
			return
		}
	}
}

func TestStartRefusesBadOptions(t *testing.T) {
	for _, o := range []Options{
		{Conn: Conn{Brokers: []string{"tcp://127.0.0.1:1"}}, Devices: 2, Online: 3},
		{Conn: Conn{Brokers: []string{"http://x"}}, Devices: 1},
	} {
		if _, err := Start(context.Background(), o); err == nil {
			t.Errorf("Start(%+v) succeeded", o)
		}
	}
}

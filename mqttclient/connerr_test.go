package mqttclient

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	mochi "github.com/mochi-mqtt/server/v2"
	mpackets "github.com/mochi-mqtt/server/v2/packets"

	"github.com/kioskpay/kioskpay/internal/mqtttest"
)

// denyHook refuses every login, as a broker with a wrong password would.
type denyHook struct{ mochi.HookBase }

func (h *denyHook) ID() string                                                { return "deny" }
func (h *denyHook) Provides(b byte) bool                                      { return b == mochi.OnConnectAuthenticate }
func (h *denyHook) OnConnectAuthenticate(*mochi.Client, mpackets.Packet) bool { return false }

func connectOnce(t *testing.T, url string) error {
	t.Helper()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID(mqtttest.Unique("ce-")).
		SetProtocolVersion(4).SetConnectTimeout(5 * time.Second).SetAutoReconnect(false))
	defer c.Disconnect(0)
	return Wait(context.Background(), c.Connect(), 10*time.Second)
}

// TestConnectErrorWording checks what a person reads when the broker is
// not there or refuses the login: our words, not paho's "network Error :",
// with the cause still matchable.
func TestConnectErrorWording(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "tcp://" + ln.Addr().String()
	ln.Close()

	err = ConnectError(connectOnce(t, closed))
	if err == nil || !strings.HasPrefix(err.Error(), "cannot reach the broker: dial tcp") || strings.Contains(err.Error(), "network Error") {
		t.Fatalf("closed port: %v", err)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) || !errors.Is(err, packets.ErrorNetworkError) {
		t.Fatalf("closed port: the cause is lost: %#v", err)
	}

	_, url := mqtttest.Mochi(t, new(denyHook), nil)
	err = ConnectError(connectOnce(t, url))
	if err == nil || !strings.HasPrefix(err.Error(), "the broker refused") {
		t.Fatalf("refused login: %v", err)
	}
	if ConnectError(nil) != nil {
		t.Fatal("ConnectError(nil) != nil")
	}
	other := errors.New("timed out after 5s")
	if ConnectError(other) != other {
		t.Fatal("an error that is not paho's was changed")
	}
}

// Package mochibroker runs an in-process mochi-mqtt broker: the one
// `kioskpayd demo` serves on loopback and the one tests get from mqtttest.
package mochibroker

import (
	"fmt"
	"log/slog"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Serve starts a broker on l whose clients hook authenticates and
// authorises (nil: AllowHook). The caller closes the broker, which closes l.
func Serve(l listeners.Listener, hook mochi.Hook, log *slog.Logger) (*mochi.Server, error) {
	s := mochi.New(&mochi.Options{InlineClient: true, Logger: log})
	if hook == nil {
		hook = new(AllowHook)
	}
	if err := s.AddHook(hook, nil); err != nil {
		return nil, fmt.Errorf("mochi hook: %w", err)
	}
	if err := s.AddListener(l); err != nil {
		return nil, fmt.Errorf("mochi listener: %w", err)
	}
	if err := s.Serve(); err != nil {
		return nil, fmt.Errorf("mochi serve: %w", err)
	}
	return s, nil
}

// AllowHook lets every client connect and use every topic: for loopback
// and test brokers only. It stands in for mochi's auth.AllowHook, whose
// package pulls in a YAML dependency the module does not otherwise need.
type AllowHook struct{ mochi.HookBase }

// ID names the hook.
func (h *AllowHook) ID() string { return "allow-all" }

// Provides reports the hook methods implemented.
func (h *AllowHook) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck
}

// OnConnectAuthenticate allows every client.
func (h *AllowHook) OnConnectAuthenticate(*mochi.Client, packets.Packet) bool { return true }

// OnACLCheck allows every topic.
func (h *AllowHook) OnACLCheck(*mochi.Client, string, bool) bool { return true }

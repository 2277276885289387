package proof

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kioskpay/kioskpay/payment/paysim"
)

// Rig is a broker, a simulator, a daemon binary and a controller: every
// piece a measurement needs except the daemons themselves, which Daemon
// adds one device at a time.
type Rig struct {
	Dir    string
	Broker *Mosquitto
	URL    string // broker URL
	Sim    *Sim
	Bin    string
	Prefix string
	Ctl    *Controller

	base []byte // the daemon config paysim writes
}

// RigOptions configure NewRig.
type RigOptions struct {
	// BrokerURL uses an existing broker instead of starting a private
	// Mosquitto (then the rig cannot restart it).
	BrokerURL string
	// BrokerConfig lines are added to the private Mosquitto's config.
	BrokerConfig []string
	Keys         *paysim.Keys // nil: generate
	Sim          SimOptions
	// Bin is a prebuilt kioskpayd; empty: $KIOSKPAY_DAEMON_BIN or build.
	Bin string
	// OnResult is installed on the controller before it connects.
	OnResult func(Result)
}

// NewRig starts the broker, the simulator and the controller under dir.
func NewRig(ctx context.Context, dir string, opts RigOptions) (_ *Rig, err error) {
	r := &Rig{Dir: dir, Prefix: "proof-" + randHex(4)}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	if r.Bin = opts.Bin; r.Bin == "" {
		if r.Bin, err = DaemonBinary(ctx, dir); err != nil {
			return nil, err
		}
	}
	if r.URL = opts.BrokerURL; r.URL == "" {
		if r.Broker, err = StartMosquitto(ctx, filepath.Join(dir, "mosquitto"), opts.BrokerConfig...); err != nil {
			return nil, err
		}
		r.URL = r.Broker.URL
	}
	keys := opts.Keys
	if keys == nil {
		if keys, err = paysim.GenerateKeys(); err != nil {
			return nil, err
		}
	}
	if r.Sim, err = StartSim(keys, opts.Sim); err != nil {
		return nil, err
	}
	if r.base, err = r.Sim.DaemonFiles(filepath.Join(dir, "keys")); err != nil {
		return nil, err
	}
	r.Ctl = NewController(r.Prefix)
	r.Ctl.OnResult = opts.OnResult
	if err := r.Ctl.Connect(ctx, r.URL, "proof-ctl-"+randHex(4)); err != nil {
		return nil, fmt.Errorf("controller: %w", err)
	}
	return r, nil
}

// Daemon writes a config for device (its own state dir under the rig, the
// rig's broker and prefix, no display outputs, no clock check) with
// overrides applied on top, and returns the daemon, not yet started.
func (r *Rig) Daemon(device string, overrides map[string]any) (*Daemon, error) {
	dir := filepath.Join(r.Dir, "dev-"+device)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	o := map[string]any{
		"device_id":          device,
		"state_dir":          filepath.Join(dir, "state"),
		"mqtt.url":           r.URL,
		"mqtt.topic_prefix":  r.Prefix,
		"display.outputs":    []string{},
		"display.web_listen": nil,
		"clock.sync_check":   "none",
	}
	for k, v := range overrides {
		o[k] = v
	}
	cfg := filepath.Join(dir, "kioskpayd.toml")
	if err := WriteConfig(cfg, r.base, o); err != nil {
		return nil, err
	}
	return NewDaemon(r.Bin, cfg, filepath.Join(dir, "daemon.log")), nil
}

// Close stops the controller, the simulator and the broker.
func (r *Rig) Close() {
	if r.Ctl != nil {
		r.Ctl.Close()
	}
	if r.Sim != nil {
		r.Sim.Close()
	}
	if r.Broker != nil {
		r.Broker.Stop()
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

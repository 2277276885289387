package testrig

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/kioskpay/kioskpay/paygate"
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
	// Gates are the paygate replicas (RigOptions.Gateway), restartable
	// like daemons; each config sits beside its audit log.
	Gates []*Daemon

	base   []byte // the daemon config paysim writes
	gwBase []byte // its gateway shape (kioskpayd-gateway.toml)
	// gatewayDaemons: Daemon gives every device the gateway shape.
	gatewayDaemons bool
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
	// Gateway, when positive, runs that many paygate replicas holding the
	// merchant keys, and every daemon with payment.backend = "gateway"
	// and no key file; order numbers must then start with the device's
	// prefix (GatewayPrefix).
	Gateway int
}

// NewRig starts the broker, the simulator and the controller under dir.
func NewRig(ctx context.Context, dir string, opts RigOptions) (_ *Rig, err error) {
	r := &Rig{Dir: dir, Prefix: "rig-" + RandomHex(4)}
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
	if opts.Gateway > 0 {
		if err := r.StartGates(ctx, opts.Gateway, nil); err != nil {
			return nil, err
		}
		r.gatewayDaemons = true
	}
	r.Ctl = NewController(r.Prefix)
	r.Ctl.OnResult = opts.OnResult
	if err := r.Ctl.Connect(ctx, r.URL, "rig-ctl-"+RandomHex(4)); err != nil {
		return nil, fmt.Errorf("controller: %w", err)
	}
	return r, nil
}

// Daemon writes a config for device (its own state dir under the rig, the
// rig's broker and prefix, no display outputs, no clock check) with
// overrides applied on top, and returns the daemon, not yet started. With
// RigOptions.Gateway it is GatewayDaemon.
func (r *Rig) Daemon(device string, overrides map[string]any) (*Daemon, error) {
	if r.gatewayDaemons {
		return r.GatewayDaemon(device, overrides)
	}
	return r.daemon(r.base, device, overrides)
}

// GatewayDaemon is Daemon with payment.backend = "gateway" and no merchant
// key file, for the paygate replicas of StartGates. Its order numbers must
// start with paygate.DerivedPrefix(device).
func (r *Rig) GatewayDaemon(device string, overrides map[string]any) (*Daemon, error) {
	if r.gwBase == nil {
		return nil, fmt.Errorf("gateway daemon %s: no paygate on the rig (StartGates)", device)
	}
	return r.daemon(r.gwBase, device, overrides)
}

func (r *Rig) daemon(base []byte, device string, overrides map[string]any) (*Daemon, error) {
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
	if err := WriteConfig(cfg, base, o); err != nil {
		return nil, err
	}
	return NewDaemon(r.Bin, cfg, filepath.Join(dir, "daemon.log")), nil
}

// StartGates builds paygate and starts n more replicas on the rig's
// broker, each with notifications on a port of its own (orders a replica
// creates are notified to it). GatewayDaemon then starts devices that use
// them.
// overrides are applied to each replica's paygate.toml (e.g.
// "policy.default.rate").
func (r *Rig) StartGates(ctx context.Context, n int, overrides map[string]any) error {
	bin := os.Getenv(EnvGateBin)
	if bin == "" {
		bin = filepath.Join(r.Dir, "paygate")
		if err := Build(ctx, "./cmd/paygate", bin, "CGO_ENABLED=0"); err != nil {
			return err
		}
	}
	keyDir := filepath.Join(r.Dir, "keys")
	base, err := os.ReadFile(filepath.Join(keyDir, "paygate.toml"))
	if err != nil {
		return err
	}
	if r.gwBase, err = os.ReadFile(filepath.Join(keyDir, "kioskpayd-gateway.toml")); err != nil {
		return err
	}
	first := len(r.Gates)
	for i := first; i < first+n; i++ {
		dir := filepath.Join(r.Dir, fmt.Sprintf("paygate-%d", i))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		addr, err := FreeAddr()
		if err != nil {
			return err
		}
		cfg := filepath.Join(dir, "paygate.toml")
		o := map[string]any{
			"replica":           fmt.Sprintf("r%d", i),
			"mqtt.url":          r.URL,
			"mqtt.topic_prefix": r.Prefix,
			"notify.listen":     addr,
			"notify.public_url": "http://" + addr,
			"audit.file":        filepath.Join(dir, "audit.jsonl"),
			"policy.devices":    nil, // every device has its derived prefix
		}
		for k, v := range overrides {
			o[k] = v
		}
		if err := WriteConfig(cfg, base, o); err != nil {
			return err
		}
		g := NewDaemon(bin, cfg, filepath.Join(dir, "paygate.log"))
		if err := g.Start(); err != nil {
			return err
		}
		r.Gates = append(r.Gates, g)
	}
	return nil
}

// EnvGateBin names a prebuilt paygate to use instead of building one.
const EnvGateBin = "KIOSKPAY_PAYGATE_BIN"

// GatewayPrefix is the out_trade_no prefix of device when the rig's
// daemons use the gateway (RigOptions.Gateway), "" otherwise.
func (r *Rig) GatewayPrefix(device string) string {
	if !r.gatewayDaemons {
		return ""
	}
	return paygate.DerivedPrefix(device)
}

// Close stops the controller, the simulator and the broker.
func (r *Rig) Close() {
	for _, g := range r.Gates {
		_, _ = g.Stop(5 * time.Second)
	}
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

// RandomHex returns n random bytes in hex (2n characters), for ids that
// must not collide between tests or runs.
func RandomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

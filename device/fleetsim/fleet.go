package fleetsim

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/kioskpay/kioskpay/contract"
	"github.com/kioskpay/kioskpay/mqttclient"
	"github.com/kioskpay/kioskpay/mqttclient/brokerurl"
)

// Defaults of Options.
const (
	DefaultIDFormat   = "sim-%06d"
	DefaultPublishers = 4
	// DefaultConnectors is how many devices connect at once.
	DefaultConnectors = 32
	// publishWindow is how many QoS 1 publishes one publisher keeps in
	// flight: enough to hide the round trip, few enough for any broker.
	publishWindow = 256
)

// Options configure a Fleet.
type Options struct {
	Conn
	Prefix string
	// Devices is the size of the fleet; Online of them (the first ones)
	// connect for real. Loopback ports and file descriptors limit live
	// connections to a few thousand on one machine.
	Devices, Online int
	// IDFormat turns a device number (from 0) into its id; default
	// DefaultIDFormat. Two fleets on one broker need different formats.
	IDFormat string
	// Versions are handed out to the online devices in turn (default
	// DefaultVersion).
	Versions []string
	Key      []byte
	PayAfter time.Duration
	// Publishers is how many connections publish the offline statuses
	// (default DefaultPublishers).
	Publishers int
	// Progress, when set, is told what was done.
	Progress func(format string, args ...any)
}

// Fleet is N simulated devices on one broker.
type Fleet struct {
	opts   Options
	online []*Device
}

// Start publishes the retained offline status of the devices that are not
// online, then connects the online ones (each publishes its own online
// status after subscribing). It returns when all of that is acknowledged
// by the broker.
func Start(ctx context.Context, o Options) (*Fleet, error) {
	if o.Devices < 0 || o.Online < 0 || o.Online > o.Devices {
		return nil, fmt.Errorf("fleetsim: want 0 <= online (%d) <= devices (%d)", o.Online, o.Devices)
	}
	if o.IDFormat == "" {
		o.IDFormat = DefaultIDFormat
	}
	if len(o.Versions) == 0 {
		o.Versions = []string{DefaultVersion}
	}
	if o.Publishers <= 0 {
		o.Publishers = DefaultPublishers
	}
	if o.Progress == nil {
		o.Progress = func(string, ...any) {}
	}
	if _, err := brokerurl.CheckList(o.Brokers); err != nil {
		return nil, fmt.Errorf("fleetsim: broker %w", err)
	}
	f := &Fleet{opts: o}
	start := time.Now()
	offline := contract.OfflineStatus()
	err := f.publishAll(ctx, o.Online, o.Devices, func(int) []byte { return offline })
	if err != nil {
		return nil, err
	}
	o.Progress("published %d offline statuses in %s", o.Devices-o.Online, time.Since(start).Round(time.Millisecond))
	start = time.Now()
	if err := f.connectOnline(ctx); err != nil {
		f.Close(context.WithoutCancel(ctx), false)
		return nil, err
	}
	o.Progress("connected %d devices with Last Wills in %s", o.Online, time.Since(start).Round(time.Millisecond))
	return f, nil
}

// ID is the id of device number i.
func (f *Fleet) ID(i int) string { return fmt.Sprintf(f.opts.IDFormat, i) }

// Online lists the connected devices, in device-number order.
func (f *Fleet) Online() []*Device { return f.online }

// Close disconnects the online devices cleanly (each leaves its retained
// offline status, as a daemon does). With clear it then deletes every
// device's retained status (an empty retained message), leaving the broker
// as it found it.
func (f *Fleet) Close(ctx context.Context, clear bool) error {
	var wg sync.WaitGroup
	sem := make(chan struct{}, DefaultConnectors)
	for _, d := range f.online {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			d.Close()
			<-sem
		}()
	}
	wg.Wait()
	if !clear {
		return nil
	}
	return f.publishAll(ctx, 0, f.opts.Devices, func(int) []byte { return nil })
}

// connectOnline connects devices 0..Online-1, a few at a time.
func (f *Fleet) connectOnline(ctx context.Context) error {
	o := f.opts
	f.online = make([]*Device, o.Online)
	var (
		wg       sync.WaitGroup
		firstErr error
		errOnce  sync.Once
		done     atomic.Int64
	)
	sem := make(chan struct{}, DefaultConnectors)
	for i := 0; i < o.Online; i++ {
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d, err := Connect(ctx, o.Conn, DeviceOptions{
				ID: f.ID(i), Prefix: o.Prefix, Version: o.Versions[i%len(o.Versions)],
				Key: o.Key, PayAfter: o.PayAfter,
			})
			if err != nil {
				errOnce.Do(func() { firstErr = err })
				return
			}
			f.online[i] = d
			if n := done.Add(1); n%1000 == 0 {
				o.Progress("%d devices connected", n)
			}
		}()
	}
	wg.Wait()
	// Keep only what connected, so Close closes exactly those.
	live := f.online[:0]
	for _, d := range f.online {
		if d != nil {
			live = append(live, d)
		}
	}
	f.online = live
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return firstErr
}

// publishAll publishes payload(i) retained to the status topic of devices
// from..to-1 at QoS 1, spread over Publishers connections, and waits for
// every PUBACK.
func (f *Fleet) publishAll(ctx context.Context, from, to int, payload func(i int) []byte) error {
	o := f.opts
	if to <= from {
		return nil
	}
	errs := make([]error, o.Publishers)
	var wg sync.WaitGroup
	for p := 0; p < o.Publishers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[p] = f.publishShare(ctx, p, from, to, payload)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// publishShare is publisher p's part of publishAll: every Publishers-th
// device, with up to publishWindow publishes in flight.
func (f *Fleet) publishShare(ctx context.Context, p, from, to int, payload func(i int) []byte) error {
	o := f.opts
	opts, err := o.clientOptions(fmt.Sprintf("fleetsim-pub-%s-%d", randomTag(), p))
	if err != nil {
		return err
	}
	c := mqtt.NewClient(opts.SetAutoReconnect(false).SetWriteTimeout(30 * time.Second))
	if err := mqttclient.Wait(ctx, c.Connect(), o.connectWait()); err != nil {
		c.Disconnect(0)
		return fmt.Errorf("fleetsim publisher %d: connect: %w", p, err)
	}
	defer c.Disconnect(250)
	inflight := make(chan mqtt.Token, publishWindow)
	waitErr := make(chan error, 1)
	go func() {
		var first error
		for t := range inflight {
			if err := mqttclient.Wait(ctx, t, 30*time.Second); err != nil && first == nil {
				first = err
			}
		}
		waitErr <- first
	}()
	for i := from + p; i < to; i += o.Publishers {
		if ctx.Err() != nil {
			break
		}
		topic := o.Prefix + "/" + f.ID(i) + "/" + contract.TopicStatus
		inflight <- c.Publish(topic, 1, true, payload(i))
	}
	close(inflight)
	if err := <-waitErr; err != nil {
		return fmt.Errorf("fleetsim publisher %d: %w", p, err)
	}
	return ctx.Err()
}

// randomTag keeps the client ids of two fleets' publishers apart.
func randomTag() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

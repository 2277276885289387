package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kioskpay/kioskpay/device"
)

// StatusCommand prints the fleet from the retained <prefix>/+/status topics.
type StatusCommand struct{}

const statusUsage = `Usage: kioskctl status [-device ID] [-want-version V] [-quiet D]

Collects the retained status message of every device under the prefix and
prints one row per device. With -device, exits 1 unless that device is online
(and runs -want-version, when given): the health check for rollouts.

Flags:
	-device ID          show only this device; exit 1 unless it is online
	-want-version V     with -device: also exit 1 unless it runs version V
	-quiet D            stop collecting after D without a new message (default 300ms)
`

// Usage implements command.
func (c *StatusCommand) Usage() string { return statusUsage + "\nGlobal flags:\n" + globalFlagsUsage }

// deviceStatus is one row of the table.
type deviceStatus struct {
	Device      string `json:"device"`
	Online      bool   `json:"online"`
	Version     string `json:"version,omitempty"`
	Pending     int    `json:"pending"`
	ClockSynced bool   `json:"clock_synced"`
	StartedAt   string `json:"started_at,omitempty"`
	Error       string `json:"error,omitempty"` // unreadable status payload
}

// Run implements command.
func (c *StatusCommand) Run(ctx context.Context, g *Globals, args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	var dev, wantVersion string
	quiet := 300 * time.Millisecond
	fs.StringVar(&dev, "device", "", "")
	fs.StringVar(&wantVersion, "want-version", "", "")
	fs.DurationVar(&quiet, "quiet", quiet, "")
	if err := g.parse(fs, c.Usage(), args); err != nil {
		return err
	}
	if dev != "" {
		if err := requireDevice(dev); err != nil {
			return err
		}
	} else if wantVersion != "" {
		return usagef("-want-version needs -device")
	}
	conn, err := g.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	filter := g.topic("+", device.TopicStatus)
	if dev != "" {
		filter = g.topic(dev, device.TopicStatus)
	}
	ch, err := conn.Subscribe(ctx, filter)
	if err != nil {
		return err
	}
	rows := collectStatus(ctx, ch, g.Prefix, quiet, g.Timeout)
	conn.Close()

	if g.JSON() {
		if rows == nil {
			rows = []deviceStatus{}
		}
		if err := g.printJSON(rows); err != nil {
			return err
		}
	} else if len(rows) == 0 {
		fmt.Fprintf(g.Stderr, "no device has published %s on %s\n", filter, g.Broker)
	} else {
		printStatusTable(g, rows)
	}
	if dev == "" {
		return nil
	}
	if len(rows) == 0 {
		return fmt.Errorf("device %s has never reported a status on %s: is it provisioned with mqtt.topic_prefix %q?", dev, g.Broker, g.Prefix)
	}
	r := rows[0]
	switch {
	case r.Error != "":
		return fmt.Errorf("device %s: unreadable status: %s", dev, r.Error)
	case !r.Online:
		return fmt.Errorf("device %s is offline: check 'systemctl status kioskpayd' and 'journalctl -u kioskpayd' on it", dev)
	case wantVersion != "" && r.Version != wantVersion:
		return fmt.Errorf("device %s runs version %q, want %q", dev, r.Version, wantVersion)
	}
	return nil
}

// collectStatus gathers status messages until none arrives for quiet, or
// max passes. Retained messages arrive right after SUBACK, so a quiet gap
// means the broker has sent them all.
func collectStatus(ctx context.Context, ch <-chan message, prefix string, quiet, max time.Duration) []deviceStatus {
	byDevice := map[string]deviceStatus{}
	deadline := time.NewTimer(max)
	defer deadline.Stop()
	idle := time.NewTimer(quiet)
	defer idle.Stop()
loop:
	for {
		select {
		case m := <-ch:
			id := deviceOfTopic(prefix, m.Topic)
			if id == "" {
				continue
			}
			if len(m.Payload) == 0 {
				// An empty retained message deletes the device's
				// status: it was decommissioned.
				delete(byDevice, id)
			} else {
				byDevice[id] = parseStatus(id, m.Payload)
			}
			if !idle.Stop() {
				select {
				case <-idle.C:
				default:
				}
			}
			idle.Reset(quiet)
		case <-idle.C:
			break loop
		case <-deadline.C:
			break loop
		case <-ctx.Done():
			break loop
		}
	}
	rows := make([]deviceStatus, 0, len(byDevice))
	for _, r := range byDevice {
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Device < rows[j].Device })
	return rows
}

func parseStatus(id string, payload []byte) deviceStatus {
	var s device.Status
	if err := json.Unmarshal(payload, &s); err != nil {
		return deviceStatus{Device: id, Error: "not JSON: " + err.Error()}
	}
	return deviceStatus{
		Device: id, Online: s.Online, Version: s.Version, Pending: s.Pending,
		ClockSynced: s.ClockSynced, StartedAt: s.StartedAt,
	}
}

// deviceOfTopic returns the device id in "<prefix>/<id>/…", or "".
func deviceOfTopic(prefix, topic string) string {
	rest, ok := strings.CutPrefix(topic, prefix+"/")
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(rest, "/")
	return id
}

func printStatusTable(g *Globals, rows []deviceStatus) {
	w := tabwriter.NewWriter(g.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "DEVICE\tONLINE\tVERSION\tPENDING\tCLOCK\tSTARTED")
	online := 0
	for _, r := range rows {
		if r.Error != "" {
			fmt.Fprintf(w, "%s\t?\t\t\t\t%s\n", r.Device, r.Error)
			continue
		}
		if r.Online {
			online++
		}
		clock := "synced"
		if !r.ClockSynced {
			clock = "UNSYNCED"
		}
		started, pending := r.StartedAt, fmt.Sprint(r.Pending)
		on := "yes"
		if !r.Online {
			// The Last Will carries only online=false: the rest is
			// unknown, not zero.
			on, clock, pending, started = "NO", "-", "-", "-"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Device, on, dash(r.Version), pending, clock, dash(started))
	}
	w.Flush()
	fmt.Fprintf(g.Stdout, "%s, %d online\n", count(len(rows), "device"), online)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

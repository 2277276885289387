package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kioskpay/kioskpay/contract"
)

// StatusCommand lists the fleet from the retained <prefix>/+/status topics.
type StatusCommand struct{}

const statusUsage = `Usage: kioskctl status [-device ID] [-want-version V] [-totals]

Collects the retained status message of every device under the prefix and
prints one row per device, then totals by online/offline and version. It
stops when the broker has sent every retained status (two end markers
kioskctl sends itself, to <prefix>/_kioskctl/…, come back), or gives up when
nothing arrives for -timeout. With -o json it prints one JSON object per
device as it arrives (a device whose status changes meanwhile appears again;
its last line is current), then one {"totals":…} object.

With -device, exits 1 unless that device is online (and runs -want-version,
when given): the health check for rollouts.

Exit codes: 0 the listing is complete; 1 failure (with -device: the device
is offline, unknown or runs another version); 2 bad usage; 4 the listing
may be incomplete (the end markers did not come back within -timeout of the
last message, or the connection was lost): the reason is on stderr and
what did arrive is printed.

Flags:
	-device ID          show only this device; exit 1 unless it is online
	-want-version V     with -device: also exit 1 unless it runs version V
	-totals             print only the totals, not a row per device
`

// Usage implements command.
func (c *StatusCommand) Usage() string { return statusUsage + "\nGlobal flags:\n" + globalFlagsUsage }

// deviceStatus is one row of the table and one line of -o json.
type deviceStatus struct {
	Device      string `json:"device"`
	Online      bool   `json:"online"`
	Version     string `json:"version,omitempty"`
	Pending     int    `json:"pending"`
	ClockSynced bool   `json:"clock_synced"`
	StartedAt   string `json:"started_at,omitempty"`
	// Flags are device conditions that need a person (storage_full, …).
	Flags []string `json:"flags,omitempty"`
	Error string   `json:"error,omitempty"` // unreadable status payload
}

// versionCounts is one version's line of the totals.
type versionCounts struct {
	Online  int `json:"online"`
	Offline int `json:"offline"`
}

// statusTotals sums a listing. A device whose status carries no version (a
// Last Will is only {"online":false}) counts under unknownVersion.
type statusTotals struct {
	Devices    int                      `json:"devices"`
	Online     int                      `json:"online"`
	Offline    int                      `json:"offline"`
	Unreadable int                      `json:"unreadable"`
	Versions   map[string]versionCounts `json:"versions"`
	// Complete is false when the listing may be missing devices;
	// Incomplete then says why.
	Complete   bool   `json:"complete"`
	Incomplete string `json:"incomplete,omitempty"`
}

const unknownVersion = "unknown"

func totalsOf(rows map[string]deviceStatus) statusTotals {
	t := statusTotals{Devices: len(rows), Versions: map[string]versionCounts{}}
	for _, r := range rows {
		if r.Error != "" {
			t.Unreadable++
			continue
		}
		v := r.Version
		if v == "" {
			v = unknownVersion
		}
		vc := t.Versions[v]
		if r.Online {
			t.Online++
			vc.Online++
		} else {
			t.Offline++
			vc.Offline++
		}
		t.Versions[v] = vc
	}
	return t
}

// Run implements command.
func (c *StatusCommand) Run(ctx context.Context, g *Globals, args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	var dev, wantVersion string
	var totalsOnly bool
	fs.StringVar(&dev, "device", "", "")
	fs.StringVar(&wantVersion, "want-version", "", "")
	fs.BoolVar(&totalsOnly, "totals", false, "")
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
	filter := g.topic("+", contract.TopicStatus)
	if dev != "" {
		filter = g.topic(dev, contract.TopicStatus)
	}
	l, err := conn.listRetained(ctx, nil, []string{filter})
	if err != nil {
		return err
	}
	out := bufio.NewWriterSize(g.Stdout, 64<<10)
	defer out.Flush()
	var stream func(deviceStatus) error
	if g.JSON() && !totalsOnly {
		stream = func(r deviceStatus) error { return writeJSONLine(out, r) }
	}
	rows, incomplete := collectStatus(ctx, l, g.Prefix, g.Timeout, stream)
	conn.Close()

	totals := totalsOf(rows)
	totals.Complete = incomplete == nil
	if incomplete != nil {
		totals.Incomplete = incomplete.reason
	}
	switch {
	case g.JSON():
		if err := writeJSONLine(out, struct {
			Totals statusTotals `json:"totals"`
		}{totals}); err != nil {
			return err
		}
	case len(rows) == 0:
		fmt.Fprintf(g.Stderr, "no device has published %s on %s\n", filter, conn.Broker())
	default:
		if !totalsOnly {
			printStatusTable(out, rows)
		}
		printTotals(out, totals)
	}
	if err := out.Flush(); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	if dev != "" {
		if r, ok := rows[dev]; ok {
			return checkDevice(r, wantVersion)
		}
		if incomplete != nil {
			return &exitError{code: ExitIncomplete, err: fmt.Errorf("device %s: %w", dev, incomplete)}
		}
		return fmt.Errorf("device %s has never reported a status on %s: is it provisioned with mqtt.topic_prefix %q?", dev, conn.Broker(), g.Prefix)
	}
	if incomplete != nil {
		return &exitError{code: ExitIncomplete, err: fmt.Errorf("%w (%s listed)", incomplete, count(len(rows), "device"))}
	}
	return nil
}

// checkDevice is the health check of status -device.
func checkDevice(r deviceStatus, wantVersion string) error {
	switch {
	case r.Error != "":
		return fmt.Errorf("device %s: unreadable status: %s", r.Device, r.Error)
	case !r.Online:
		return fmt.Errorf("device %s is offline: check 'systemctl status kioskpayd' and 'journalctl -u kioskpayd' on it", r.Device)
	case wantVersion != "" && r.Version != wantVersion:
		return fmt.Errorf("device %s runs version %q, want %q", r.Device, r.Version, wantVersion)
	}
	return nil
}

// collectStatus gathers status messages until the listing's end marker
// comes back. It gives up (and says why) when nothing at all arrives for
// idle, when the connection drops or when ctx ends: a large fleet on a
// slow link keeps the listing going for as long as messages flow. stream,
// when set, sees every status as it arrives (a device whose status changes
// during the listing appears again; its last line is current).
func collectStatus(ctx context.Context, l *listing, prefix string, idle time.Duration, stream func(deviceStatus) error) (map[string]deviceStatus, *incompleteError) {
	byDevice := map[string]deviceStatus{}
	timer := time.NewTimer(idle)
	defer timer.Stop()
	for {
		select {
		case m := <-l.C:
			if isMarker, done := l.Marker(m); done {
				return byDevice, nil
			} else if isMarker {
				continue
			}
			resetTimer(timer, idle)
			id := deviceOfTopic(prefix, m.Topic)
			if id == "" {
				continue
			}
			if len(m.Payload) == 0 {
				// An empty retained message deletes the device's
				// status: it was decommissioned.
				delete(byDevice, id)
				continue
			}
			r := parseStatus(id, m.Payload)
			byDevice[id] = r
			if stream != nil {
				if err := stream(r); err != nil {
					return byDevice, &incompleteError{"writing the output failed: " + err.Error()}
				}
			}
		case <-timer.C:
			return byDevice, l.stalled(idle)
		case <-l.conn.Lost():
			return byDevice, l.dropped()
		case <-ctx.Done():
			return byDevice, interrupted()
		}
	}
}

func parseStatus(id string, payload []byte) deviceStatus {
	var s contract.Status
	if err := json.Unmarshal(payload, &s); err != nil {
		return deviceStatus{Device: id, Error: "not JSON: " + err.Error()}
	}
	return deviceStatus{
		Device: id, Online: s.Online, Version: s.Version, Pending: s.Pending,
		ClockSynced: s.ClockSynced, StartedAt: s.StartedAt, Flags: s.Flags,
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

func printStatusTable(w io.Writer, rows map[string]deviceStatus) {
	ids := make([]string, 0, len(rows))
	for id := range rows {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tONLINE\tVERSION\tPENDING\tCLOCK\tSTARTED\tFLAGS")
	for _, id := range ids {
		r := rows[id]
		if r.Error != "" {
			fmt.Fprintf(tw, "%s\t?\t\t\t\t\t%s\n", r.Device, r.Error)
			continue
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Device, on, dash(r.Version), pending, clock, dash(started), dash(strings.Join(r.Flags, ",")))
	}
	tw.Flush()
	fmt.Fprintln(w)
}

// printTotals prints "N devices: A online, B offline" and a line per
// version, most devices first.
func printTotals(w io.Writer, t statusTotals) {
	fmt.Fprintf(w, "%s: %d online, %d offline", count(t.Devices, "device"), t.Online, t.Offline)
	if t.Unreadable > 0 {
		fmt.Fprintf(w, ", %d unreadable", t.Unreadable)
	}
	fmt.Fprintln(w)
	versions := make([]string, 0, len(t.Versions))
	for v := range t.Versions {
		versions = append(versions, v)
	}
	sort.Slice(versions, func(i, j int) bool {
		a, b := t.Versions[versions[i]], t.Versions[versions[j]]
		if a.Online+a.Offline != b.Online+b.Offline {
			return a.Online+a.Offline > b.Online+b.Offline
		}
		return versions[i] < versions[j]
	})
	if len(versions) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tONLINE\tOFFLINE")
	for _, v := range versions {
		c := t.Versions[v]
		fmt.Fprintf(tw, "%s\t%d\t%d\n", v, c.Online, c.Offline)
	}
	tw.Flush()
}

// writeJSONLine writes v as one line of JSON.
func writeJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode output: %w", err)
	}
	b = append(b, '\n')
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// asIncomplete reports whether err is an incomplete listing.
func asIncomplete(err error) bool {
	var ie *incompleteError
	return errors.As(err, &ie)
}

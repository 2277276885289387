package testrig

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// DeployConf is the fleet broker configuration the repository ships.
const DeployConf = "deploy/mosquitto/kioskpay.conf"

// deployLimitKeys are the directives of DeployConf that shape how a broker
// treats one client: what a fleet measurement must run with. The rest
// (TLS listener, passwords, ACL, persistence paths) is deployment, and a
// benchmark runs a plain loopback listener instead.
var deployLimitKeys = map[string]bool{
	"max_inflight_messages": true,
	"max_inflight_bytes":    true,
	"max_queued_messages":   true,
	"max_queued_bytes":      true,
	"queue_qos0_messages":   true,
	"max_packet_size":       true,
	"set_tcp_nodelay":       true,
	"upgrade_outgoing_qos":  true,
}

// DeployBrokerLimits returns the per-client limit lines of DeployConf, to
// pass to StartMosquitto (later lines override its defaults).
func DeployBrokerLimits(ctx context.Context) ([]string, error) {
	root, err := ModuleRoot(ctx)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(root, DeployConf))
	if err != nil {
		return nil, fmt.Errorf("deploy broker limits: %w", err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if k, _, _ := strings.Cut(l, " "); deployLimitKeys[k] {
			lines = append(lines, l)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("deploy broker limits: %w", err)
	}
	if len(lines) == 0 {
		return nil, fmt.Errorf("deploy broker limits: no limits in %s", DeployConf)
	}
	return lines, nil
}

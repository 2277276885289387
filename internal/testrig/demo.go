package testrig

import "regexp"

// Labels of the endpoint table `kioskpayd -demo` prints once it is up.
const (
	DemoBroker  = "MQTT broker"
	DemoSim     = "payment sim"
	DemoRelay   = "notify relay" // "paygate" with -backend gateway
	DemoGateway = "paygate"
	DemoWeb     = "web display"
	DemoDevice  = "device"
)

var demoEndpoint = regexp.MustCompile(`(?m)^  (` + DemoBroker + `|` + DemoSim + `|` + DemoRelay + `|` + DemoGateway + `|` + DemoWeb + `|` + DemoDevice + `) +(\S+)`)

// DemoEndpoints reads the endpoint table from what `kioskpayd -demo`
// printed: label → URL or device id. Labels not printed yet are absent.
func DemoEndpoints(out string) map[string]string {
	fields := map[string]string{}
	for _, m := range demoEndpoint.FindAllStringSubmatch(out, -1) {
		fields[m[1]] = m[2]
	}
	return fields
}

// Package testrig is the one end-to-end test rig: the pieces every test
// and measurement that drives kioskpay from the outside is built from.
//
//   - Sim serves paysim over real HTTP on a loopback port, in the test's
//     process, so killing a daemon never touches the provider's state;
//     WaitOrder watches an order there.
//   - Mosquitto is a private broker on a free port that can be stopped,
//     started and restarted; DeployBrokerLimits gives it the fleet
//     broker's per-client limits.
//   - Build and BuildAll compile the programs; Daemon runs one under test
//     (kioskpayd, paygate, notifyrelay, kioskpayd -demo) as a restartable
//     subprocess with its log in a file: Kill is a power cut, Freeze/Thaw
//     a stalled board, Abort the systemd watchdog. CheckLog checks a log
//     for secrets (KeySecrets) and panics.
//   - WriteConfig rewrites the daemon config paysim writes with dotted-key
//     overrides.
//   - Controller plays the devices' controllers: it publishes commands,
//     matches replies to requests, hands results to callbacks, and (with
//     Record) keeps every message for WaitMessage and Messages; with
//     Device it sees one device only. CheckSeqs holds recorded results to
//     the contract's seq rules.
//   - Rig puts a broker, a simulator, a controller and optional paygate
//     replicas together; Rig.Daemon adds devices.
//
// Users: e2e (the contract through real binaries), proof (crashes, faults
// and the money ledger), cmd/kioskbench (measurements), cmd/kioskctl's and
// cmd/fleetsim's tests, and device's in-process tests against paysim.
package testrig

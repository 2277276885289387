// Package proof measures what kioskpayd survives and what it costs to run.
//
// It drives the real daemon binary as a subprocess against a real Mosquitto
// broker (one started on a free port, so it can be restarted without
// disturbing anyone) and a paysim served over real HTTP, all from the
// shared rig in internal/testrig, and acts as the device's controller and
// the paying customer. A Ledger records
// everything the controller and the customer did and saw, and Check
// compares it with the simulator's money and the daemon's own orders.
//
// The long tests sit behind environment switches because they take minutes:
//
//	KIOSKPAY_CRASH_ROUNDS=500 go test -run TestCrash -v -timeout 2h ./proof
//	KIOSKPAY_SOAK=10m          go test -run TestFaultSoak -v -timeout 1h ./proof
//	KIOSKPAY_FLOOD=5000        go test -run TestFlood -v ./proof
//	KIOSKPAY_PROOF=1           go test -run 'TestDiskFull|TestFreeze|TestDamagedStore|TestBrokerInflight' -v ./proof
//	KIOSKPAY_PROOF=1           go test -run 'TestUnlockDrivers|TestUnlockCrash' -v ./proof
//	go run ./internal/qemuvm/fetchkernel && go test -run TestGPIOCrash -v ./proof
//
// The last three run the daemon with a local unlock driver (exec with a
// real program, serial through a pseudo-terminal with a scripted machine):
// the driver's outcome as the ack, and SIGKILL during the driver's action
// (KIOSKPAY_UNLOCK_CRASH_ROUNDS rounds per driver). TestGPIOCrash does the
// same for driver = "gpio" against a real kernel: this package's test
// binary boots as /init of an arm64 Linux under qemu (internal/qemuvm) and
// runs the broker (in-process), paysim and the cross-compiled daemon there,
// on the kernel's GPIO character device; the host checks relay times and
// pulse counts in qemu's trace of the emulated GPIO controller
// (KIOSKPAY_GPIO_CRASH_ROUNDS rounds per mode). It skips under -short or
// without qemu and the kernel.
//
// The hostile conditions are real ones: a tmpfs state directory filled to
// ENOSPC (as root; Tmpfs), SIGSTOP/SIGCONT (testrig.Daemon.Freeze), a supervisor
// that follows the shipped systemd unit's watchdog and restart policy
// (Supervisor), store files damaged on disk, and floods through a broker
// that queues them all.
//
// cmd/kioskbench reuses the same rig to measure latencies, provider calls
// per order, memory, wake-ups and throughput side by side.
package proof

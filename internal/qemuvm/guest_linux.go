package qemuvm

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ExitMark is what RunAsInit prints, followed by the tests' exit code, on
// the guest's console before it powers off: the host reads the verdict
// there.
const ExitMark = "KIOSKPAY-GUEST-EXIT"

// RunAsInit is TestMain for a test binary booted as /init: it mounts
// /dev, /proc, /sys, debugfs and a /tmp, brings the loopback interface up
// (so a broker and a simulator can listen on 127.0.0.1 with no network
// card), runs the tests, prints ExitMark and the code, and powers the
// machine off. It does not return.
func RunAsInit(m interface{ Run() int }) {
	for _, mt := range []struct{ src, dir, fs string }{
		{"devtmpfs", "/dev", "devtmpfs"},
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"debugfs", "/sys/kernel/debug", "debugfs"},
		{"tmpfs", "/tmp", "tmpfs"},
	} {
		os.MkdirAll(mt.dir, 0o755)
		if err := unix.Mount(mt.src, mt.dir, mt.fs, 0, ""); err != nil {
			fmt.Printf("mount %s: %v\n", mt.dir, err)
		}
	}
	if err := loopbackUp(); err != nil {
		fmt.Printf("loopback: %v\n", err)
	}
	code := m.Run()
	fmt.Printf("%s %d\n", ExitMark, code)
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

// loopbackUp sets IFF_UP on "lo"; the kernel then gives it 127.0.0.1.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("set flags: %w", err)
	}
	return nil
}

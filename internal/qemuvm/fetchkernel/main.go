// Command fetchkernel gets the arm64 kernel image the qemu-backed hardware
// tests boot: Debian's linux-image-cloud-arm64 (it has the PL061 GPIO driver
// and the GPIO character device built in, and no gpio-keys driver to claim
// the line qemu wires to its power button). It uses apt, so it works on any
// Debian machine with the archive configured:
//
//	go run ./internal/qemuvm/fetchkernel          # prints the image's path
//
// It adds the arm64 architecture to dpkg when missing (needed to download,
// not to install: nothing is installed), downloads the package, extracts
// vmlinuz into the user cache directory and removes the rest. Run as root.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/kioskpay/kioskpay/internal/qemuvm"
)

// meta is the package that always depends on the current kernel.
const meta = "linux-image-cloud-arm64:arm64"

func main() {
	force := flag.Bool("force", false, "download again even when an image is present")
	flag.Parse()
	if err := run(*force); err != nil {
		fmt.Fprintln(os.Stderr, "fetchkernel:", err)
		os.Exit(1)
	}
}

func run(force bool) error {
	dst, err := qemuvm.DefaultKernelPath()
	if err != nil {
		return err
	}
	if _, err := os.Stat(dst); err == nil && !force {
		fmt.Println(dst)
		return nil
	}
	archs, err := output("dpkg", "--print-foreign-architectures")
	if err != nil {
		return err
	}
	if !strings.Contains(archs, "arm64") {
		fmt.Fprintln(os.Stderr, "fetchkernel: dpkg --add-architecture arm64; apt-get update")
		if _, err := output("dpkg", "--add-architecture", "arm64"); err != nil {
			return err
		}
		if _, err := output("apt-get", "update", "-qq"); err != nil {
			return err
		}
	}
	pkg, err := kernelPackage()
	if err != nil {
		// Lists may predate the added architecture.
		if _, uerr := output("apt-get", "update", "-qq"); uerr != nil {
			return uerr
		}
		if pkg, err = kernelPackage(); err != nil {
			return err
		}
	}
	tmp, err := os.MkdirTemp("", "fetchkernel")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	// apt drops privileges to _apt for downloads; let it write here.
	if err := os.Chmod(tmp, 0o777); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "fetchkernel: apt-get download", pkg)
	dl := exec.Command("apt-get", "download", "-qq", pkg)
	dl.Dir = tmp
	dl.Stderr = os.Stderr
	if err := dl.Run(); err != nil {
		return fmt.Errorf("apt-get download %s: %w", pkg, err)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("want one .deb in %s, found %d", tmp, len(debs))
	}
	root := filepath.Join(tmp, "root")
	if _, err := output("dpkg-deb", "-x", debs[0], root); err != nil {
		return err
	}
	images, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(images) != 1 {
		return fmt.Errorf("want one boot/vmlinuz-* in %s, found %d", debs[0], len(images))
	}
	img, err := os.ReadFile(images[0])
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(dst+".tmp", img, 0o644); err != nil {
		return err
	}
	if err := os.Rename(dst+".tmp", dst); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "fetchkernel: %s from %s\n", filepath.Base(images[0]), filepath.Base(debs[0]))
	fmt.Println(dst)
	return nil
}

var dependsRe = regexp.MustCompile(`Depends: (linux-image-[0-9][^ \n]*-cloud-arm64)(:arm64)?`)

// kernelPackage resolves the meta package to the versioned image package.
func kernelPackage() (string, error) {
	out, err := output("apt-cache", "depends", meta)
	if err != nil {
		return "", err
	}
	m := dependsRe.FindStringSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("apt-cache depends %s names no kernel image package", meta)
	}
	return m[1] + ":arm64", nil
}

func output(name string, args ...string) (string, error) {
	var stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

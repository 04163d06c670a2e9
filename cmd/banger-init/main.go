// Command banger-init is the /init of the initramfs banger builds for
// distribution kernels (see internal/initramfs). It must be built static:
//
//	CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' ./cmd/banger-init
//
// As PID 1 it mounts /proc, /sys and /dev, loads the initramfs's modules,
// mounts the root device named on the kernel command line, switches to it
// and execs the real init. On any fatal error it prints the reason on the
// console and powers the machine off.
package main

import (
	"fmt"
	"os"

	"banger/internal/initramfs/guestinit"
)

func main() {
	if os.Getpid() != 1 {
		// Run anywhere else it would mount over the host's /proc and /dev.
		fmt.Fprintln(os.Stderr, "banger-init: must run as PID 1, as an initramfs's /init; it is not a host command")
		os.Exit(2)
	}
	guestinit.Main()
}

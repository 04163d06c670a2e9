package guestinit

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// Console is banger-init's log: every line goes to the console, where the
// user of `banger vm logs` sees it whatever the kernel's log level, and to
// the kernel log (dmesg) at debug level, so that it is kept there without
// the kernel printing it to the console a second time.
type Console struct {
	console io.Writer // never nil
	kmsg    io.Writer // nil until /dev is mounted
}

// NewConsole writes to w (the console) and, once SetKmsg is called, to the
// kernel log.
func NewConsole(w io.Writer) *Console { return &Console{console: w} }

// OpenConsole opens /dev/console, falling back to standard error (which the
// kernel points at the console when it can open one).
func OpenConsole() *Console {
	f, err := os.OpenFile("/dev/console", os.O_WRONLY, 0)
	if err != nil {
		return NewConsole(os.Stderr)
	}
	return NewConsole(f)
}

// OpenKmsg starts copying lines to /dev/kmsg; failures are ignored, the
// console still has every line.
func (c *Console) OpenKmsg() {
	if f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0); err == nil {
		c.kmsg = f
	}
}

// Printf logs one line.
func (c *Console) Printf(format string, args ...any) {
	msg := strings.TrimRight(fmt.Sprintf(format, args...), "\n")
	fmt.Fprintf(c.console, "banger-init: %s\n", msg)
	if c.kmsg != nil {
		// One write per record; "<7>" is KERN_DEBUG.
		fmt.Fprintf(c.kmsg, "<7>banger-init: %s\n", msg)
	}
}

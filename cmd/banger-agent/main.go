// Command banger-agent runs inside banger's guests: as their init (PID 1), or as a
// service under the image's own init. It serves the control API to the host
// (vsock or virtio-serial) and SSH on port 22. See internal/agent for the design.
//
//	banger-agent [service] [flags]   control API and SSH as an ordinary process
//	banger-agent init                PID 1: set the guest up, then serve (automatic when PID 1)
//	banger-agent sftp-server         sftp on stdin/stdout (run by the SSH server as the login user)
//	banger-agent version
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"banger/internal/buildinfo"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "banger-agent:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	mode := "service"
	if os.Getpid() == 1 {
		mode = "init"
	}
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		mode, args = args[0], args[1:]
	}
	switch mode {
	case "version":
		_, err := fmt.Fprintln(stdout, buildinfo.Get())
		return err
	case "sftp-server":
		return runSFTPServer()
	case "service":
		opts, err := parseServiceFlags(args, stderr)
		if err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		return runService(ctx, opts, newLogger(stderr, opts.logLevel))
	case "init":
		return runInit(args, stderr)
	default:
		return fmt.Errorf("unknown mode %q: want service, init, sftp-server or version", mode)
	}
}

func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// errUsage is returned after flag parsing printed its own message.
var errUsage = errors.New("invalid usage")

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

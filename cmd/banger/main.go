// Command banger is the CLI: a thin client of bangerd, plus `banger system run` which
// starts the helper and the daemon.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"banger/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := cli.Execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/pkg/sftp"
)

// runSFTPServer serves sftp on stdin/stdout. The SSH server starts it as the login
// user, so the kernel enforces that user's permissions on every file operation.
func runSFTPServer() error {
	dir, err := os.UserHomeDir()
	if err != nil || !exists(dir) {
		dir = "/"
	}
	rw := struct {
		io.Reader
		io.Writer
		io.Closer
	}{os.Stdin, os.Stdout, os.Stdout}
	srv, err := sftp.NewServer(rw, sftp.WithServerWorkingDirectory(dir))
	if err != nil {
		return fmt.Errorf("sftp: %w", err)
	}
	if err := srv.Serve(); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("sftp: %w", err)
	}
	return nil
}

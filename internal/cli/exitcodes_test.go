package cli

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"banger/internal/api"
)

// TestExitCodes runs the real command tree in process against a root where no daemon
// runs, and checks the exit code and message the README documents for each kind of
// mistake: 2 for usage errors (unknown commands and subcommands, bad flags, missing or
// extra arguments), 3 when the daemon is down, 0 for help.
func TestExitCodes(t *testing.T) {
	root := t.TempDir()
	for _, tt := range []struct {
		name   string
		args   []string
		code   int
		stderr []string // substrings; nil: stderr must be empty
	}{
		{"help", []string{"--help"}, 0, nil},
		{"bare group shows help", []string{"vm"}, 0, nil},
		{"unknown command", []string{"nosuch"}, 2, []string{`unknown command "nosuch" for "banger"`, "banger --help"}},
		{"unknown vm subcommand", []string{"vm", "lss"}, 2, []string{`unknown command "lss" for "banger vm"`, `"ls"`}},
		{"unknown image subcommand", []string{"image", "lss"}, 2, []string{`unknown command "lss" for "banger image"`}},
		{"unknown system subcommand", []string{"system", "strat"}, 2, []string{`"banger system"`}},
		{"unknown flag", []string{"vm", "ls", "--nope"}, 2, []string{"unknown flag: --nope", "banger vm ls --help"}},
		{"unknown root flag", []string{"--nope"}, 2, []string{"unknown flag: --nope"}},
		{"missing argument", []string{"vm", "inspect"}, 2, []string{"banger vm inspect", "banger vm inspect --help"}},
		{"extra argument", []string{"version", "extra"}, 2, []string{"banger version"}},
		{"bad flag value", []string{"vm", "create", "--memory", "lots", "busybox"}, 2, []string{"--memory"}},
		{"daemon down", []string{"vm", "ls"}, 3, []string{"banger:"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := Execute(context.Background(), append(tt.args, "--root", root), &out, &errOut)
			if code != tt.code {
				t.Errorf("banger %s: exit %d, want %d (stderr %q)", strings.Join(tt.args, " "), code, tt.code, errOut.String())
			}
			if tt.stderr == nil && errOut.Len() > 0 {
				t.Errorf("stderr %q, want nothing", errOut.String())
			}
			for _, s := range tt.stderr {
				if !strings.Contains(errOut.String(), s) {
					t.Errorf("stderr %q lacks %q", errOut.String(), s)
				}
			}
		})
	}
}

// TestCommandExitIsNotAnError: a guest command's own non-zero status passes through
// without a "banger: command exited" line; a death by signal is still said.
func TestCommandExitIsNotAnError(t *testing.T) {
	if err := commandExit(7, ""); exitCode(err) != 7 || !isSilent(err) {
		t.Errorf("commandExit(7) = %v: code %d, silent %v; want 7, silent", err, exitCode(err), isSilent(err))
	}
	if err := commandExit(137, "KILL"); exitCode(err) != 137 || isSilent(err) || !strings.Contains(err.Error(), "KILL") {
		t.Errorf("commandExit(137, KILL) = %v: want code 137 with a message naming the signal", err)
	}
}

// TestBatchSummary: several names going on past failures end with a summary naming
// the failed ones; a single name's error is the command's own; the exit code is the
// one the failures share.
func TestBatchSummary(t *testing.T) {
	notFound := errors.New(`no VM named "b" (banger vm ls lists them)`)
	for _, tt := range []struct {
		name    string
		names   []string
		fails   map[string]error
		code    int
		summary string
		lines   []string
	}{
		{"all fine", []string{"a", "b"}, nil, 0, "", nil},
		{"one of three", []string{"a", "b", "c"}, map[string]error{"b": notFound}, 1, "could not stop 1 of 3 VMs: b", []string{`banger: b: no VM named "b"`}},
		{"single name", []string{"b"}, map[string]error{"b": notFound}, 1, `no VM named "b"`, nil},
		{"daemon down for all", []string{"a", "b"}, map[string]error{"a": api.ErrDaemonDown, "b": api.ErrDaemonDown}, 3, "could not stop 2 of 2 VMs: a, b", nil},
		{"mixed codes", []string{"a", "b"}, map[string]error{"a": api.ErrDaemonDown, "b": notFound}, 1, "could not stop 2 of 2 VMs: a, b", nil},
		// A per-name line may carry a guest's text: shown, not obeyed.
		{"escapes neutralised", []string{"a", "b"}, map[string]error{"a": errors.New("boot failed: \x1b]52;c;ZXZpbA==\x07")}, 1, "could not stop 1 of 2 VMs: a", []string{"boot failed: ^[]52;c;ZXZpbA==^G"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var errOut bytes.Buffer
			b := newBatch(&errOut, tt.names, "VMs", "stop")
			for _, n := range tt.names {
				if err := tt.fails[n]; err != nil {
					b.fail(n, err)
				}
			}
			err := b.err()
			if tt.summary == "" {
				if err != nil {
					t.Fatalf("err = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.summary) || exitCode(err) != tt.code {
				t.Fatalf("err = %v (exit %d), want %q with exit %d", err, exitCode(err), tt.summary, tt.code)
			}
			for _, l := range tt.lines {
				if !strings.Contains(errOut.String(), l) {
					t.Errorf("stderr %q lacks %q", errOut.String(), l)
				}
			}
			if strings.ContainsRune(errOut.String(), 0x1b) {
				t.Errorf("stderr %q carries a raw ESC", errOut.String())
			}
			if len(tt.names) == 1 && errOut.Len() > 0 {
				t.Errorf("single name printed %q as well as returning its error", errOut.String())
			}
		})
	}
}

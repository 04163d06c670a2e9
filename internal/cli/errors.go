package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/termsafe"
)

func asErr[T error](err error, target *T) bool { return errors.As(err, target) }

func isDaemonDown(err error) bool { return errors.Is(err, api.ErrDaemonDown) }

// exitCodeError carries a specific exit status. A silent one prints nothing: the
// status is the guest command's own, already reported by the command itself.
type exitCodeError struct {
	code   int
	err    error
	silent bool
}

func (e *exitCodeError) Error() string { return e.err.Error() }
func (e *exitCodeError) Unwrap() error { return e.err }

// Exit codes, as the README documents them.
const (
	exitFailure    = 1
	exitUsage      = 2
	exitDaemonDown = 3
)

// usageError marks err as the caller's mistake in the command line (exit 2).
func usageError(err error) error { return &exitCodeError{code: exitUsage, err: err} }

// commandExit passes on the exit status of a command run in a guest (vm exec,
// vm run -- CMD, vm ssh). Only a death by signal is worth a line of its own: a
// shell would say "Killed" too; a plain non-zero status is the command's answer.
func commandExit(code int, signal string) error {
	if signal != "" {
		return &exitCodeError{code: code, err: fmt.Errorf("command killed by signal %s", signal)}
	}
	return &exitCodeError{code: code, err: fmt.Errorf("command exited with %d", code), silent: true}
}

// exitCode maps an error to the process's exit status.
func exitCode(err error) int {
	var ec *exitCodeError
	if asErr(err, &ec) {
		return ec.code
	}
	if isDaemonDown(err) {
		return exitDaemonDown
	}
	return exitFailure
}

// isSilent says whether err should exit without a message.
func isSilent(err error) bool {
	var ec *exitCodeError
	return asErr(err, &ec) && ec.silent
}

// strictUsage makes every usage mistake exit 2 with a pointer to the help: a bad flag
// (through the flag error function, inherited by every command), wrong arguments (each
// command's Args validator is wrapped), and an unknown subcommand, which cobra would
// otherwise answer for a command group with its help and exit 0 ("banger vm lss").
func strictUsage(root *cobra.Command) {
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError(fmt.Errorf("%w: see '%s --help'", err, c.CommandPath()))
	})
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		if c.SuggestionsMinimumDistance <= 0 {
			c.SuggestionsMinimumDistance = 2 // cobra's own default, which SuggestionsFor does not apply
		}
		if c.HasSubCommands() && c.Run == nil && c.RunE == nil {
			c.Args = cobra.ArbitraryArgs
			c.RunE = func(cmd *cobra.Command, args []string) error {
				if len(args) == 0 {
					return cmd.Help()
				}
				msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
				if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
					msg += fmt.Sprintf(" (did you mean %s?)", quoteOr(s))
				}
				return usageError(fmt.Errorf("%s: see '%s --help'", msg, cmd.CommandPath()))
			}
			return
		}
		if orig := c.Args; orig != nil {
			c.Args = func(cmd *cobra.Command, args []string) error {
				if err := orig(cmd, args); err != nil {
					return usageError(fmt.Errorf("%s: %w: see '%s --help'", cmd.CommandPath(), err, cmd.CommandPath()))
				}
				return nil
			}
		}
	}
	walk(root)
}

// quoteOr renders ["ls", "logs"] as `"ls" or "logs"`.
func quoteOr(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = fmt.Sprintf("%q", w)
	}
	return strings.Join(q, " or ")
}

// batch runs one step on each of several names (vm stop a b c, image rm x y),
// going on after a failure, and sums up at the end. Each failure is reported on its
// own line as it happens, with its reason; the summary names the ones that failed.
// With a single name there is nothing to sum up: its error is the command's.
type batch struct {
	errOut io.Writer
	what   string // plural noun and verb for the summary: "VMs", "stop"
	verb   string
	names  []string
	failed []string
	codes  map[int]bool
	only   error // the error when there is one name
}

func newBatch(errOut io.Writer, names []string, what, verb string) *batch {
	return &batch{errOut: errOut, names: names, what: what, verb: verb, codes: map[int]bool{}}
}

// fail records that name failed with err.
func (b *batch) fail(name string, err error) {
	b.failed = append(b.failed, name)
	b.codes[exitCode(err)] = true
	if len(b.names) == 1 {
		b.only = err
		return
	}
	// Like every error the CLI prints, it may carry a guest's text (see Execute).
	fmt.Fprintf(b.errOut, "banger: %s: %s\n", termsafe.String(name), termsafe.String(err.Error()))
}

// err is the command's result: nil when nothing failed. Its exit code is the one
// every failure shares (3 when the daemon was down for all), else 1.
func (b *batch) err() error {
	if len(b.failed) == 0 {
		return nil
	}
	if b.only != nil {
		return b.only
	}
	code := exitFailure
	if len(b.codes) == 1 {
		for c := range b.codes {
			code = c
		}
	}
	return &exitCodeError{code: code, err: fmt.Errorf("could not %s %d of %d %s: %s", b.verb, len(b.failed), len(b.names), b.what, strings.Join(b.failed, ", "))}
}

// Package cli is the banger command line: one file per subcommand, each a thin client
// of bangerd's API (internal/api) except `system run|stop`, which start and stop the
// processes themselves.
package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/layout"
	"banger/internal/termsafe"
)

// Env is what every command may use; built once in Execute and passed down.
type Env struct {
	Out, Err io.Writer
	Logger   *slog.Logger
	rootFlag string
}

// Layout resolves the root from --root, BANGER_ROOT or the default.
func (e *Env) Layout() (layout.Layout, error) { return layout.Resolve(e.rootFlag) }

// Client returns a daemon client for the resolved root.
func (e *Env) Client() (*api.Client, error) {
	l, err := e.Layout()
	if err != nil {
		return nil, err
	}
	return api.NewClient(l.DaemonSocket()), nil
}

// NewRoot builds the command tree.
func NewRoot(env *Env) *cobra.Command {
	root := &cobra.Command{
		Use:           "banger",
		Short:         "Fast, disposable Linux microVMs",
		Long:          "banger runs fast, disposable Linux microVMs on this machine.\nThe daemon (bangerd) does the work; start it with `banger system run`.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&env.rootFlag, "root", "", "banger's root directory (default $"+layout.EnvRoot+" or "+layout.DefaultRoot+")")
	root.SetOut(env.Out)
	root.SetErr(env.Err)
	root.AddCommand(newVersionCmd(env), newSystemCmd(env), newImageCmd(env), newKernelCmd(env), newVMCmd(env), newSSHConfigCmd(env), newDoctorCmd(env))
	strictUsage(root)
	return root
}

// Execute runs the CLI and returns the process exit code.
func Execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	env := &Env{Out: stdout, Err: stderr, Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	root := NewRoot(env)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		if !isSilent(err) {
			// An error can carry a guest's text (its console's last lines, its
			// agent's words): never raw to the terminal.
			fmt.Fprintln(stderr, "banger:", termsafe.String(err.Error()))
		}
		return exitCode(err)
	}
	return 0
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

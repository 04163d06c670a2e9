package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/buildinfo"
)

func newVersionCmd(env *Env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the versions of banger and of the running daemon",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := struct {
				Client string `json:"client"`
				Daemon string `json:"daemon,omitempty"`
				API    string `json:"api,omitempty"`
			}{Client: buildinfo.Get()}
			if cl, err := env.Client(); err == nil {
				ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Second)
				defer cancel()
				if v, err := cl.Version(ctx); err == nil {
					out.Daemon, out.API = v.Version, v.API
				}
			}
			if asJSON {
				return writeJSON(env.Out, out)
			}
			fmt.Fprintf(env.Out, "banger  %s\n", out.Client)
			if out.Daemon != "" {
				fmt.Fprintf(env.Out, "bangerd %s (api %s)\n", out.Daemon, out.API)
			} else {
				fmt.Fprintln(env.Out, "bangerd not running")
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

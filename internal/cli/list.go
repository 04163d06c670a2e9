package cli

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"banger/internal/api"
)

// listing describes an `ls` command: --json prints the items, -q one id per
// line, and otherwise a table.
type listing[T any] struct {
	short  string
	fetch  func(*api.Client, context.Context) ([]T, error) // a method expression such as (*api.Client).VMs
	id     func(T) string                                  // what -q prints
	header string                                          // tab-separated column names
	row    func(T) string                                  // tab-separated cells
}

func newListCmd[T any](env *Env, l listing[T]) *cobra.Command {
	var asJSON, quiet bool
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   l.short,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := env.Client()
			if err != nil {
				return err
			}
			items, err := l.fetch(cl, cmd.Context())
			if err != nil {
				return err
			}
			switch {
			case asJSON:
				return writeJSON(env.Out, items)
			case quiet:
				for _, it := range items {
					fmt.Fprintln(env.Out, l.id(it))
				}
				return nil
			}
			w := tabwriter.NewWriter(env.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, l.header)
			for _, it := range items {
				fmt.Fprintln(w, l.row(it))
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print ids only")
	return cmd
}

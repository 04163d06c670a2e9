package cli

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/image/oci"
	"banger/internal/image/progress"
)

func newImageCmd(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "image",
		Aliases: []string{"images"},
		Short:   "Pull, import, list, inspect and remove root filesystem images",
	}
	cmd.AddCommand(newImagePullCmd(env), newImageImportCmd(env), newImageLsCmd(env), newImageInspectCmd(env), newImageRmCmd(env))
	return cmd
}

// progressFor renders events: JSON lines on stdout with --json, else bars on a
// terminal stderr or plain lines when it is piped.
func progressFor(env *Env, asJSON bool) progress.Func {
	w := env.Err
	if asJSON {
		w = env.Out
	}
	return progress.NewRenderer(w, progress.ModeFor(w, asJSON)).Handle
}

func printImageResult(env *Env, res api.ImageResult, asJSON bool) error {
	if asJSON {
		return writeJSON(env.Out, res)
	}
	how := "new"
	if res.Reused {
		how = "already present"
	}
	fmt.Fprintf(env.Out, "%s  %s  %s  (%s)\n", imageName(res.Image), shortID(res.Image.ID), progress.HumanBytes(res.Image.SizeBytes), how)
	return nil
}

func newImagePullCmd(env *Env) *cobra.Command {
	var (
		name   string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "pull REF",
		Short: "Pull an image from a registry, an OCI layout (oci:DIR) or a docker-save archive",
		Example: `  banger image pull debian:12
  banger image pull localhost:5000/team/dev:latest
  banger image pull oci:./layout:v1 --name dev
  banger image pull ./saved.tar`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := env.Client()
			if err != nil {
				return err
			}
			ref := absRef(args[0])
			var res api.ImageResult
			if src, perr := oci.ParseSource(ref); perr == nil && src.Kind != oci.KindRegistry {
				res, err = uploadPull(cmd.Context(), cl, src, name, progressFor(env, asJSON))
			} else if perr != nil && !errors.Is(perr, oci.ErrBadReference) {
				return localError(ref, perr)
			} else {
				res, err = cl.PullImage(cmd.Context(), api.ImagePullRequest{Ref: ref, Name: name}, progressFor(env, asJSON))
			}
			if err != nil {
				return err
			}
			return printImageResult(env, res, asJSON)
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "also tag the image with this name")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print progress events and the result as JSON lines")
	return cmd
}

// absRef makes local paths in a reference absolute (bangerd does not share our
// working directory); registry references pass through.
func absRef(ref string) string {
	for _, prefix := range []string{"oci:", "docker-archive:"} {
		if rest, ok := strings.CutPrefix(ref, prefix); ok && !strings.HasPrefix(rest, "/") {
			if abs, err := filepath.Abs(rest); err == nil {
				return prefix + abs
			}
		}
	}
	if strings.HasPrefix(ref, "./") || strings.HasPrefix(ref, "../") {
		if abs, err := filepath.Abs(ref); err == nil {
			return abs
		}
	}
	return ref
}

func newImageImportCmd(env *Env) *cobra.Command {
	var (
		name   string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "import PATH",
		Short: "Import a rootfs tarball (.tar, .tar.gz, .tar.zst), a directory or an ext4 file",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := env.Client()
			if err != nil {
				return err
			}
			path, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			res, err := uploadImport(cmd.Context(), cl, path, name, progressFor(env, asJSON))
			if err != nil {
				return err
			}
			return printImageResult(env, res, asJSON)
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "tag the image with this name (default: the file name)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print progress events and the result as JSON lines")
	return cmd
}

func newImageLsCmd(env *Env) *cobra.Command {
	return newListCmd(env, listing[api.Image]{
		short:  "List images",
		fetch:  (*api.Client).Images,
		id:     func(img api.Image) string { return img.ID },
		header: "NAME\tID\tSIZE\tKIND\tCREATED\tVMS",
		row: func(img api.Image) string {
			return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%d", imageName(img), shortID(img.ID), progress.HumanBytes(img.SizeBytes), img.Kind, ago(img.CreatedAt), len(img.UsedBy))
		},
	})
}

func newImageInspectCmd(env *Env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect REF",
		Short: "Show one image (by name, digest or digest prefix)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := env.Client()
			if err != nil {
				return err
			}
			img, err := cl.Image(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(env.Out, img)
			}
			w := tabwriter.NewWriter(env.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "id\t%s\n", img.ID)
			fmt.Fprintf(w, "tags\t%s\n", strings.Join(img.Tags, ", "))
			fmt.Fprintf(w, "kind\t%s\n", img.Kind)
			fmt.Fprintf(w, "source\t%s\n", img.Source)
			fmt.Fprintf(w, "size\t%s\n", progress.HumanBytes(img.SizeBytes))
			fmt.Fprintf(w, "file\t%s\n", img.Path)
			fmt.Fprintf(w, "guest agent\t%s\n", img.AgentVersion)
			fmt.Fprintf(w, "created\t%s\n", img.CreatedAt.Local().Format(time.RFC3339))
			fmt.Fprintf(w, "used by\t%s\n", orNone(strings.Join(img.UsedBy, ", ")))
			if len(img.Meta) > 2 {
				fmt.Fprintf(w, "meta\t%s\n", img.Meta)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newImageRmCmd(env *Env) *cobra.Command {
	var force, asJSON bool
	cmd := &cobra.Command{
		Use:     "rm REF...",
		Aliases: []string{"remove"},
		Short:   "Remove images (refused while VMs use one, unless -f, which untags it)",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := env.Client()
			if err != nil {
				return err
			}
			var results []api.ImageRemoveResult
			b := newBatch(env.Err, args, "images", "remove")
			for _, ref := range args {
				res, err := cl.RemoveImage(cmd.Context(), ref, force)
				if err != nil {
					b.fail(ref, err)
					continue
				}
				results = append(results, res)
				if !asJSON {
					printRemoved(env.Out, res)
				}
			}
			if asJSON {
				if err := writeJSON(env.Out, results); err != nil {
					return err
				}
			}
			return b.err()
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "untag images that VMs still use (their file stays until those VMs are removed)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printRemoved(w io.Writer, res api.ImageRemoveResult) {
	for _, t := range res.Untagged {
		fmt.Fprintf(w, "untagged %s\n", t)
	}
	if res.Removed {
		fmt.Fprintf(w, "removed %s\n", res.ID)
	} else if len(res.KeptFor) > 0 {
		fmt.Fprintf(w, "kept %s until VM(s) %s are removed\n", shortID(res.ID), strings.Join(res.KeptFor, ", "))
	}
}

func imageName(img api.Image) string {
	if len(img.Tags) > 0 {
		return img.Tags[0]
	}
	return "<none>"
}

func shortID(id string) string {
	h := strings.TrimPrefix(id, "sha256:")
	return h[:min(12, len(h))]
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ago formats a time as docker does: "3 minutes ago".
func ago(t time.Time) string {
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return plural(int(d.Minutes()), "minute") + " ago"
	case d < 48*time.Hour:
		return plural(int(d.Hours()), "hour") + " ago"
	default:
		return plural(int(d.Hours()/24), "day") + " ago"
	}
}

func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}

package cli

import (
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
)

func newKernelCmd(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "kernel",
		Aliases: []string{"kernels"},
		Short:   "Import, pull, list, inspect and remove guest kernels",
		Long: `Guest kernels are separate from images. Without --kernel, a VM boots the default
kernel: this host's /boot kernel with an initramfs banger generates from its modules
(QEMU driver). Firecracker needs a kernel with virtio-mmio, virtio-blk, virtio-net and
vsock built in: ` + "`banger kernel inspect`" + ` says whether one qualifies.`,
	}
	cmd.AddCommand(newKernelImportCmd(env), newKernelPullCmd(env), newKernelLsCmd(env), newKernelInspectCmd(env), newKernelRmCmd(env))
	return cmd
}

func newKernelImportCmd(env *Env) *cobra.Command {
	var initrd, name string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "import PATH",
		Short: "Import a kernel (bzImage or vmlinux) and an optional initrd",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := env.Client()
			if err != nil {
				return err
			}
			req := api.KernelImportRequest{Name: name}
			if req.Path, err = filepath.Abs(args[0]); err != nil {
				return err
			}
			if initrd != "" {
				if req.Initrd, err = filepath.Abs(initrd); err != nil {
					return err
				}
			}
			k, err := cl.ImportKernel(cmd.Context(), req)
			if err != nil {
				return err
			}
			return printKernel(env, k, asJSON)
		},
	}
	cmd.Flags().StringVar(&initrd, "initrd", "", "an initrd to boot the kernel with")
	cmd.Flags().StringVar(&name, "name", "", "name the kernel (default: its release)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newKernelPullCmd(env *Env) *cobra.Command {
	var name string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "pull REF",
		Short: "Pull an OCI image that carries a kernel (and optional initrd) in /boot",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := env.Client()
			if err != nil {
				return err
			}
			k, err := cl.PullKernel(cmd.Context(), api.KernelPullRequest{Ref: absRef(args[0]), Name: name})
			if err != nil {
				return err
			}
			return printKernel(env, k, asJSON)
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "name the kernel (default: its release)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printKernel(env *Env, k api.Kernel, asJSON bool) error {
	if asJSON {
		return writeJSON(env.Out, k)
	}
	fmt.Fprintf(env.Out, "%s  %s  %s\n", k.Name, shortID(k.ID), k.Version)
	return nil
}

func newKernelLsCmd(env *Env) *cobra.Command {
	return newListCmd(env, listing[api.Kernel]{
		short:  "List kernels",
		fetch:  (*api.Client).Kernels,
		id:     func(k api.Kernel) string { return k.ID },
		header: "NAME\tID\tVERSION\tINITRD\tCREATED",
		row: func(k api.Kernel) string {
			return fmt.Sprintf("%s\t%s\t%s\t%s\t%s", k.Name, shortID(k.ID), k.Version, yesNo(k.InitrdPath != ""), ago(k.CreatedAt))
		},
	})
}

func newKernelInspectCmd(env *Env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect REF",
		Short: "Show a kernel and whether it can boot under Firecracker and QEMU",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := env.Client()
			if err != nil {
				return err
			}
			k, err := cl.Kernel(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(env.Out, k)
			}
			w := tabwriter.NewWriter(env.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "id\t%s\nname\t%s\nversion\t%s\nkernel\t%s\ninitrd\t%s\ncreated\t%s\n",
				k.ID, k.Name, k.Version, k.Path, orNone(k.InitrdPath), k.CreatedAt.Local().Format(time.RFC3339))
			fmt.Fprintf(w, "firecracker\t%s\n", indentTab(k.Firecracker))
			fmt.Fprintf(w, "qemu\t%s\n", indentTab(k.QEMU))
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newKernelRmCmd(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "rm REF...",
		Aliases: []string{"remove"},
		Short:   "Remove kernels (refused while VMs use one)",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := env.Client()
			if err != nil {
				return err
			}
			b := newBatch(env.Err, args, "kernels", "remove")
			for _, ref := range args {
				k, err := cl.RemoveKernel(cmd.Context(), ref)
				if err != nil {
					b.fail(ref, err)
					continue
				}
				fmt.Fprintf(env.Out, "removed %s (%s)\n", k.Name, shortID(k.ID))
			}
			return b.err()
		},
	}
	return cmd
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func indentTab(s string) string { return strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n\t") }

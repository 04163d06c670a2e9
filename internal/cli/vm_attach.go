package cli

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/term"

	"banger/internal/agent/proto"
	"banger/internal/api"
)

// execOptions are `vm exec`'s flags.
type execOptions struct {
	Argv        []string
	Env         []string
	Dir, User   string
	TTY, Stdin  bool
	Out, ErrOut io.Writer
	In          io.Reader
}

// runExec runs a command in a VM through bangerd's attach stream and returns its
// exit status. With TTY the local terminal is put in raw mode and window size
// changes follow; without, SIGINT/SIGTERM are forwarded to the command.
func runExec(ctx context.Context, cl *api.Client, vm string, o execOptions) (proto.ExitStatus, error) {
	conn, err := cl.Attach(ctx, vm)
	if err != nil {
		return proto.ExitStatus{}, err
	}
	defer conn.Close()
	fc := proto.NewConn(conn)
	args := proto.ExecArgs{Argv: o.Argv, Env: o.Env, Dir: o.Dir, User: o.User, TTY: o.TTY, Stdin: o.Stdin}
	stdinFd := int(os.Stdin.Fd())
	if o.TTY && term.IsTerminal(stdinFd) {
		if w, h, err := term.GetSize(stdinFd); err == nil {
			args.Cols, args.Rows = uint16(w), uint16(h)
		}
	}
	if err := call(fc, proto.CallExec, args); err != nil {
		return proto.ExitStatus{}, err
	}
	if o.TTY && term.IsTerminal(stdinFd) {
		if old, err := term.MakeRaw(stdinFd); err == nil {
			defer term.Restore(stdinFd, old)
		}
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		defer signal.Stop(winch)
		go func() {
			for range winch {
				if w, h, err := term.GetSize(stdinFd); err == nil {
					_ = fc.WriteJSON(proto.FrameResize, proto.Resize{Rows: uint16(h), Cols: uint16(w)})
				}
			}
		}()
	} else if !o.TTY {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
		defer signal.Stop(sigs)
		go func() {
			for s := range sigs {
				_ = fc.WriteJSON(proto.FrameSignal, proto.Signal{Signal: s.(syscall.Signal).String()})
			}
		}()
	}
	if o.Stdin {
		go func() {
			_, _ = io.Copy(fc.DataWriter(proto.FrameStdin), o.In)
			_ = fc.WriteFrame(proto.FrameStdinEOF, nil)
		}()
	}
	for {
		f, err := fc.ReadFrame()
		if err != nil {
			return proto.ExitStatus{}, fmt.Errorf("exec in %s: the stream ended before the command did: %w", vm, err)
		}
		switch f.Type {
		case proto.FrameStdout:
			_, _ = o.Out.Write(f.Payload)
		case proto.FrameStderr:
			_, _ = o.ErrOut.Write(f.Payload)
		case proto.FrameExit:
			var st proto.ExitStatus
			if err := proto.DecodeJSON(f, &st); err != nil {
				return st, err
			}
			return st, nil
		}
	}
}

// call sends a request frame and reads its response.
func call(fc *proto.Conn, name string, args any) error {
	if err := fc.WriteJSON(proto.FrameRequest, map[string]any{"call": name, "args": args}); err != nil {
		return err
	}
	f, err := fc.ReadFrame()
	if err != nil {
		return fmt.Errorf("%s: no answer: %w", name, err)
	}
	var resp proto.Response
	if err := proto.DecodeJSON(f, &resp); err != nil {
		return err
	}
	if resp.Error != nil {
		return errors.New(resp.Error.Message)
	}
	return nil
}

// status reads a transfer's closing status frame.
func status(fc *proto.Conn) error {
	f, err := fc.ReadFrame()
	if err != nil {
		return err
	}
	var resp proto.Response
	if err := proto.DecodeJSON(f, &resp); err != nil {
		return err
	}
	if resp.Error != nil {
		return errors.New(resp.Error.Message)
	}
	return nil
}

// splitVMPath splits "NAME:/path" into its parts; ok is false for a local path.
func splitVMPath(s string) (vm, p string, ok bool) {
	name, rest, found := strings.Cut(s, ":")
	if !found || name == "" || strings.Contains(name, "/") {
		return "", "", false
	}
	return name, rest, true
}

// copyTo sends local path src into the VM: into dst when dst ends in "/",
// else as dst.
func copyTo(ctx context.Context, cl *api.Client, src, vm, dst string) error {
	if !path.IsAbs(dst) {
		return fmt.Errorf("guest path %q must be absolute (NAME:/path)", dst)
	}
	dir, name := path.Clean(dst), filepath.Base(src)
	if !strings.HasSuffix(dst, "/") {
		dir, name = path.Dir(dst), path.Base(dst)
	}
	conn, err := cl.Attach(ctx, vm)
	if err != nil {
		return err
	}
	defer conn.Close()
	fc := proto.NewConn(conn)
	if err := call(fc, proto.CallPut, proto.PutArgs{Dir: dir}); err != nil {
		return fmt.Errorf("copy to %s:%s: %w", vm, dst, err)
	}
	w := fc.DataWriter(proto.FrameData)
	if err := writeTar(w, src, name); err != nil {
		return err
	}
	if err := fc.WriteFrame(proto.FrameDataEnd, nil); err != nil {
		return err
	}
	if err := status(fc); err != nil {
		return fmt.Errorf("copy to %s:%s: %w", vm, dst, err)
	}
	return nil
}

// writeTar archives src under the name name (a file, or a tree).
func writeTar(w io.Writer, src, name string) error {
	tw := tar.NewWriter(w)
	root := filepath.Clean(src)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		var link string
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		hdr.Name = filepath.ToSlash(filepath.Join(name, rel))
		if info.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("archive %s: %w", src, err)
	}
	return tw.Close()
}

// copyFrom fetches the VM's src into local dst: into it when dst is a
// directory, else as dst.
func copyFrom(ctx context.Context, cl *api.Client, vm, src, dst string) error {
	if !path.IsAbs(src) {
		return fmt.Errorf("guest path %q must be absolute (NAME:/path)", src)
	}
	dir, rename := dst, ""
	if st, err := os.Stat(dst); err != nil || !st.IsDir() {
		dir, rename = filepath.Dir(dst), filepath.Base(dst)
	}
	conn, err := cl.Attach(ctx, vm)
	if err != nil {
		return err
	}
	defer conn.Close()
	fc := proto.NewConn(conn)
	if err := call(fc, proto.CallGet, proto.GetArgs{Path: src}); err != nil {
		return fmt.Errorf("copy from %s:%s: %w", vm, src, err)
	}
	if err := extractTar(fc.DataReader(), dir, path.Base(src), rename); err != nil {
		return err
	}
	if err := status(fc); err != nil {
		return fmt.Errorf("copy from %s:%s: %w", vm, src, err)
	}
	return nil
}

// extractTar unpacks into dir, renaming the top entry from top to rename (when
// set); an entry that would land outside dir is refused.
func extractTar(r io.Reader, dir, top, rename string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			_, _ = io.Copy(io.Discard, r) // drain to the end frame
			return nil
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		name := path.Clean(hdr.Name)
		if rename != "" && (name == top || strings.HasPrefix(name, top+"/")) {
			name = rename + strings.TrimPrefix(name, top)
		}
		mode := fs.FileMode(hdr.Mode).Perm()
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, mode|0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			f, err := root.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			f.Close()
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			_ = root.Remove(name)
			if err := root.Symlink(hdr.Linkname, name); err != nil {
				return err
			}
		}
	}
}

package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"banger/internal/agent/proto"
)

// ExecRequest describes a command to run in the guest.
type ExecRequest struct {
	Argv []string
	Env  []string // "K=V", added to the user's login environment
	Dir  string   // default: the user's home
	User string   // default: the agent's own user (root)
	// TTY runs the command on a pty of Rows×Cols (default 24×80); its output, stderr
	// included, arrives on Stdout.
	TTY        bool
	Rows, Cols uint16
	// Stdin, when set, is copied to the command; its EOF closes the command's stdin.
	Stdin io.Reader
	// Stdout and Stderr receive the output; nil discards it.
	Stdout, Stderr io.Writer
}

// ExitStatus is how a command ended.
type ExitStatus = proto.ExitStatus

// Process is a command running in the guest.
type Process struct {
	PID int // in the guest

	s    *stream
	ctx  context.Context
	done chan struct{}
	st   ExitStatus
	err  error

	stdinOnce sync.Once
}

// Exec runs a command and waits for it: the exit status, or an error when the
// command could not start or the session failed. A non-zero exit is not an error.
// Cancelling ctx kills the command (the agent kills its process group when the
// stream goes away).
func (c *Client) Exec(ctx context.Context, req ExecRequest) (ExitStatus, error) {
	p, err := c.Start(ctx, req)
	if err != nil {
		return ExitStatus{}, err
	}
	return p.Wait()
}

// Start starts a command and returns once it runs in the guest.
func (c *Client) Start(ctx context.Context, req ExecRequest) (*Process, error) {
	args := proto.ExecArgs{
		Argv: req.Argv, Env: req.Env, Dir: req.Dir, User: req.User,
		TTY: req.TTY, Rows: req.Rows, Cols: req.Cols, Stdin: req.Stdin != nil,
	}
	s, raw, err := c.open(ctx, proto.CallExec, args)
	if err != nil {
		return nil, err
	}
	var started proto.ExecStarted
	if err := json.Unmarshal(raw, &started); err != nil {
		s.close()
		return nil, fmt.Errorf("agent exec: decode result: %w", err)
	}
	p := &Process{PID: started.PID, s: s, ctx: ctx, done: make(chan struct{})}
	if req.Stdin != nil {
		go p.copyStdin(req.Stdin)
	}
	go p.readOutput(req.Stdout, req.Stderr)
	return p, nil
}

// copyStdin sends stdin until its EOF, then the EOF frame. Errors end the copy
// silently: the process may well have exited without reading everything.
func (p *Process) copyStdin(r io.Reader) {
	buf := make([]byte, proto.DataChunkSize)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if werr := p.s.conn.WriteFrame(proto.FrameStdin, buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			break
		}
	}
	_ = p.CloseStdin()
}

// CloseStdin sends EOF to the command's stdin (on a pty, the EOF character).
func (p *Process) CloseStdin() error {
	var err error
	p.stdinOnce.Do(func() { err = p.s.conn.WriteFrame(proto.FrameStdinEOF, nil) })
	return err
}

func (p *Process) readOutput(stdout, stderr io.Writer) {
	defer close(p.done)
	defer p.s.close()
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	for {
		f, err := p.s.conn.ReadFrame()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("stream ended before the exit status: %w", io.ErrUnexpectedEOF)
			}
			p.err = p.s.wrap(p.ctx, proto.CallExec, err)
			return
		}
		switch f.Type {
		case proto.FrameStdout:
			if _, err := stdout.Write(f.Payload); err != nil {
				p.err = fmt.Errorf("agent exec: write stdout: %w", err)
				return // closing the stream makes the agent kill the command
			}
		case proto.FrameStderr:
			if _, err := stderr.Write(f.Payload); err != nil {
				p.err = fmt.Errorf("agent exec: write stderr: %w", err)
				return
			}
		case proto.FrameExit:
			if err := proto.DecodeJSON(f, &p.st); err != nil {
				p.err = fmt.Errorf("agent exec: %w", err)
			}
			return
		case proto.FrameResponse:
			// the agent answers a second time only to refuse something mid-stream
			var resp proto.Response
			if err := proto.DecodeJSON(f, &resp); err == nil && resp.Error != nil {
				p.err = fmt.Errorf("agent exec: %w", resp.Error)
			} else {
				p.err = fmt.Errorf("agent exec: unexpected response frame")
			}
			return
		default:
			p.err = fmt.Errorf("agent exec: unexpected %s frame", f.Type)
			return
		}
	}
}

// Wait waits for the command to exit and its output to be delivered.
func (p *Process) Wait() (ExitStatus, error) {
	<-p.done
	return p.st, p.err
}

// Signal sends a signal ("TERM", "SIGINT", "9") to the command's process group.
func (p *Process) Signal(sig string) error {
	if err := p.s.conn.WriteJSON(proto.FrameSignal, proto.Signal{Signal: sig}); err != nil {
		return fmt.Errorf("agent exec: signal %s: %w", sig, err)
	}
	return nil
}

// Resize changes the command's pty size (ignored without a pty).
func (p *Process) Resize(rows, cols uint16) error {
	if err := p.s.conn.WriteJSON(proto.FrameResize, proto.Resize{Rows: rows, Cols: cols}); err != nil {
		return fmt.Errorf("agent exec: resize: %w", err)
	}
	return nil
}

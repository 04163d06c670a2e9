package vmservice

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"sync"

	"banger/internal/agent/proto"
)

// Attach bridges one agent call — exec, put or get — between a client stream and
// the VM's agent. The client speaks the agent's own frame protocol (see
// internal/agent/doc.go): a request frame, then the call's frames both ways.
// bangerd checks the call, adds the VM's --env to an exec, and splices the rest
// untouched, so exec streams, pty resizes, signals and tar transfers need no
// second protocol.
func (s *Service) Attach(ctx context.Context, ref string, conn io.ReadWriteCloser) error {
	defer conn.Close()
	req, err := readRequest(conn)
	if err != nil {
		return err
	}
	vm, err := s.d.Store.GetVM(ctx, ref)
	if err != nil {
		return replyError(conn, proto.CodeNotFound, err.Error())
	}
	switch req.Call {
	case proto.CallExec:
		var args proto.ExecArgs
		if err := json.Unmarshal(req.Args, &args); err != nil {
			return replyError(conn, proto.CodeBadRequest, "exec arguments: "+err.Error())
		}
		if len(args.Argv) == 0 {
			return replyError(conn, proto.CodeBadRequest, "exec needs a command: banger vm exec NAME -- CMD [ARGS...]")
		}
		args.Env = append(append([]string(nil), decodeSpec(vm.Spec).Env...), args.Env...)
		req.Args, _ = json.Marshal(args)
	case proto.CallPut, proto.CallGet:
	default:
		return replyError(conn, proto.CodeBadRequest, fmt.Sprintf("call %q cannot be attached: only exec, put and get", req.Call))
	}
	c, err := s.agent(ctx, vm)
	if err != nil {
		return replyError(conn, proto.CodeUnsupported, err.Error())
	}
	raw, err := c.OpenRawStream()
	if err != nil {
		return replyError(conn, proto.CodeInternal, fmt.Sprintf("vm %q: open an agent stream: %v", vm.Name, err))
	}
	defer raw.Close()
	if err := proto.NewConn(raw).WriteJSON(proto.FrameRequest, req); err != nil {
		return err
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(raw, conn) // client → agent: stdin, resizes, signals, tar data
	}()
	_, err = io.Copy(conn, raw) // agent → client until the call's last frame
	conn.Close()                // ends the other direction
	raw.Close()
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// readRequest reads exactly the first frame (unbuffered: everything after it is
// spliced through as it is).
func readRequest(r io.Reader) (proto.Request, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return proto.Request{}, fmt.Errorf("attach: read request: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if proto.FrameType(hdr[0]) != proto.FrameRequest || n > proto.MaxJSONFrameSize {
		return proto.Request{}, fmt.Errorf("attach: the first frame must be a request of at most %d bytes", proto.MaxJSONFrameSize)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return proto.Request{}, fmt.Errorf("attach: read request: %w", err)
	}
	var req proto.Request
	if err := json.Unmarshal(b, &req); err != nil {
		return proto.Request{}, fmt.Errorf("attach: request: %w", err)
	}
	return req, nil
}

func replyError(w io.Writer, code, msg string) error {
	return proto.NewConn(struct {
		io.Reader
		io.Writer
	}{nil, w}).WriteJSON(proto.FrameResponse, proto.Response{Error: &proto.Error{Code: code, Message: msg}})
}

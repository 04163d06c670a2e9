package client

import (
	"context"
	"errors"
	"fmt"
	"io"

	"banger/internal/agent/proto"
)

// CopyTo extracts the tar stream archive into dir in the guest (an absolute path,
// created if missing). With user set, the extracted entries belong to that guest
// user; otherwise they keep the archive's owners. Entries that would land outside
// dir are refused (proto.ErrPermission) and stop the copy.
func (c *Client) CopyTo(ctx context.Context, dir, user string, archive io.Reader) error {
	s, _, err := c.open(ctx, proto.CallPut, proto.PutArgs{Dir: dir, User: user})
	if err != nil {
		return err
	}
	defer s.close()
	// the agent may refuse an entry before the archive ends: read its status while
	// sending, and stop sending when it comes
	status := make(chan error, 1)
	go func() { status <- readStatus(s) }()
	sent := make(chan error, 1)
	go func() {
		_, err := io.Copy(s.conn.DataWriter(proto.FrameData), archive)
		if err == nil {
			err = s.conn.WriteFrame(proto.FrameDataEnd, nil)
		}
		sent <- err
	}()
	select {
	case err := <-status:
		if err != nil {
			return s.wrap(ctx, proto.CallPut, err)
		}
		return nil
	case err := <-sent:
		if err != nil {
			s.close() // unblocks the status reader
			<-status
			return s.wrap(ctx, proto.CallPut, fmt.Errorf("send archive: %w", err))
		}
		if err := <-status; err != nil {
			return s.wrap(ctx, proto.CallPut, err)
		}
		return nil
	}
}

// CopyFrom writes a tar stream of path in the guest (a file, a link or a
// directory tree, named from its base name) to w.
func (c *Client) CopyFrom(ctx context.Context, path string, w io.Writer) error {
	s, _, err := c.open(ctx, proto.CallGet, proto.GetArgs{Path: path})
	if err != nil {
		return err
	}
	defer s.close()
	if _, err := io.Copy(w, s.conn.DataReader()); err != nil {
		return s.wrap(ctx, proto.CallGet, err)
	}
	if err := readStatus(s); err != nil {
		return s.wrap(ctx, proto.CallGet, err)
	}
	return nil
}

// readStatus reads the FrameStatus that ends a transfer.
func readStatus(s *stream) error {
	f, err := s.conn.ReadFrame()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("stream ended before the transfer status: %w", io.ErrUnexpectedEOF)
		}
		return err
	}
	if f.Type != proto.FrameStatus {
		return fmt.Errorf("expected a status frame, got %s", f.Type)
	}
	var resp proto.Response
	if err := proto.DecodeJSON(f, &resp); err != nil {
		return err
	}
	if resp.Error != nil {
		return resp.Error
	}
	return nil
}

package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// The QEMU Machine Protocol, as much of it as the driver needs: JSON objects,
// one a line, over a unix socket. QEMU greets with {"QMP": ...}; the client must
// send qmp_capabilities before any other command; every command gets exactly
// one {"return": ...} or {"error": ...}, tagged with the command's "id"; events
// ({"event": ...}) may arrive at any time in between and are skipped here.
//
// A QMP chardev serves one client at a time (the next waits in the listen
// backlog), so the driver holds a connection only for the length of a call.

// QMPError is an error QEMU answered a command with.
type QMPError struct {
	Command string
	Class   string `json:"class"`
	Desc    string `json:"desc"`
}

func (e *QMPError) Error() string {
	return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc)
}

// qmpMaxLine bounds one message; QMP replies the driver asks for are small.
const qmpMaxLine = 1 << 20

// qmpClient is one QMP session, not safe for concurrent use.
type qmpClient struct {
	conn net.Conn
	sc   *bufio.Scanner
	id   int
}

type qmpMessage struct {
	QMP    json.RawMessage `json:"QMP"`
	Return json.RawMessage `json:"return"`
	Error  *QMPError       `json:"error"`
	Event  string          `json:"event"`
	ID     *int            `json:"id"`
}

// dialQMP connects to path, reads the greeting and negotiates capabilities.
func dialQMP(ctx context.Context, path string) (*qmpClient, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp: %w", err)
	}
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 4096), qmpMaxLine)
	q := &qmpClient{conn: conn, sc: sc}
	stop := q.bind(ctx)
	defer stop()
	m, err := q.read(ctx)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp greeting: %w", err)
	}
	if m.QMP == nil {
		conn.Close()
		return nil, errors.New("qmp: the socket did not greet with QMP: is it a QEMU monitor?")
	}
	if err := q.executeLocked(ctx, "qmp_capabilities", nil, nil); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

func (q *qmpClient) Close() error { return q.conn.Close() }

// bind makes ctx's end interrupt reads and writes on the connection.
func (q *qmpClient) bind(ctx context.Context) (stop func() bool) {
	if dl, ok := ctx.Deadline(); ok {
		_ = q.conn.SetDeadline(dl)
	} else {
		_ = q.conn.SetDeadline(time.Time{})
	}
	return context.AfterFunc(ctx, func() { _ = q.conn.SetDeadline(time.Now()) })
}

func (q *qmpClient) read(ctx context.Context) (qmpMessage, error) {
	if !q.sc.Scan() {
		err := q.sc.Err()
		if err == nil {
			err = errors.New("connection closed by QEMU")
		}
		return qmpMessage{}, ctxErr(ctx, err)
	}
	var m qmpMessage
	if err := json.Unmarshal(q.sc.Bytes(), &m); err != nil {
		return qmpMessage{}, fmt.Errorf("bad message %q: %w", q.sc.Bytes(), err)
	}
	return m, nil
}

// ctxErr prefers ctx's error to an I/O error ctx caused. The connection's
// deadline is ctx's, and its timer may fire a moment before ctx records why.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if dl, ok := ctx.Deadline(); ok && errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return err
}

// execute runs one command and decodes its return value into result (nil to
// ignore it). ctx bounds the whole exchange.
func (q *qmpClient) execute(ctx context.Context, command string, args, result any) error {
	stop := q.bind(ctx)
	defer stop()
	return q.executeLocked(ctx, command, args, result)
}

func (q *qmpClient) executeLocked(ctx context.Context, command string, args, result any) error {
	q.id++
	id := q.id
	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        int    `json:"id"`
	}{command, args, id}
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("qmp %s: %w", command, ctxErr(ctx, err))
	}
	for {
		m, err := q.read(ctx)
		if err != nil {
			return fmt.Errorf("qmp %s: %w", command, err)
		}
		if m.Event != "" || m.ID == nil || *m.ID != id {
			continue // an event, or the answer to a command we gave up on
		}
		if m.Error != nil {
			m.Error.Command = command
			return m.Error
		}
		if result == nil {
			return nil
		}
		if err := json.Unmarshal(m.Return, result); err != nil {
			return fmt.Errorf("qmp %s: decode %s: %w", command, m.Return, err)
		}
		return nil
	}
}

// qmpStatus is query-status's answer.
type qmpStatus struct {
	Running bool   `json:"running"`
	Status  string `json:"status"` // running, paused, prelaunch, shutdown, io-error, ...
}

// qmpCall dials, runs one command and hangs up: the monitor serves one client at
// a time, so nobody holds it longer than a call.
func qmpCall(ctx context.Context, path, command string, args, result any) error {
	q, err := dialQMP(ctx, path)
	if err != nil {
		return err
	}
	defer q.Close()
	return q.execute(ctx, command, args, result)
}

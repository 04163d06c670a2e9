package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// shortDir is a temporary directory with a path short enough for sockets.
func shortDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("/tmp", "vq-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// fakeQMP serves QMP on a unix socket the way QEMU does: a greeting, then
// nothing before qmp_capabilities, events between replies, replies tagged with
// the request's id. handle answers each command after negotiation.
func fakeQMP(t *testing.T, greeting string, handle func(cmd string, args json.RawMessage) (ret any, qerr *QMPError, hang bool)) string {
	t.Helper()
	path := filepath.Join(shortDir(t), "qmp.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go serveQMP(c, greeting, handle)
		}
	}()
	return path
}

func serveQMP(c net.Conn, greeting string, handle func(string, json.RawMessage) (any, *QMPError, bool)) {
	defer c.Close()
	fmt.Fprintln(c, greeting)
	sc := bufio.NewScanner(c)
	negotiated := false
	for sc.Scan() {
		var req struct {
			Execute   string          `json:"execute"`
			Arguments json.RawMessage `json:"arguments"`
			ID        json.RawMessage `json:"id"`
		}
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			return
		}
		reply := map[string]any{"id": req.ID}
		switch {
		case req.Execute == "qmp_capabilities":
			negotiated = true
			reply["return"] = map[string]any{}
		case !negotiated:
			reply["error"] = QMPError{Class: "CommandNotFound", Desc: "Expecting capabilities negotiation with 'qmp_capabilities'"}
		default:
			ret, qerr, hang := handle(req.Execute, req.Arguments)
			if hang {
				continue
			}
			// an event first, as QEMU may send one at any time
			fmt.Fprintln(c, `{"event": "RESUME", "timestamp": {"seconds": 1, "microseconds": 2}}`)
			if qerr != nil {
				reply["error"] = qerr
			} else {
				reply["return"] = ret
			}
		}
		b, _ := json.Marshal(reply)
		fmt.Fprintln(c, string(b))
	}
}

const greeting = `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": ["oob"]}}`

func TestQMP(t *testing.T) {
	seen := make(chan string, 16)
	path := fakeQMP(t, greeting, func(cmd string, args json.RawMessage) (any, *QMPError, bool) {
		seen <- cmd
		switch cmd {
		case "query-status":
			return map[string]any{"status": "paused", "running": false, "singlestep": false}, nil, false
		case "system_powerdown":
			return map[string]any{}, nil, false
		case "hang":
			return nil, nil, true
		}
		return nil, &QMPError{Class: "CommandNotFound", Desc: "The command " + cmd + " has not been found"}, false
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q, err := dialQMP(ctx, path)
	if err != nil {
		t.Fatalf("dialQMP: %v", err)
	}
	defer q.Close()

	var st qmpStatus
	if err := q.execute(ctx, "query-status", nil, &st); err != nil {
		t.Fatalf("query-status: %v", err)
	}
	if st.Running || st.Status != "paused" {
		t.Errorf("query-status: got %+v, want paused and not running", st)
	}
	if err := q.execute(ctx, "system_powerdown", nil, nil); err != nil {
		t.Errorf("system_powerdown: %v", err)
	}
	err = q.execute(ctx, "no-such-command", map[string]any{"x": 1}, nil)
	var qerr *QMPError
	if !errors.As(err, &qerr) || qerr.Class != "CommandNotFound" || qerr.Command != "no-such-command" {
		t.Errorf("unknown command: got %v, want a QMPError of class CommandNotFound naming the command", err)
	}
	// a command QEMU never answers ends with ctx
	hctx, hcancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err = q.execute(hctx, "hang", nil, nil)
	hcancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("unanswered command: got %v, want context.DeadlineExceeded", err)
	}
	for _, want := range []string{"query-status", "system_powerdown", "no-such-command", "hang"} {
		if got := <-seen; got != want {
			t.Errorf("server saw %q, want %q", got, want)
		}
	}
}

func TestQMPCallStatus(t *testing.T) {
	path := fakeQMP(t, greeting, func(cmd string, _ json.RawMessage) (any, *QMPError, bool) {
		return map[string]any{"status": "running", "running": true}, nil, false
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var st qmpStatus
	if err := qmpCall(ctx, path, "query-status", nil, &st); err != nil || !st.Running {
		t.Fatalf("qmpCall: got %+v, %v; want running", st, err)
	}
}

func TestQMPDialErrors(t *testing.T) {
	notQMP := fakeQMP(t, `{"hello": "world"}`, nil)
	silent := filepath.Join(shortDir(t), "silent.sock")
	l, err := net.Listen("unix", silent) // accepts (backlog) but never greets
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	tests := []struct {
		name, path, want string
	}{
		{"no socket", filepath.Join(shortDir(t), "none.sock"), "no such file"},
		{"not a QMP monitor", notQMP, "did not greet with QMP"},
		{"never greets", silent, "deadline exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			q, err := dialQMP(ctx, tt.path)
			if err == nil {
				q.Close()
				t.Fatal("dialQMP succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want it to mention %q", err, tt.want)
			}
		})
	}
}

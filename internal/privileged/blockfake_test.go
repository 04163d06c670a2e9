package privileged

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"

	"banger/internal/blockdev"
)

// recordingBlock is a BlockOps that records every call and never changes the
// kernel. Its one purpose is to prove what did and did not reach the kernel layer:
// mutations (LoopAttach, LoopDetach, DMCreate, DMRemove) are recorded and answered
// with made-up devices. The reads the server validates against are partly real:
// LoopList returns the host's real loop devices (from sysfs) plus the ones a test
// injects, so a test can attach a real foreign loop and see the helper refuse it.
// DMList returns the injected names. The real kernel behaviour is proven by the
// integration test with banger-helper and blockdev.
type recordingBlock struct {
	mu    sync.Mutex // guards all following fields
	calls []netCall
	loops []blockdev.Loop // injected, after the real ones
	dms   []string
	dmErr error            // DMAvailable's answer
	fail  map[string]error // op name -> error to return
	// onDMCreate, when set, runs inside DMCreate, as the kernel and dmsetup would
	// make the device's nodes.
	onDMCreate func(name string) error
	next       int // made-up loop numbers
	// inner, when set, does the work: every call is recorded, then passed to it, and
	// the made-up answers, injected loops and names are not used.
	inner BlockOps
}

func newRecordingBlock() *recordingBlock {
	return &recordingBlock{next: 9000, fail: map[string]error{}}
}

// mutatingOps are the calls that would change the kernel's state.
var mutatingOps = map[string]bool{"LoopAttach": true, "LoopDetach": true, "DMCreate": true, "DMRemove": true}

func (r *recordingBlock) record(op string, args ...any) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, netCall{Op: op, Args: args})
	return r.fail[op]
}

// Mutations returns the recorded calls that would have changed the kernel.
func (r *recordingBlock) Mutations() []netCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []netCall
	for _, c := range r.calls {
		if mutatingOps[c.Op] {
			out = append(out, c)
		}
	}
	return out
}

func (r *recordingBlock) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = nil
}

// LoopAttach records the file the path leads to: the server passes /proc/self/fd/N
// of a descriptor it holds open during the call, and the test wants the file.
func (r *recordingBlock) LoopAttach(ctx context.Context, path string, readOnly bool) (string, error) {
	target := path
	if strings.HasPrefix(path, "/proc/self/fd/") {
		l, err := os.Readlink(path)
		if err != nil {
			return "", fmt.Errorf("fake: %s does not lead to a file: %w", path, err)
		}
		target = l
	}
	if err := r.record("LoopAttach", target, readOnly); err != nil {
		return "", err
	}
	if r.inner != nil {
		return r.inner.LoopAttach(ctx, path, readOnly)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next++
	return fmt.Sprintf("/dev/loop%d", r.next), nil
}

func (r *recordingBlock) LoopDetach(ctx context.Context, dev string) error {
	if err := r.record("LoopDetach", dev); err != nil || r.inner == nil {
		return err
	}
	return r.inner.LoopDetach(ctx, dev)
}

func (r *recordingBlock) LoopList(ctx context.Context) ([]blockdev.Loop, error) {
	if err := r.record("LoopList"); err != nil {
		return nil, err
	}
	if r.inner != nil {
		return r.inner.LoopList(ctx)
	}
	real, err := blockdev.LoopList(ctx)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return append(real, r.loops...), nil
}

func (r *recordingBlock) DMAvailable(ctx context.Context) error {
	_ = r.record("DMAvailable")
	if r.inner != nil {
		return r.inner.DMAvailable(ctx)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dmErr
}

func (r *recordingBlock) DMCreate(ctx context.Context, name, table string) (string, error) {
	if err := r.record("DMCreate", name, table); err != nil {
		return "", err
	}
	if r.inner != nil {
		return r.inner.DMCreate(ctx, name, table)
	}
	r.mu.Lock()
	hook := r.onDMCreate
	r.mu.Unlock()
	if hook != nil {
		if err := hook(name); err != nil {
			return "", err
		}
	}
	return blockdev.MapperDir + "/" + name, nil
}

func (r *recordingBlock) DMRemove(ctx context.Context, name string) error {
	if err := r.record("DMRemove", name); err != nil || r.inner == nil {
		return err
	}
	return r.inner.DMRemove(ctx, name)
}

func (r *recordingBlock) DMList(ctx context.Context) ([]string, error) {
	if err := r.record("DMList"); err != nil {
		return nil, err
	}
	if r.inner != nil {
		return r.inner.DMList(ctx)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.dms...), nil
}

package disk_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"banger/internal/blockdev"
)

// fakeDM is a disk.BlockOps whose loop devices are real (blockdev.Local) and whose
// device-mapper, which this machine lacks, is simulated closely enough to test the
// dm-snapshot strategy's sequencing, cleanup and reaping here:
//   - DMCreate checks every table line (targets, lengths adding up, snapshot
//     arguments) and that each device a table names exists: a bound loop device or
//     an earlier fake dm device;
//   - like the kernel, it opens the loop devices a table uses and holds them until
//     DMRemove, so LoopDetach's deferred (autoclear) semantics are the real ones;
//   - DMRemove refuses a device another table still uses, as the kernel does.
//
// The conformance suite runs the real device-mapper where /dev/mapper/control exists.
type fakeDM struct {
	blockdev.Local

	mu      sync.Mutex          // guards all following fields
	devs    map[string]*fakeDev // by name
	fail    map[string]error    // injected failures, by call key (see inject)
	counts  map[string]int      // calls so far, by op
	calls   []string
	noDMYet bool // DMAvailable fails, like a kernel without device-mapper
}

type fakeDev struct {
	table string
	uses  []string   // mapper names this table stacks on
	held  []*os.File // loop devices it keeps open
}

func newFakeDM() *fakeDM {
	return &fakeDM{devs: map[string]*fakeDev{}, fail: map[string]error{}, counts: map[string]int{}}
}

// inject counts a call and returns its injected failure: "Op#N" (the Nth call of Op)
// or "Op:ARG" match.
func (f *fakeDM) inject(op, arg string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counts[op]++
	f.calls = append(f.calls, op+" "+arg)
	if err := f.fail[op+"#"+strconv.Itoa(f.counts[op])]; err != nil {
		return err
	}
	for k, err := range f.fail {
		if s, ok := strings.CutPrefix(k, op+":"); ok && strings.HasSuffix(arg, s) {
			return err
		}
	}
	return nil
}

func (f *fakeDM) LoopAttach(ctx context.Context, path string, readOnly bool) (string, error) {
	if err := f.inject("LoopAttach", path); err != nil {
		return "", err
	}
	return f.Local.LoopAttach(ctx, path, readOnly)
}

func (f *fakeDM) LoopDetach(ctx context.Context, dev string) error {
	if err := f.inject("LoopDetach", dev); err != nil {
		return err
	}
	return f.Local.LoopDetach(ctx, dev)
}

func (f *fakeDM) DMAvailable(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.noDMYet {
		return errors.New("/dev/mapper/control is missing (fake)")
	}
	return nil
}

func (f *fakeDM) DMCreate(ctx context.Context, name, table string) (string, error) {
	if err := f.inject("DMCreate", name); err != nil {
		return "", err
	}
	if err := blockdev.ValidateDMName(name); err != nil {
		return "", err
	}
	loops, err := blockdev.LoopList(ctx)
	if err != nil {
		return "", err
	}
	bound := map[string]bool{}
	for _, l := range loops {
		bound[l.Device] = true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.devs[name] != nil {
		return "", fmt.Errorf("dmsetup create %s: device exists (fake)", name)
	}
	dev := &fakeDev{table: table}
	ok := false
	defer func() {
		if !ok {
			for _, h := range dev.held {
				h.Close()
			}
		}
	}()
	use := func(d string) error {
		if m, isDM := strings.CutPrefix(d, blockdev.MapperDir+"/"); isDM {
			if f.devs[m] == nil {
				return fmt.Errorf("table of %s uses %s, which does not exist", name, d)
			}
			dev.uses = append(dev.uses, m)
			return nil
		}
		if !bound[d] {
			return fmt.Errorf("table of %s uses %s, which is not a bound loop device", name, d)
		}
		h, err := os.Open(d)
		if err != nil {
			return err
		}
		dev.held = append(dev.held, h)
		return nil
	}
	var next int64
	for _, line := range strings.Split(strings.TrimSpace(table), "\n") {
		fs := strings.Fields(line)
		if len(fs) < 3 {
			return "", fmt.Errorf("table line %q: too short", line)
		}
		start, err1 := strconv.ParseInt(fs[0], 10, 64)
		length, err2 := strconv.ParseInt(fs[1], 10, 64)
		if err1 != nil || err2 != nil || start != next || length <= 0 {
			return "", fmt.Errorf("table line %q: bad start/length (want start %d)", line, next)
		}
		next = start + length
		switch args := fs[3:]; fs[2] {
		case "linear":
			if len(args) != 2 || args[1] != "0" {
				return "", fmt.Errorf("linear line %q: want DEV 0", line)
			}
			if err := use(args[0]); err != nil {
				return "", err
			}
		case "zero":
			if len(args) != 0 {
				return "", fmt.Errorf("zero line %q takes no arguments", line)
			}
		case "snapshot":
			if len(args) != 4 || args[2] != "P" || args[3] != "8" {
				return "", fmt.Errorf("snapshot line %q: want ORIGIN COW P 8", line)
			}
			if err := use(args[0]); err != nil {
				return "", err
			}
			if err := use(args[1]); err != nil {
				return "", err
			}
		default:
			return "", fmt.Errorf("table line %q: unexpected target %s", line, fs[2])
		}
	}
	f.devs[name] = dev
	ok = true
	return blockdev.MapperDir + "/" + name, nil
}

func (f *fakeDM) DMRemove(ctx context.Context, name string) error {
	if err := f.inject("DMRemove", name); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	dev := f.devs[name]
	if dev == nil {
		return nil
	}
	for other, d := range f.devs {
		for _, u := range d.uses {
			if u == name {
				return fmt.Errorf("dmsetup remove %s: device busy: used by %s (fake)", name, other)
			}
		}
	}
	for _, h := range dev.held {
		h.Close()
	}
	delete(f.devs, name)
	return nil
}

func (f *fakeDM) DMList(ctx context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var names []string
	for n := range f.devs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

func (f *fakeDM) GrowExt4(ctx context.Context, dev string) error {
	return f.inject("GrowExt4", dev)
}

// table returns the table of device name, or "".
func (f *fakeDM) table(name string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d := f.devs[name]; d != nil {
		return d.table
	}
	return ""
}

// forget drops every device as a reboot would: their loops go with them.
func (f *fakeDM) forget() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for n, d := range f.devs {
		for _, h := range d.held {
			h.Close()
		}
		delete(f.devs, n)
	}
}

// closeAll releases what the fake holds when a test ends.
func (f *fakeDM) closeAll(t *testing.T) {
	t.Helper()
	t.Cleanup(f.forget)
}

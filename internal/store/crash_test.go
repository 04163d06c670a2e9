package store

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// crashChildEnv, when set, makes TestCrashConsistency act as the child: it
// names the database the child writes to until it is killed.
const crashChildEnv = "BANGER_STORE_CRASH_CHILD_DB"

// crashBridge is the child's bridge network: room for the VMs it keeps alive.
const crashBridge = "10.77.0.1/24"

// Lines the child prints, prefixed so stray output cannot be mistaken for them:
//
//	@@ begin <op> <vm id> <arg>   about to run one transaction
//	@@ done                       it committed
//
// The parent replays every begun-and-done op onto what the store held when the
// round started; at most the last op is in flight when the kill lands, so the
// store must equal that replay, or that replay plus the in-flight op.
const crashLinePrefix = "@@ "

// TestCrashConsistency kills a writer with SIGKILL at random moments and checks
// that the store always reopens intact: integrity_check passes, the invariants
// the schema and the transactions promise hold, every committed change is
// there, and no half of a change is.
func TestCrashConsistency(t *testing.T) {
	if path := os.Getenv(crashChildEnv); path != "" {
		crashChild(t, path)
		return
	}
	if testing.Short() {
		t.Skip("crash test runs several seconds; skipped with -short")
	}

	path := filepath.Join(t.TempDir(), "banger.db")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	const rounds = 20
	var committed, inFlightApplied int
	want := snapshot{} // what the store holds between rounds

	for round := range rounds {
		// The first round starts on a fresh file and is killed early, often
		// during Open's migration; the rest give the child time to work.
		delay := time.Duration(rng.IntN(400)+50) * time.Millisecond
		if round == 0 {
			delay = time.Duration(rng.IntN(40)) * time.Millisecond
		}
		ops, stderr := runCrashChild(t, path, delay)

		s := openStore(t, path) // must open whatever the kill left behind
		checkInvariants(t, s, round)
		got := readSnapshot(t, s)

		base := want.clone()
		var inflight *crashOp
		for i := range ops {
			if ops[i].done {
				base.apply(ops[i])
				committed++
			} else {
				inflight = &ops[i]
			}
		}
		switch {
		case cmp.Equal(base, got):
		case inflight != nil && cmp.Equal(base.with(*inflight), got):
			inFlightApplied++
		default:
			t.Fatalf("round %d: store does not match the committed ops (in flight: %+v)\n(-want +got):\n%s\nchild stderr:\n%s",
				round, inflight, cmp.Diff(base, got), stderr)
		}
		want = got
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d rounds, %d committed transactions, %d killed after commit before reporting it", rounds, committed, inFlightApplied)
	if committed < 20 {
		t.Fatalf("the child committed only %d transactions over %d rounds: the test proved little", committed, rounds)
	}
}

// runCrashChild runs the child on path, SIGKILLs it after delay, and returns the
// ops it reported and its stderr.
func runCrashChild(t *testing.T, path string, delay time.Duration) ([]crashOp, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashConsistency$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	// Kill on the way out whatever happens, so no child outlives the test.
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	lines := make(chan []crashOp, 1)
	go func() {
		var ops []crashOp
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line, ok := strings.CutPrefix(sc.Text(), crashLinePrefix)
			if !ok {
				continue
			}
			if line == "done" {
				if len(ops) > 0 {
					ops[len(ops)-1].done = true
				}
				continue
			}
			var op crashOp
			if _, err := fmt.Sscanf(line, "begin %s %s %s", &op.kind, &op.id, &op.arg); err == nil {
				ops = append(ops, op)
			}
		}
		lines <- ops
	}()

	time.Sleep(delay)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill child: %v", err)
	}
	ops := <-lines // EOF once the child is dead
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child ended by itself (%v) before the kill:\n%s", err, stderr.String())
	}
	return ops, stderr.String()
}

// crashChild is the child's body: it writes to the store, one transaction per
// op, announcing each op before and after, until it is killed.
func crashChild(t *testing.T, path string) {
	ctx := context.Background()
	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "crash child: "+format+"\n", args...)
		os.Exit(3) // not SIGKILL: the parent reports it
	}
	say := func(format string, args ...any) {
		// One write per line, straight to the pipe: nothing buffered is lost in the kill.
		if _, err := fmt.Fprintf(os.Stdout, crashLinePrefix+format+"\n", args...); err != nil {
			fail("write: %v", err)
		}
	}
	s, err := Open(ctx, path)
	if err != nil {
		fail("open: %v", err)
	}
	if err := s.PutImage(ctx, Image{ID: testImageID, Path: "/i"}); err != nil {
		fail("put image: %v", err)
	}
	if err := s.PutKernel(ctx, Kernel{ID: testKernelID, Name: "k", Path: "/k"}); err != nil {
		fail("put kernel: %v", err)
	}
	bridge := netip.MustParsePrefix(crashBridge)

	vms, err := s.ListVMs(ctx)
	if err != nil {
		fail("list: %v", err)
	}
	var live []string
	for _, vm := range vms {
		live = append(live, vm.ID)
	}
	rng := rand.New(rand.NewPCG(uint64(os.Getpid()), uint64(time.Now().UnixNano())))
	states := []VMState{VMStarting, VMRunning, VMStopping, VMStopped, VMFailed}
	for {
		switch r := rng.IntN(10); {
		case len(live) < 5 || (r < 4 && len(live) < 60):
			id := fmt.Sprintf("%016x", rng.Uint64())
			name := "vm-" + id[:10]
			say("begin create %s %s", id, name)
			if _, err := s.CreateVMWithLease(ctx, testVM(id, name), bridge); err != nil {
				fail("create: %v", err)
			}
			live = append(live, id)
		case r < 6:
			id := live[rng.IntN(len(live))]
			l, err := s.LeaseOf(ctx, id)
			if err != nil {
				fail("lease of %s: %v", id, err)
			}
			cid := 10000 + uint32(l.Addr.As4()[3])
			say("begin handle %s %d", id, cid)
			err = s.SetHandle(ctx, Handle{VMID: id, PID: rng.IntN(1 << 20), Tap: "tap-vm-" + id[:8], VsockCID: cid, DiskPath: "/d/" + id, DiskStrategy: "copy"})
			if err != nil {
				fail("set handle: %v", err)
			}
		case r < 8:
			id := live[rng.IntN(len(live))]
			st := states[rng.IntN(len(states))]
			say("begin state %s %s", id, st)
			if err := s.UpdateVMState(ctx, id, st); err != nil {
				fail("state: %v", err)
			}
		default:
			i := rng.IntN(len(live))
			say("begin delete %s -", live[i])
			if err := s.DeleteVM(ctx, live[i]); err != nil {
				fail("delete: %v", err)
			}
			live = append(live[:i], live[i+1:]...)
		}
		say("done")
	}
}

type crashOp struct {
	kind, id, arg string
	done          bool
}

// vmSnap is what the crash test compares of one VM.
type vmSnap struct {
	Name   string
	State  VMState
	Handle bool
	Lease  bool
}

type snapshot map[string]vmSnap

func (s snapshot) clone() snapshot {
	c := make(snapshot, len(s))
	for k, v := range s {
		c[k] = v
	}
	return c
}

func (s snapshot) with(op crashOp) snapshot {
	c := s.clone()
	c.apply(op)
	return c
}

func (s snapshot) apply(op crashOp) {
	switch op.kind {
	case "create":
		s[op.id] = vmSnap{Name: op.arg, State: VMCreated, Lease: true}
	case "handle":
		v := s[op.id]
		v.Handle = true
		s[op.id] = v
	case "state":
		v := s[op.id]
		v.State = VMState(op.arg)
		s[op.id] = v
	case "delete":
		delete(s, op.id)
	}
}

func readSnapshot(t *testing.T, s *Store) snapshot {
	t.Helper()
	ctx := context.Background()
	vms, err := s.ListVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	snap := snapshot{}
	for _, vm := range vms {
		snap[vm.ID] = vmSnap{Name: vm.Name, State: vm.State}
	}
	hs, err := s.ListHandles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		v := snap[h.VMID]
		v.Handle = true
		snap[h.VMID] = v
	}
	ls, err := s.ListLeases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		v := snap[l.VMID]
		v.Lease = true
		snap[l.VMID] = v
	}
	return snap
}

// checkInvariants checks the file and the promises of the schema and of the
// one-transaction-per-change rule, straight in SQL.
func checkInvariants(t *testing.T, s *Store, round int) {
	t.Helper()
	var ok string
	if err := s.db.QueryRow("PRAGMA integrity_check").Scan(&ok); err != nil || ok != "ok" {
		t.Fatalf("round %d: integrity_check: got %q, %v; want ok", round, ok, err)
	}
	rows, err := s.db.Query("PRAGMA foreign_key_check")
	if err != nil {
		t.Fatal(err)
	}
	if rows.Next() {
		t.Errorf("round %d: foreign_key_check reports violations", round)
	}
	_ = rows.Close()

	r, err := guestRangeOf(netip.MustParsePrefix(crashBridge))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		what, query string
		args        []any
	}{
		{"leases without a VM", `SELECT count(*) FROM ip_leases l LEFT JOIN vms v ON v.id = l.vm_id WHERE v.id IS NULL`, nil},
		{"handles without a VM", `SELECT count(*) FROM vm_handles h LEFT JOIN vms v ON v.id = h.vm_id WHERE v.id IS NULL`, nil},
		{"VMs without a lease (created with one, in one transaction)", `SELECT count(*) FROM vms v LEFT JOIN ip_leases l ON l.vm_id = v.id WHERE l.vm_id IS NULL`, nil},
		{"addresses held twice", `SELECT count(*) FROM (SELECT addr FROM ip_leases GROUP BY addr HAVING count(*) > 1)`, nil},
		{"names held twice", `SELECT count(*) FROM (SELECT lower(name) FROM vms GROUP BY lower(name) HAVING count(*) > 1)`, nil},
		{"taps held twice", `SELECT count(*) FROM (SELECT tap FROM vm_handles WHERE tap <> '' GROUP BY tap HAVING count(*) > 1)`, nil},
		{"leases outside " + crashBridge + " or on its network, bridge or broadcast address",
			`SELECT count(*) FROM ip_leases WHERE addr NOT BETWEEN ? AND ? OR addr = ?`,
			[]any{int64(r.first), int64(r.last), int64(r.gateway)}},
	}
	for _, c := range checks {
		var n int
		if err := s.db.QueryRow(c.query, c.args...).Scan(&n); err != nil {
			t.Fatalf("round %d: %s: %v", round, c.what, err)
		}
		if n != 0 {
			t.Errorf("round %d: %s: got %d, want 0", round, c.what, n)
		}
	}
}

package consolelog

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// stream is n bytes of numbered lines, so a suffix of it is recognisable.
func stream(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		b.WriteString("line " + strconv.Itoa(i) + " \x1b[31mred\x1b[0m\n")
	}
	return b.Bytes()[:n]
}

func readAll(t *testing.T, path string) []byte {
	t.Helper()
	rc, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLogKeepsNewestBytesUnderCap(t *testing.T) {
	const max = 64 << 10
	for _, chunk := range []int{1, 100, 4096, 40 << 10, 1 << 20} {
		t.Run(strconv.Itoa(chunk), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "vm.console.log")
			l, err := Create(path, max)
			if err != nil {
				t.Fatal(err)
			}
			data := stream(10*max + 123)
			if chunk == 1 {
				data = data[:3*max+7] // byte at a time: keep it quick
			}
			for off := 0; off < len(data); off += chunk {
				end := min(off+chunk, len(data))
				if n, err := l.Write(data[off:end]); err != nil || n != end-off {
					t.Fatalf("Write: %d, %v", n, err)
				}
				if s := Size(path); s > max {
					t.Fatalf("after %d bytes the log holds %d, over its cap %d", end, s, max)
				}
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			got := readAll(t, path)
			if len(got) < max/2 || len(got) > max {
				t.Errorf("log holds %d bytes, want between %d and %d", len(got), max/2, max)
			}
			if !bytes.HasSuffix(data, got) {
				t.Errorf("the log is not the newest bytes written (it ends %q)", got[len(got)-min(40, len(got)):])
			}
			tail, err := Tail(path, 100)
			if err != nil || !bytes.Equal(tail, data[len(data)-100:]) {
				t.Errorf("Tail(100) = %q, %v; want the last 100 bytes written", tail, err)
			}
		})
	}
}

func TestCreateStartsFresh(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vm.console.log")
	for _, p := range []string{path, path + PrevSuffix} {
		if err := os.WriteFile(p, []byte("old boot\n"), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	l, err := Create(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got := readAll(t, path); len(got) != 0 {
		t.Errorf("a new log holds %q from the last boot", got)
	}
}

// TestAttackConsoleLogSymlink: the log's name replaced by a symlink (to a file the
// owner wants overwritten) is refused, and the target is untouched.
func TestAttackConsoleLogSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "precious")
	if err := os.WriteFile(target, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "vm.console.log")
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	if l, err := Create(path, 0); err == nil {
		l.Close()
		t.Fatal("Create through a symlink succeeded")
	}
	if b, _ := os.ReadFile(target); string(b) != "keep me" {
		t.Errorf("symlink target now holds %q", b)
	}
}

func TestCapTooSmall(t *testing.T) {
	if _, err := Create(filepath.Join(t.TempDir(), "log"), 100); err == nil {
		t.Error("Create with a 100-byte cap succeeded")
	}
}

// TestAttackConsoleFloodThroughLogger is finding 8 at the process level: 100 MiB
// pushed through a real logger process (this test binary run again) leave a log
// at its cap holding the newest bytes, and the logger ends with the pipe.
func TestAttackConsoleFloodThroughLogger(t *testing.T) {
	const max = 256 << 10
	path := filepath.Join(t.TempDir(), "vm.console.log")
	w, err := Start(path, max)
	if err != nil {
		t.Fatal(err)
	}
	block := make([]byte, 1<<20)
	if _, err := rand.Read(block); err != nil {
		t.Fatal(err)
	}
	last := []byte("\nthe very last line\n")
	var peak int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			if s := Size(path); s > peak {
				peak = s
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	for range 100 {
		if _, err := w.Write(block); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Write(last); err != nil {
		t.Fatal(err)
	}
	w.Close()
	Settle(path, 10*time.Second)
	close(stop)
	wg.Wait()
	if peak > max || Size(path) > max {
		t.Errorf("log peaked at %d bytes and ends at %d, over its cap %d", peak, Size(path), max)
	}
	got := readAll(t, path)
	want := append(bytes.Repeat(block, 2), last...) // more than the cap: the tail of the stream
	if len(got) < max/2 || !bytes.HasSuffix(want, got) {
		t.Errorf("log holds %d bytes, want at least %d of the newest", len(got), max/2)
	}
	tail, _ := Tail(path, int64(len(last)))
	if !bytes.Equal(tail, last) {
		t.Errorf("Tail after Settle = %q, want the last line written", tail)
	}
}

// TestSettleWaitsForLogger: a log read right after the VMM closed its end still
// has the last line, because Settle waits for the logger to write it.
func TestSettleWaitsForLogger(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vm.console.log")
	w, err := Start(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("Kernel panic - not syncing: VFS\n")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	Settle(path, 10*time.Second)
	if b, _ := os.ReadFile(path); !strings.Contains(string(b), "Kernel panic") {
		t.Errorf("after Settle the log holds %q, want the panic line", b)
	}
}

func TestFollowAcrossRotation(t *testing.T) {
	const max = 8 << 10
	path := filepath.Join(t.TempDir(), "vm.console.log")
	l, err := Create(path, max)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- Follow(ctx, writerFunc(func(p []byte) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			return out.Write(p)
		}), path, 5*time.Millisecond, nil)
	}()
	// Write in small steps, slower than the follower polls, through many
	// rotations: it must see every byte once, in order.
	data := stream(5 * max)
	for off := 0; off < len(data); off += 512 {
		if _, err := l.Write(data[off:min(off+512, len(data))]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := out.Len()
		mu.Unlock()
		if n >= len(data) || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !bytes.Equal(out.Bytes(), data) {
		t.Errorf("follow saw %d bytes, want the %d written, in order, once", out.Len(), len(data))
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

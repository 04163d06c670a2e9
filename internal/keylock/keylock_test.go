package keylock

import (
	"sync"
	"testing"
	"time"
)

func TestSameKeySerialisesOtherKeysDoNot(t *testing.T) {
	var m Map
	unlockA := m.Lock("a")
	got := make(chan string, 2)
	go func() { u := m.Lock("a"); got <- "a"; u() }()
	go func() { u := m.Lock("b"); got <- "b"; u() }()
	if k := <-got; k != "b" {
		t.Fatalf("first to get a lock = %q, want b (a is held)", k)
	}
	select {
	case k := <-got:
		t.Fatalf("%q locked while a was held", k)
	case <-time.After(50 * time.Millisecond):
	}
	unlockA()
	if k := <-got; k != "a" {
		t.Fatalf("got %q, want a after unlock", k)
	}
}

func TestConcurrentCounter(t *testing.T) {
	var m Map
	n := 0
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u := m.Lock("k")
			n++
			u()
		}()
	}
	wg.Wait()
	if n != 50 {
		t.Fatalf("n = %d, want 50", n)
	}
}

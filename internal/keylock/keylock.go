// Package keylock serialises work per key (a VM id, an image digest) while letting
// different keys proceed in parallel.
package keylock

import "sync"

// Map is a set of mutexes created on first use. The zero value is ready to use.
type Map struct {
	mu    sync.Mutex             // guards locks
	locks map[string]*sync.Mutex // never shrinks except through Forget
}

// Lock locks key and returns its unlock.
func (m *Map) Lock(key string) (unlock func()) {
	m.mu.Lock()
	if m.locks == nil {
		m.locks = map[string]*sync.Mutex{}
	}
	l, ok := m.locks[key]
	if !ok {
		l = &sync.Mutex{}
		m.locks[key] = l
	}
	m.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// Forget drops key's mutex once nothing will lock it again (a removed VM). The
// caller must hold the lock or know no one does.
func (m *Map) Forget(key string) {
	m.mu.Lock()
	delete(m.locks, key)
	m.mu.Unlock()
}

// Package dirlock serializes processes that write into one directory.
package dirlock

import "os"

// Lock holds an exclusive lock on a directory until Unlock. It is
// advisory: only those that take it wait for it. The operating system
// releases it when the process ends, so a killed process leaves nothing
// stale behind.
type Lock struct {
	f *os.File
}

// Acquire waits for the lock on dir, which must exist.
func Acquire(dir string) (*Lock, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	if err := lock(f); err != nil {
		f.Close()
		return nil, err
	}
	return &Lock{f: f}, nil
}

// Unlock releases the lock.
func (l *Lock) Unlock() {
	unlock(l.f)
	l.f.Close()
}

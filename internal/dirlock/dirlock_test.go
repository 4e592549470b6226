package dirlock

import (
	"testing"
	"time"
)

// TestExclusive: a second holder waits until the first unlocks, also
// within one process (the lock belongs to the open file, not the process).
func TestExclusive(t *testing.T) {
	dir := t.TempDir()
	first, err := Acquire(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan time.Time)
	go func() {
		second, err := Acquire(dir)
		if err != nil {
			t.Error(err)
		}
		got <- time.Now()
		second.Unlock()
	}()
	time.Sleep(100 * time.Millisecond)
	released := time.Now()
	first.Unlock()
	if at := <-got; at.Before(released) {
		t.Fatal("the second holder got the lock while the first held it")
	}
}

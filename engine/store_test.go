package engine

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
)

// TestGroupCommitIsolation sends many writes at once, one of which fails:
// the others are committed, the failing one leaves nothing behind.
func TestGroupCommitIsolation(t *testing.T) {
	s, err := OpenStore(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if c, err := s.ClaimUnique(ctx, "ana", []Claim{{Field: "email", Value: "a@example.org"}}); c != nil || err != nil {
		t.Fatalf("first claim: %v %v", c, err)
	}
	var wg sync.WaitGroup
	var conflict *Claim
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if i == 25 {
				// Claims two values; the second is taken, so neither may stay.
				conflict, _ = s.ClaimUnique(ctx, "bo", []Claim{{Field: "email", Value: "bo@example.org"},
					{Field: "email", Value: "a@example.org", Message: "Email already exists"}})
				return
			}
			if err := s.JournalPut(ctx, fmt.Sprintf("p/m%d", i), "step", &JournalEntry{Status: StatusOK}); err != nil {
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	if conflict == nil || conflict.Message != "Email already exists" {
		t.Fatalf("conflict = %v", conflict)
	}
	var n int
	s.DB().QueryRow(`SELECT count(*) FROM journal`).Scan(&n)
	if n != 49 {
		t.Fatalf("%d journal entries, want 49", n)
	}
	s.DB().QueryRow(`SELECT count(*) FROM claims WHERE owner = 'bo'`).Scan(&n)
	if n != 0 {
		t.Fatalf("the failed claim left %d values behind", n)
	}
}

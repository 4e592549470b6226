package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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

// A store whose file is removed or replaced while open says so.
func TestStoreGone(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "regflow.db")
	s, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Gone(); err != nil {
		t.Fatalf("Gone on a fresh store: %v", err)
	}
	os.Rename(path, path+".old")
	os.WriteFile(path, nil, 0o644)
	if err := s.Gone(); err == nil || !strings.Contains(err.Error(), "was replaced by another file") {
		t.Fatalf("Gone after replacing the file: %v", err)
	}
	os.Remove(path)
	if err := s.Gone(); err == nil || !strings.Contains(err.Error(), "is gone") {
		t.Fatalf("Gone after removing the file: %v", err)
	}
	var none *Store
	if err := none.Gone(); err != nil {
		t.Fatalf("Gone on no store: %v", err)
	}
}

// A store made before the registrations' corr column existed gets it when
// opened, and keeps its rows.
func TestStoreMigration(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	old, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.w.Exec(`ALTER TABLE registrations DROP COLUMN corr`); err != nil {
		t.Fatal(err)
	}
	if _, err := old.w.Exec(`INSERT INTO registrations (tracker, id, state, start_message, opened_at,
		deadline_at, updated_at, msg) VALUES ('r', 'ana', 'open', 'm1', '', '', '', '{}')`); err != nil {
		t.Fatal(err)
	}
	old.Close()
	s, err := OpenStore(path)
	if err != nil {
		t.Fatalf("open an old store: %v", err)
	}
	defer s.Close()
	regs, err := s.Registrations(context.Background(), "ana")
	if err != nil || len(regs) != 1 || regs[0].StartMessage != "m1" || regs[0].Correlation != "" {
		t.Fatalf("registrations = %+v, %v", regs, err)
	}
}

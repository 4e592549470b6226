package actions_test

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"regflow/engine"
)

const allocatePipeline = `
pipeline "ids" {
  on = ["request.*"]

  allocate_uid "ids" {
    uid_range = [10001, 19999]
  }

  publish "verify" {
    when        = "msg.uid > 10000"
    routing_key = "verify.{{ msg.queuename }}"
  }
}
`

// TestAllocateUIDSameUser runs requests one after another: each new user
// gets the lowest free id, and a user seen before gets the same ids again.
func TestAllocateUIDSameUser(t *testing.T) {
	e := newEnv(t, allocatePipeline)
	steps := []struct {
		user     string
		wantUID  int
		wantNote string
	}{
		{"ana", 10001, "uid 10001, gid 10001"},
		{"bob", 10002, "uid 10002, gid 10002"},
		{"ana", 10001, "uid 10001, gid 10001 (already reserved for ana)"},
		{"bob", 10002, "uid 10002, gid 10002 (already reserved for bob)"},
		{"cid", 10003, "uid 10003, gid 10003"},
	}
	for i, s := range steps {
		res := e.run("ids", "request."+s.user, request(s.user))
		st := wantOK(t, res, "ids")
		if st.Note != s.wantNote {
			t.Errorf("run %d (%s): note %q; want %q", i+1, s.user, st.Note, s.wantNote)
		}
		if res.Msg["uid"] != s.wantUID || res.Msg["gid"] != s.wantUID {
			t.Errorf("run %d (%s): uid, gid = %#v, %#v; want int %d", i+1, s.user, res.Msg["uid"],
				res.Msg["gid"], s.wantUID)
		}
	}
	if n := count(t, e.svc.Store, `SELECT COUNT(*) FROM ids`); n != 3 {
		t.Errorf("ids rows = %d; want 3", n)
	}
}

// TestAllocateUIDIntegers is C6: the ids are Go ints in msg, on the first
// delivery and on a redelivery (allocate_uid is idempotent, so it runs
// again rather than replaying the journal, and finds the same ids),
// integers in the published JSON, and msg.uid > 10000 holds for them.
func TestAllocateUIDIntegers(t *testing.T) {
	e := newEnv(t, allocatePipeline)
	d := &engine.Delivery{RoutingKey: "request.ana", MessageID: "m-1", Body: encode(t, request("ana"))}
	for _, replay := range []bool{false, true} {
		res, err := e.deliver("ids", d)
		if err != nil {
			t.Fatal(err)
		}
		st := wantOK(t, res, "ids")
		if st.Replayed {
			t.Fatalf("allocate_uid replayed from the journal; an idempotent step runs again")
		}
		uid, ok := res.Msg["uid"].(int)
		if !ok || uid != 10001 {
			t.Errorf("replayed=%v: msg.uid = %#v (%T); want int 10001", replay, res.Msg["uid"], res.Msg["uid"])
		}
		if _, ok := res.Msg["gid"].(int); !ok {
			t.Errorf("replayed=%v: msg.gid is %T; want int", replay, res.Msg["gid"])
		}
	}

	pubs := e.pub.all()
	if len(pubs) != 1 {
		t.Fatalf("published %d messages; want 1 (the replay publishes nothing)", len(pubs))
	}
	body := string(pubs[0].Body)
	if !strings.Contains(body, `"uid":10001`) || !strings.Contains(body, `"gid":10001`) {
		t.Errorf("published body %s; want integer uid and gid 10001", body)
	}
}

func TestAllocateUIDGidRange(t *testing.T) {
	tests := []struct {
		name     string
		step     string
		taken    [][3]any // username, uid, gid already in the store
		user     string
		wantUID  int
		wantGID  int
		wantNote string
	}{
		{"separate gid range", "gid_range = [20001, 29999]", nil, "ana", 10001, 20001, "uid 10001, gid 20001"},
		{"separate gid range skips used gids", "gid_range = [20001, 29999]",
			[][3]any{{"x", 10001, 20001}, {"y", 10005, 20002}}, "ana", 10002, 20003, "uid 10002, gid 20003"},
		{"gid equals uid skips ids used as gid", "",
			[][3]any{{"x", 10050, 10001}}, "ana", 10002, 10002, "uid 10002, gid 10002"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, `
pipeline "ids" {
  on = ["request.*"]
  allocate_uid "ids" {
    uid_range = [10001, 19999]
    `+tt.step+`
  }
}
`)
			for _, row := range tt.taken {
				insertIDs(t, e.svc.Store, row[0].(string), row[1].(int), row[2].(int))
			}
			res := e.run("ids", "request.ana", request(tt.user))
			st := wantOK(t, res, "ids")
			if res.Msg["uid"] != tt.wantUID || res.Msg["gid"] != tt.wantGID {
				t.Errorf("uid, gid = %v, %v; want %d, %d", res.Msg["uid"], res.Msg["gid"], tt.wantUID, tt.wantGID)
			}
			if st.Note != tt.wantNote {
				t.Errorf("note %q; want %q", st.Note, tt.wantNote)
			}
		})
	}
}

func insertIDs(t *testing.T, s *engine.Store, user string, uid, gid int) {
	t.Helper()
	_, err := s.DB().Exec(`INSERT INTO ids (username, uid, gid, created_at) VALUES (?, ?, ?, 'test')`,
		user, uid, gid)
	if err != nil {
		t.Fatal(err)
	}
}

// TestAllocateUIDRangeExhausted is C10: with every id below 19999 taken,
// three requests at once get exactly one 19999 and two refusals, and
// nothing outside the range is ever handed out.
func TestAllocateUIDRangeExhausted(t *testing.T) {
	e := newEnv(t, allocatePipeline)
	tx, err := e.svc.Store.DB().Begin()
	if err != nil {
		t.Fatal(err)
	}
	for id := 10001; id <= 19998; id++ {
		if _, err := tx.Exec(`INSERT INTO ids (username, uid, gid, created_at) VALUES (?, ?, ?, 'test')`,
			fmt.Sprintf("old%d", id), id, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}

	results := runConcurrently(t, e, []string{"ana", "bob", "cid"})
	var winners []string
	var refusals []string
	for user, res := range results {
		st := stepOf(t, res, "ids")
		switch st.Status {
		case engine.StepOK:
			winners = append(winners, user)
			if res.Msg["uid"] != 19999 || res.Msg["gid"] != 19999 {
				t.Errorf("%s got uid %v, gid %v; want 19999", user, res.Msg["uid"], res.Msg["gid"])
			}
		case engine.StepFailed:
			refusals = append(refusals, st.Error)
		}
	}
	if len(winners) != 1 || len(refusals) != 2 {
		t.Fatalf("winners %v, refusals %q; want one winner and two refusals", winners, refusals)
	}
	for _, msg := range refusals {
		if msg != "uid range 10001–19999 exhausted" {
			t.Errorf("refusal %q, want %q", msg, "uid range 10001–19999 exhausted")
		}
	}
	if n := count(t, e.svc.Store, `SELECT COUNT(*) FROM ids WHERE uid NOT BETWEEN 10001 AND 19999`); n != 0 {
		t.Errorf("%d ids outside the range", n)
	}
	if n := count(t, e.svc.Store, `SELECT COUNT(*) FROM ids WHERE uid = 19999`); n != 1 {
		t.Errorf("19999 reserved %d times; want once", n)
	}
}

// runConcurrently hands one request per user to the ids pipeline, all at
// once, and returns each user's result.
func runConcurrently(t *testing.T, e *testEnv, users []string) map[string]*engine.Result {
	t.Helper()
	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		results = map[string]*engine.Result{}
		start   = make(chan struct{})
	)
	for _, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			res, err := e.handle("ids", "request."+u, request(u))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Errorf("%s: %v", u, err)
				return
			}
			results[u] = res
		}()
	}
	close(start)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return results
}

// TestAllocateUIDConcurrent is C11: twenty allocations at once on one
// SQLite file in WAL mode all succeed with distinct ids, whether they
// share one Store or come through two (as two regflow processes would).
func TestAllocateUIDConcurrent(t *testing.T) {
	for _, stores := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d stores", stores), func(t *testing.T) {
			envs := []*testEnv{newEnv(t, allocatePipeline)}
			if mode := journalMode(t, envs[0].svc.Store); mode != "wal" {
				t.Fatalf("journal_mode = %q; want wal", mode)
			}
			for len(envs) < stores {
				envs = append(envs, sharingStore(t, envs[0]))
			}

			var (
				mu   sync.Mutex
				wg   sync.WaitGroup
				uids = map[int]string{}
			)
			start := make(chan struct{})
			for i := range 20 {
				user := fmt.Sprintf("user%02d", i)
				e := envs[i%len(envs)]
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					res, err := e.handle("ids", "request."+user, request(user))
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						t.Errorf("%s: %v", user, err)
						return
					}
					st := stepOf(t, res, "ids")
					if st.Status != engine.StepOK {
						t.Errorf("%s: %s: %s", user, st.Status, st.Error)
						return
					}
					uid := res.Msg["uid"].(int)
					if other, dup := uids[uid]; dup {
						t.Errorf("uid %d given to %s and %s", uid, other, user)
					}
					uids[uid] = user
				}()
			}
			close(start)
			wg.Wait()

			got := make([]int, 0, len(uids))
			for uid := range uids {
				got = append(got, uid)
			}
			sort.Ints(got)
			if len(got) != 20 || got[0] != 10001 || got[19] != 10020 {
				t.Errorf("uids %v; want 10001 to 10020", got)
			}
		})
	}
}

func journalMode(t *testing.T, s *engine.Store) string {
	t.Helper()
	var mode string
	if err := s.DB().QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil {
		t.Fatal(err)
	}
	return mode
}

// sharingStore returns a second environment over the same configuration
// and database file, with its own Store and runner.
func sharingStore(t *testing.T, e *testEnv) *testEnv {
	t.Helper()
	store, err := engine.OpenStore(filepath.Join(e.root, "regflow.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	svc := &engine.Services{Store: store, Publisher: e.pub, Mailer: e.svc.Mailer, Root: e.root,
		Logger: slog.New(slog.DiscardHandler)}
	return &testEnv{t: t, cfg: e.cfg, svc: svc, runner: engine.NewRunner(e.cfg, svc), pub: e.pub,
		root: e.root, outbox: e.outbox}
}

func TestAllocateUIDFailures(t *testing.T) {
	tests := []struct {
		name    string
		step    string
		body    map[string]any
		wantErr string
	}{
		{"empty username", "", request("ana", "username", ""), "username is empty"},
		{"username template", `username = "{{ msg.reason }}"`, request("ana", "reason", ""), "username is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, `
pipeline "ids" {
  on = ["request.*"]
  allocate_uid "ids" {
    uid_range = [10001, 19999]
    `+tt.step+`
  }
}
`)
			wantFailed(t, e.run("ids", "request.ana", tt.body), "ids", tt.wantErr)
			if n := count(t, e.svc.Store, `SELECT COUNT(*) FROM ids`); n != 0 {
				t.Errorf("ids rows = %d; want 0", n)
			}
		})
	}
}

func TestAllocateUIDConfig(t *testing.T) {
	tests := []struct {
		name        string
		step        string
		wantSummary string
	}{
		{"uid 0", "uid_range = [0, 100]", "Invalid uid range"},
		{"beyond uid_t", "uid_range = [1, 4294967295]", "Invalid uid range"},
		{"reversed", "uid_range = [200, 100]", "Invalid range"},
		{"gid 0", "uid_range = [1, 100]\n    gid_range = [0, 100]", "Invalid gid range"},
		{"missing range", "", "Missing required argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			diags := loadDiags(t, `
pipeline "ids" {
  on = ["request.*"]
  allocate_uid "ids" {
    `+tt.step+`
  }
}
`)
			if !hasDiag(diags, tt.wantSummary) {
				t.Fatalf("diagnostics:\n%s\nwant summary %q", diagText(diags), tt.wantSummary)
			}
		})
	}
}

package engine

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Store is regflow's SQLite database: reserved ids, claimed unique values,
// the event log, the step journal and the registrations. It is safe for
// concurrent use by many goroutines and by several regflow processes on
// one host.
//
// Reads use a pool of connections; WAL lets them run beside the writer.
// All writes of a process go through one connection and one goroutine,
// which commits the writes that queued up meanwhile together (group
// commit): a write returns only once it is committed, and one write's
// failure undoes only that write. Between
// processes, each write transaction takes the lock when it begins and
// waits for it (busy timeout), so nothing fails with "database is locked".
type Store struct {
	db     *sql.DB // readers
	w      *sql.DB // the one writer connection
	path   string
	writes chan *writeOp
	done   chan struct{}

	mu     sync.RWMutex // held to send on writes; Close takes it to close writes
	closed bool         // guarded by mu

	wstmts sync.Map // prepared statements of the writer, by query
	rstmts sync.Map // prepared statements of the readers, by query
	hints  sync.Map // lowest id that may be free, by id range; see lowestFree

	file os.FileInfo // the database file as opened; nil in memory
}

// Gone reports an error when the database file was removed or replaced
// since the store opened it: what is written then is lost, and ids would
// be handed out again from a fresh store.
func (s *Store) Gone() error {
	if s == nil || s.file == nil {
		return nil
	}
	fi, err := os.Stat(s.path)
	if err != nil {
		return fmt.Errorf("the store %s is gone (%w); restore it before starting regflow again, "+
			"or ids already given out may be given out again", s.path, err)
	}
	if !os.SameFile(fi, s.file) {
		return fmt.Errorf("the store %s was replaced by another file while regflow ran; "+
			"start regflow again to use it", s.path)
	}
	return nil
}

// exec runs one statement as a write.
func (s *Store) exec(ctx context.Context, op, query string, args ...any) error {
	return s.write(ctx, func(tx *wtx) error {
		_, err := tx.Exec(query, args...)
		return storeErr(op, err)
	})
}

// writeOp is one write waiting for the writer.
type writeOp struct {
	fn  func(tx *wtx) error
	err chan error
}

// wtx is the writer's transaction. Its statements are prepared once and
// kept: parsing SQL would otherwise cost more than running it.
type wtx struct {
	tx *sql.Tx
	s  *Store
}

// Exec runs a statement in the transaction.
func (w *wtx) Exec(q string, args ...any) (sql.Result, error) {
	st, err := w.s.stmt(w.s.w, &w.s.wstmts, q)
	if err != nil {
		return nil, err
	}
	return w.tx.Stmt(st).Exec(args...)
}

// Query runs a query in the transaction.
func (w *wtx) Query(q string, args ...any) (*sql.Rows, error) {
	st, err := w.s.stmt(w.s.w, &w.s.wstmts, q)
	if err != nil {
		return nil, err
	}
	return w.tx.Stmt(st).Query(args...)
}

// QueryRow runs a query in the transaction.
func (w *wtx) QueryRow(q string, args ...any) *sql.Row {
	st, err := w.s.stmt(w.s.w, &w.s.wstmts, q)
	if err != nil {
		return w.tx.QueryRow(q, args...) // reports the same error
	}
	return w.tx.Stmt(st).QueryRow(args...)
}

// stmt returns the statement for q prepared on db, preparing it once.
func (s *Store) stmt(db *sql.DB, cache *sync.Map, q string) (*sql.Stmt, error) {
	if st, ok := cache.Load(q); ok {
		return st.(*sql.Stmt), nil
	}
	st, err := db.Prepare(q)
	if err != nil {
		return nil, err
	}
	if prev, loaded := cache.LoadOrStore(q, st); loaded {
		st.Close()
		return prev.(*sql.Stmt), nil
	}
	return st, nil
}

// readRow runs a query on a reader connection.
func (s *Store) readRow(ctx context.Context, q string, args ...any) *sql.Row {
	st, err := s.stmt(s.db, &s.rstmts, q)
	if err != nil {
		return s.db.QueryRowContext(ctx, q, args...)
	}
	return st.QueryRowContext(ctx, args...)
}

// read runs a query on a reader connection.
func (s *Store) read(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	st, err := s.stmt(s.db, &s.rstmts, q)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

// maxBatch bounds how many writes share one transaction.
const maxBatch = 256

const storeSchema = `
CREATE TABLE IF NOT EXISTS ids (
	username   TEXT PRIMARY KEY,
	uid        INTEGER NOT NULL UNIQUE,
	gid        INTEGER NOT NULL UNIQUE,
	created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS claims (
	field      TEXT NOT NULL,
	value      TEXT NOT NULL,
	owner      TEXT NOT NULL,
	created_at TEXT NOT NULL,
	PRIMARY KEY (field, value)
);
CREATE TABLE IF NOT EXISTS events (
	id          INTEGER PRIMARY KEY,
	time        TEXT NOT NULL,
	pipeline    TEXT NOT NULL,
	routing_key TEXT NOT NULL,
	message_id  TEXT NOT NULL,
	body        TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS registrations (
	tracker       TEXT NOT NULL,
	id            TEXT NOT NULL,
	state         TEXT NOT NULL,
	start_message TEXT NOT NULL,
	opened_at     TEXT NOT NULL,
	deadline_at   TEXT NOT NULL,
	updated_at    TEXT NOT NULL,
	closed_at     TEXT NOT NULL DEFAULT '',
	closed_by     TEXT NOT NULL DEFAULT '',
	answered      INTEGER NOT NULL DEFAULT 0,
	waiting_for   TEXT NOT NULL DEFAULT '',
	last_error    TEXT NOT NULL DEFAULT '',
	late          TEXT NOT NULL DEFAULT '',
	msg           TEXT NOT NULL,
	corr          TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (tracker, id)
);
CREATE TABLE IF NOT EXISTS timed_out (
	tracker       TEXT NOT NULL,
	id            TEXT NOT NULL,
	start_message TEXT NOT NULL,
	at            TEXT NOT NULL,
	PRIMARY KEY (tracker, id, start_message)
);
CREATE TABLE IF NOT EXISTS registration_steps (
	tracker  TEXT NOT NULL,
	id       TEXT NOT NULL,
	at       TEXT NOT NULL,
	pipeline TEXT NOT NULL,
	step     TEXT NOT NULL,
	status   TEXT NOT NULL,
	attempts INTEGER NOT NULL,
	note     TEXT NOT NULL,
	error    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS registration_steps_id ON registration_steps (tracker, id, at);
CREATE TABLE IF NOT EXISTS journal (
	scope      TEXT NOT NULL,
	step       TEXT NOT NULL,
	status     TEXT NOT NULL,
	added      TEXT NOT NULL DEFAULT '{}',
	error      TEXT NOT NULL DEFAULT '',
	note       TEXT NOT NULL DEFAULT '',
	attempts   INTEGER NOT NULL DEFAULT 1,
	updated_at TEXT NOT NULL,
	PRIMARY KEY (scope, step)
);
`

// migrate adds to a store made by an earlier regflow the columns added
// since.
func migrate(db *sql.DB) error {
	for _, c := range []struct{ table, column, decl string }{
		{"registrations", "corr", "TEXT NOT NULL DEFAULT ''"},
	} {
		var n int
		err := db.QueryRow(`SELECT count(*) FROM pragma_table_info(?) WHERE name = ?`, c.table, c.column).Scan(&n)
		if err != nil {
			return err
		}
		if n == 0 {
			if _, err := db.Exec(`ALTER TABLE ` + c.table + ` ADD COLUMN ` + c.column + ` ` + c.decl); err != nil {
				return err
			}
		}
	}
	return nil
}

// OpenStore opens (creating when missing) the database at path.
func OpenStore(path string) (*Store, error) {
	return openStore(path, "_journal_mode=WAL&_synchronous=NORMAL")
}

// openScratchStore opens a store whose contents may be lost in a crash,
// for a sandbox that is thrown away anyway: the disk is never asked to
// make a write durable.
func openScratchStore(path string) (*Store, error) {
	return openStore(path, "_journal_mode=WAL&_synchronous=OFF")
}

// OpenMemoryStore opens a store that lives in memory only, as long as it
// is open: for throughput measurements that must not be bounded by a disk.
func OpenMemoryStore(name string) (*Store, error) {
	return openStore(name, "mode=memory&cache=shared")
}

func openStore(path, durability string) (*Store, error) {
	if dir := filepath.Dir(path); dir != "" && !strings.Contains(durability, "mode=memory") {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
	}
	if strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("open store: path %q must not contain '?' or '#'", path)
	}
	dsn := "file:" + path + "?_busy_timeout=10000&" + durability
	w, err := sql.Open("sqlite", dsn+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	// One connection writes; the second only prepares statements, which
	// cannot wait for the first while a transaction holds it.
	w.SetMaxOpenConns(2)
	w.SetMaxIdleConns(2)
	w.SetConnMaxIdleTime(0)
	if _, err := w.Exec(storeSchema); err != nil {
		w.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if err := migrate(w); err != nil {
		w.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open store: %w", err)
	}
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(8)
	s := &Store{db: db, w: w, path: path, writes: make(chan *writeOp, maxBatch), done: make(chan struct{})}
	if !strings.Contains(durability, "mode=memory") {
		if s.file, err = os.Stat(path); err != nil {
			w.Close()
			db.Close()
			return nil, fmt.Errorf("open store: %w", err)
		}
	}
	go s.writer()
	return s, nil
}

// Close stops the writer, after the writes already queued, and closes the
// database.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.writes)
	s.mu.Unlock()
	<-s.done
	for _, cache := range []*sync.Map{&s.wstmts, &s.rstmts} {
		cache.Range(func(_, st any) bool { st.(*sql.Stmt).Close(); return true })
	}
	s.db.Close()
	return s.w.Close()
}

// write runs fn in a write transaction, shared with other writes queued
// at the same time, and returns once it is committed.
func (s *Store) write(ctx context.Context, fn func(tx *wtx) error) error {
	op := &writeOp{fn: fn, err: make(chan error, 1)}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return Unavailable(errors.New("the store is closed"))
	}
	s.writes <- op
	s.mu.RUnlock()
	return <-op.err
}

func (s *Store) writer() {
	defer close(s.done)
	batch := make([]*writeOp, 0, maxBatch)
	for op := range s.writes {
		batch = append(batch[:0], op)
	fill:
		for len(batch) < maxBatch {
			select {
			case more, ok := <-s.writes:
				if !ok {
					break fill
				}
				batch = append(batch, more)
			default:
				break fill
			}
		}
		s.commit(batch)
	}
}

// commit runs a batch of writes in one transaction. Should one fail, the
// transaction is rolled back and each write runs again in a transaction
// of its own, so that one write's failure undoes only that write.
func (s *Store) commit(batch []*writeOp) {
	if len(batch) > 1 {
		if err := s.run(batch); err == nil {
			for _, op := range batch {
				op.err <- nil
			}
			return
		}
	}
	for _, op := range batch {
		op.err <- s.run([]*writeOp{op})
	}
}

// run runs writes in one transaction and commits it if all succeed.
func (s *Store) run(batch []*writeOp) error {
	tx, err := s.w.Begin()
	if err != nil {
		return storeErr("begin", err)
	}
	w := &wtx{tx: tx, s: s}
	for _, op := range batch {
		if err := op.fn(w); err != nil {
			tx.Rollback()
			return err
		}
	}
	return storeErr("commit", tx.Commit())
}

// Path returns the database file's path.
func (s *Store) Path() string { return s.path }

// DB returns the underlying database, for tests and tools.
func (s *Store) DB() *sql.DB { return s.db }

func now() string { return time.Now().UTC().Format(time.RFC3339Nano) }

// storeErr marks a database error: busy and locked errors are transient,
// a full disk or a broken file is an infrastructure failure.
func storeErr(op string, err error) error {
	if err == nil {
		return nil
	}
	err = fmt.Errorf("%s: %w", op, err)
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
			return Transient(err)
		case sqlite3.SQLITE_CONSTRAINT:
			return Permanent(err)
		}
	}
	return Unavailable(err)
}

// IDRange is an inclusive range of POSIX ids.
type IDRange struct{ Lo, Hi int64 }

// String writes the range as "10001–19999".
func (r IDRange) String() string { return fmt.Sprintf("%d–%d", r.Lo, r.Hi) }

// ErrRangeExhausted is returned when an id range has no free id left.
var ErrRangeExhausted = errors.New("exhausted")

// AllocateIDs returns the uid and gid reserved for username, reserving the
// lowest free ones when the user has none yet. When gids is nil the gid
// equals the uid (a user private group). fresh reports whether the ids were
// reserved by this call. The UNIQUE constraints on uid and gid make a
// duplicate impossible even if two processes race.
func (s *Store) AllocateIDs(ctx context.Context, username string, uids IDRange, gids *IDRange) (uid, gid int64, fresh bool, err error) {
	err = s.write(ctx, func(tx *wtx) error {
		err := tx.QueryRow(`SELECT uid, gid FROM ids WHERE username = ?`, username).Scan(&uid, &gid)
		if err == nil {
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return storeErr("look up ids", err)
		}
		if gids == nil {
			uid, err = lowestFree(tx, uids, true, true)
			gid = uid
		} else {
			uid, err = lowestFree(tx, uids, true, false)
			if err == nil {
				gid, err = lowestFree(tx, *gids, false, true)
			}
		}
		if err != nil {
			return err
		}
		if _, err := tx.Exec(`INSERT INTO ids (username, uid, gid, created_at) VALUES (?, ?, ?, ?)`,
			username, uid, gid, now()); err != nil {
			return storeErr("reserve ids", err)
		}
		fresh = true
		return nil
	})
	if err != nil {
		return 0, 0, false, err
	}
	return uid, gid, fresh, nil
}

// lowestFree finds the lowest id in r used neither as a uid (when byUID)
// nor as a gid (when byGID). The lowest free id is either r.Lo or one more
// than an id in use, so only those candidates are tried.
func lowestFree(tx *wtx, r IDRange, byUID, byGID bool) (int64, error) {
	// Walk the ids in use upwards from the lowest one that may be free,
	// known from earlier allocations: every id below it is taken, since
	// regflow never frees one. The walk reads only the ids above it,
	// through the indexes on uid and gid.
	hintKey := fmt.Sprintf("%v/%v/%d-%d", byUID, byGID, r.Lo, r.Hi)
	start := r.Lo
	if h, ok := tx.s.hints.Load(hintKey); ok && h.(int64) > start {
		start = h.(int64)
	}
	var used []string
	if byUID {
		used = append(used, `SELECT uid AS id FROM ids WHERE uid >= ?1`)
	}
	if byGID {
		used = append(used, `SELECT gid AS id FROM ids WHERE gid >= ?1`)
	}
	rows, err := tx.Query(strings.Join(used, " UNION ")+` ORDER BY id`, start)
	if err != nil {
		return 0, storeErr("find free id", err)
	}
	defer rows.Close()
	c := start
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return 0, storeErr("find free id", err)
		}
		if id > c {
			break
		}
		if id == c {
			c++
		}
	}
	if err := rows.Err(); err != nil {
		return 0, storeErr("find free id", err)
	}
	tx.s.hints.Store(hintKey, c)
	if c > r.Hi {
		what := "gid"
		if byUID {
			what = "uid"
		}
		return 0, Permanent(fmt.Errorf("%s range %s %w", what, r, ErrRangeExhausted))
	}
	return c, nil
}

// LookupIDs returns the ids reserved for username, if any.
func (s *Store) LookupIDs(ctx context.Context, username string) (uid, gid int64, ok bool, err error) {
	err = s.readRow(ctx, `SELECT uid, gid FROM ids WHERE username = ?`, username).Scan(&uid, &gid)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, 0, false, nil
	}
	if err != nil {
		return 0, 0, false, storeErr("look up ids", err)
	}
	return uid, gid, true, nil
}

// Claim is a value that must belong to one owner only, such as an email
// address that only one account may use.
type Claim struct {
	Field   string
	Value   string
	Message string // the error when someone else owns the value
}

// ClaimUnique claims every value for owner in one transaction. A value
// that another owner already holds fails the whole claim with that claim's
// message; values the owner already holds are fine. Nothing is claimed
// unless everything is.
func (s *Store) ClaimUnique(ctx context.Context, owner string, claims []Claim) (*Claim, error) {
	var conflict *Claim
	err := s.write(ctx, func(tx *wtx) error {
		for i, c := range claims {
			var holder string
			err := tx.QueryRow(`SELECT owner FROM claims WHERE field = ? AND value = ?`, c.Field, c.Value).Scan(&holder)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				if _, err := tx.Exec(`INSERT INTO claims (field, value, owner, created_at) VALUES (?, ?, ?, ?)`,
					c.Field, c.Value, owner, now()); err != nil {
					return storeErr("claim "+c.Field, err)
				}
			case err != nil:
				return storeErr("look up "+c.Field, err)
			case holder != owner:
				conflict = &claims[i]
				return errConflict
			}
		}
		return nil
	})
	if errors.Is(err, errConflict) {
		return conflict, nil
	}
	return nil, err
}

// errConflict undoes a claim's savepoint when a value is taken.
var errConflict = errors.New("claimed by another owner")

// Event is one line of the event log.
type Event struct {
	Time       time.Time `json:"time"`
	Pipeline   string    `json:"pipeline"`
	RoutingKey string    `json:"routing_key"`
	MessageID  string    `json:"message_id"`
	Body       Message   `json:"body"`
}

// AddEvent records an event.
func (s *Store) AddEvent(ctx context.Context, e *Event) error {
	body, err := json.Marshal(e.Body)
	if err != nil {
		return Permanent(fmt.Errorf("encode event: %w", err))
	}
	return s.write(ctx, func(tx *wtx) error {
		_, err := tx.Exec(`INSERT INTO events (time, pipeline, routing_key, message_id, body) VALUES (?, ?, ?, ?, ?)`,
			e.Time.UTC().Format(time.RFC3339Nano), e.Pipeline, e.RoutingKey, e.MessageID, string(body))
		return storeErr("record event", err)
	})
}

// Step statuses in the journal.
const (
	StatusOK      = "ok"
	StatusFailed  = "failed"
	StatusSkipped = "skipped"
)

// JournalEntry is the recorded result of one step for one message.
type JournalEntry struct {
	Status   string
	Added    Message // fields the step set
	Error    string
	Note     string
	Attempts int
}

// JournalGet returns the recorded result of step within scope.
func (s *Store) JournalGet(ctx context.Context, scope, step string) (*JournalEntry, error) {
	var e JournalEntry
	var added string
	err := s.readRow(ctx,
		`SELECT status, added, error, note, attempts FROM journal WHERE scope = ? AND step = ?`,
		scope, step).Scan(&e.Status, &added, &e.Error, &e.Note, &e.Attempts)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, storeErr("read journal", err)
	}
	if err := decodeObject([]byte(added), &e.Added); err != nil {
		return nil, Unavailable(fmt.Errorf("read journal: %w", err))
	}
	return &e, nil
}

// JournalScope returns every step recorded within scope, by step name:
// one query for a whole delivery instead of one per step.
func (s *Store) JournalScope(ctx context.Context, scope string) (map[string]*JournalEntry, error) {
	rows, err := s.read(ctx, `SELECT step, status, added, error, note, attempts FROM journal WHERE scope = ?`, scope)
	if err != nil {
		return nil, storeErr("read journal", err)
	}
	defer rows.Close()
	out := map[string]*JournalEntry{}
	for rows.Next() {
		var step, added string
		e := &JournalEntry{}
		if err := rows.Scan(&step, &e.Status, &added, &e.Error, &e.Note, &e.Attempts); err != nil {
			return nil, storeErr("read journal", err)
		}
		if err := decodeObject([]byte(added), &e.Added); err != nil {
			return nil, Unavailable(fmt.Errorf("read journal: %w", err))
		}
		out[step] = e
	}
	return out, storeErr("read journal", rows.Err())
}

// LatestScope returns the greatest journal scope that begins with prefix,
// "" when there is none.
func (s *Store) LatestScope(ctx context.Context, prefix string) (string, error) {
	rows, err := s.read(ctx, `SELECT scope FROM journal WHERE scope >= ? AND scope < ? ORDER BY scope DESC LIMIT 1`,
		prefix, prefix+"\U0010FFFF")
	if err != nil {
		return "", storeErr("read journal", err)
	}
	defer rows.Close()
	var scope string
	if rows.Next() {
		if err := rows.Scan(&scope); err != nil {
			return "", storeErr("read journal", err)
		}
	}
	return scope, storeErr("read journal", rows.Err())
}

// JournalPut records the result of step within scope, replacing any
// earlier record.
func (s *Store) JournalPut(ctx context.Context, scope, step string, e *JournalEntry) error {
	added, err := json.Marshal(e.Added)
	if err != nil {
		return Permanent(fmt.Errorf("encode journal: %w", err))
	}
	if e.Added == nil {
		added = []byte("{}")
	}
	return s.write(ctx, func(tx *wtx) error { return putJournal(tx, scope, step, e, added) })
}

func putJournal(tx *wtx, scope, step string, e *JournalEntry, added []byte) error {
	_, err := tx.Exec(`
INSERT INTO journal (scope, step, status, added, error, note, attempts, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (scope, step) DO UPDATE SET status = excluded.status, added = excluded.added,
	error = excluded.error, note = excluded.note, attempts = excluded.attempts,
	updated_at = excluded.updated_at`,
		scope, step, e.Status, string(added), e.Error, e.Note, e.Attempts, now())
	return storeErr("write journal", err)
}

// JournalForgetFailed removes the failed steps recorded within scope, so
// that a replayed message runs them again.
func (s *Store) JournalForgetFailed(ctx context.Context, scope string) error {
	return s.write(ctx, func(tx *wtx) error {
		_, err := tx.Exec(`DELETE FROM journal WHERE scope = ? AND status = ?`, scope, StatusFailed)
		return storeErr("forget failed steps", err)
	})
}

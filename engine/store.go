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
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Store is regflow's SQLite database: reserved ids, claimed unique values,
// the event log and the step journal. It is safe for concurrent use by
// many goroutines and by several regflow processes on one host: every
// connection waits for locks (busy timeout) and every write transaction
// takes the write lock when it begins, so writers queue instead of failing
// with "database is locked".
type Store struct {
	db   *sql.DB
	path string
}

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
	PRIMARY KEY (tracker, id)
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

// OpenStore opens (creating when missing) the database at path.
func OpenStore(path string) (*Store, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
	}
	if strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("open store: path %q must not contain '?' or '#'", path)
	}
	dsn := "file:" + path + "?_busy_timeout=10000&_journal_mode=WAL&_synchronous=NORMAL&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if _, err := db.Exec(storeSchema); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return &Store{db: db, path: path}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

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

func (r IDRange) String() string { return fmt.Sprintf("%d–%d", r.Lo, r.Hi) }

// ErrRangeExhausted is returned when an id range has no free id left.
var ErrRangeExhausted = errors.New("exhausted")

// AllocateIDs returns the uid and gid reserved for username, reserving the
// lowest free ones when the user has none yet. When gids is nil the gid
// equals the uid (a user private group). fresh reports whether the ids were
// reserved by this call. The UNIQUE constraints on uid and gid make a
// duplicate impossible even if two processes race.
func (s *Store) AllocateIDs(ctx context.Context, username string, uids IDRange, gids *IDRange) (uid, gid int64, fresh bool, err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, 0, false, storeErr("begin", err)
	}
	defer tx.Rollback()

	err = tx.QueryRowContext(ctx, `SELECT uid, gid FROM ids WHERE username = ?`, username).Scan(&uid, &gid)
	if err == nil {
		return uid, gid, false, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return 0, 0, false, storeErr("look up ids", err)
	}

	if gids == nil {
		uid, err = lowestFree(ctx, tx, uids, true, true)
		gid = uid
	} else {
		uid, err = lowestFree(ctx, tx, uids, true, false)
		if err == nil {
			gid, err = lowestFree(ctx, tx, *gids, false, true)
		}
	}
	if err != nil {
		return 0, 0, false, err
	}
	_, err = tx.ExecContext(ctx,
		`INSERT INTO ids (username, uid, gid, created_at) VALUES (?, ?, ?, ?)`,
		username, uid, gid, now())
	if err != nil {
		return 0, 0, false, storeErr("reserve ids", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, 0, false, storeErr("commit ids", err)
	}
	return uid, gid, true, nil
}

// lowestFree finds the lowest id in r used neither as a uid (when byUID)
// nor as a gid (when byGID). The lowest free id is either r.Lo or one more
// than an id in use, so only those candidates are tried.
func lowestFree(ctx context.Context, tx *sql.Tx, r IDRange, byUID, byGID bool) (int64, error) {
	var used []string
	if byUID {
		used = append(used, `SELECT uid AS id FROM ids`)
	}
	if byGID {
		used = append(used, `SELECT gid AS id FROM ids`)
	}
	u := strings.Join(used, " UNION ")
	q := `WITH used(id) AS (` + u + `)
SELECT MIN(c) FROM (
	SELECT ? AS c
	UNION SELECT id + 1 FROM used WHERE id >= ? AND id < ?
) WHERE c NOT IN (SELECT id FROM used)`
	var id sql.NullInt64
	if err := tx.QueryRowContext(ctx, q, r.Lo, r.Lo, r.Hi).Scan(&id); err != nil {
		return 0, storeErr("find free id", err)
	}
	if !id.Valid || id.Int64 > r.Hi {
		what := "gid"
		if byUID {
			what = "uid"
		}
		return 0, Permanent(fmt.Errorf("%s range %s %w", what, r, ErrRangeExhausted))
	}
	return id.Int64, nil
}

// LookupIDs returns the ids reserved for username, if any.
func (s *Store) LookupIDs(ctx context.Context, username string) (uid, gid int64, ok bool, err error) {
	err = s.db.QueryRowContext(ctx, `SELECT uid, gid FROM ids WHERE username = ?`, username).Scan(&uid, &gid)
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
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, storeErr("begin", err)
	}
	defer tx.Rollback()
	for i, c := range claims {
		var holder string
		err := tx.QueryRowContext(ctx,
			`SELECT owner FROM claims WHERE field = ? AND value = ?`, c.Field, c.Value).Scan(&holder)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			_, err = tx.ExecContext(ctx,
				`INSERT INTO claims (field, value, owner, created_at) VALUES (?, ?, ?, ?)`,
				c.Field, c.Value, owner, now())
			if err != nil {
				return nil, storeErr("claim "+c.Field, err)
			}
		case err != nil:
			return nil, storeErr("look up "+c.Field, err)
		case holder != owner:
			return &claims[i], nil
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, storeErr("commit claims", err)
	}
	return nil, nil
}

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
	_, err = s.db.ExecContext(ctx,
		`INSERT INTO events (time, pipeline, routing_key, message_id, body) VALUES (?, ?, ?, ?, ?)`,
		e.Time.UTC().Format(time.RFC3339Nano), e.Pipeline, e.RoutingKey, e.MessageID, string(body))
	return storeErr("record event", err)
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
	err := s.db.QueryRowContext(ctx,
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
	_, err = s.db.ExecContext(ctx, `
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
	_, err := s.db.ExecContext(ctx, `DELETE FROM journal WHERE scope = ? AND status = ?`, scope, StatusFailed)
	return storeErr("forget failed steps", err)
}

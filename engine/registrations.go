package engine

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Registration states.
const (
	RegOpen     = "open"      // started, not answered yet
	RegDone     = "done"      // answered by the pipelines
	RegTimedOut = "timed_out" // the deadline passed first; answered by on_timeout
)

// Registration is the progress of one tracked registration.
type Registration struct {
	Tracker      string    `json:"tracker"`
	ID           string    `json:"id"`
	State        string    `json:"state"`
	StartMessage string    `json:"start_message"`         // identity of the message that opened it
	Correlation  string    `json:"correlation,omitempty"` // its AMQP correlation id, for the timeout answer
	OpenedAt     time.Time `json:"opened_at"`
	DeadlineAt   time.Time `json:"deadline_at,omitzero"`
	UpdatedAt    time.Time `json:"updated_at"`
	ClosedAt     time.Time `json:"closed_at,omitzero"`
	ClosedBy     string    `json:"closed_by,omitempty"` // message id of the answer
	Answered     bool      `json:"answered"`            // on_timeout finished (timed-out registrations)
	WaitingFor   string    `json:"waiting_for,omitempty"`
	LastError    string    `json:"last_error,omitempty"`
	Late         string    `json:"late,omitempty"` // what arrived after the timeout
	Msg          Message   `json:"msg"`
}

// RegistrationStep is one step that ran for a registration.
type RegistrationStep struct {
	At       time.Time `json:"at"`
	Pipeline string    `json:"pipeline"`
	Step     string    `json:"step"`
	Status   string    `json:"status"`
	Attempts int       `json:"attempts"`
	Note     string    `json:"note,omitempty"`
	Error    string    `json:"error,omitempty"`
}

func parseTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// OpenRegistration starts tracking a registration. It does nothing when
// the same message opened it already (another pipeline saw it, or it was
// delivered again) or when one is open; a new message for a finished
// registration starts it afresh. It reports whether it opened one.
func (s *Store) OpenRegistration(ctx context.Context, r *Registration) (bool, error) {
	msg, err := json.Marshal(r.Msg)
	if err != nil {
		return false, Permanent(fmt.Errorf("encode registration: %w", err))
	}
	var opened bool
	err = s.write(ctx, func(tx *wtx) error {
		res, err := tx.Exec(`
INSERT INTO registrations (tracker, id, state, start_message, opened_at, deadline_at, updated_at,
	waiting_for, msg, corr)
VALUES (?, ?, 'open', ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (tracker, id) DO UPDATE SET state = 'open', start_message = excluded.start_message,
	corr = excluded.corr,
	opened_at = excluded.opened_at, deadline_at = excluded.deadline_at, updated_at = excluded.updated_at,
	closed_at = '', closed_by = '', answered = 0, waiting_for = excluded.waiting_for, last_error = '',
	late = '', msg = excluded.msg
WHERE registrations.state != 'open' AND registrations.start_message != excluded.start_message`,
			r.Tracker, r.ID, r.StartMessage, formatTime(r.OpenedAt), formatTime(r.DeadlineAt),
			formatTime(r.OpenedAt), r.WaitingFor, string(msg), r.Correlation)
		if err != nil {
			return storeErr("open registration", err)
		}
		n, _ := res.RowsAffected()
		if opened = n > 0; opened {
			_, err = tx.Exec(`DELETE FROM registration_steps WHERE tracker = ? AND id = ? AND at < ?`,
				r.Tracker, r.ID, formatTime(r.OpenedAt))
		}
		return storeErr("open registration", err)
	})
	return opened, err
}

// CloseRegistration records that the answer with message id by, which
// descends from the request origin ("" when unknown), is about to be
// published. It reports whether the answer may go out: not when the
// request it answers timed out, since on_timeout answered it already. A
// registration answered already may be answered again: a second request
// that arrived while the first was open waits for an answer of its own.
// An answer to another request than the one that opened the registration
// leaves the registration as it is. state is the registration's state
// before the call, "" when it is not tracked; closed says whether this
// call closed it.
func (s *Store) CloseRegistration(ctx context.Context, tracker, id, by, origin string) (state string, ok, closed bool, err error) {
	err = s.write(ctx, func(tx *wtx) error {
		var start string
		err := tx.QueryRow(`SELECT state, start_message FROM registrations WHERE tracker = ? AND id = ?`,
			tracker, id).Scan(&state, &start)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			state, ok = "", true
			return nil
		case err != nil:
			return storeErr("read registration", err)
		case origin != "" && origin != start:
			// The answer to an earlier request of the same user, late if
			// that request timed out.
			var n int
			err := tx.QueryRow(`SELECT count(*) FROM timed_out WHERE tracker = ? AND id = ? AND start_message = ?`,
				tracker, id, origin).Scan(&n)
			ok = n == 0
			return storeErr("read registration", err)
		case state == RegOpen:
			now := formatTime(time.Now())
			_, err = tx.Exec(`UPDATE registrations SET state = 'done', closed_at = ?, closed_by = ?,
				updated_at = ? WHERE tracker = ? AND id = ?`, now, by, now, tracker, id)
			ok, closed = err == nil, err == nil
			return storeErr("close registration", err)
		}
		ok = state != RegTimedOut
		return nil
	})
	return state, ok, closed, err
}

// TimeOutRegistration marks the registration opened by startMessage as
// timed out, if it is still open. Of several processes racing, one wins.
func (s *Store) TimeOutRegistration(ctx context.Context, tracker, id, startMessage string) (bool, error) {
	var won bool
	err := s.write(ctx, func(tx *wtx) error {
		now := formatTime(time.Now())
		res, err := tx.Exec(`UPDATE registrations SET state = 'timed_out', closed_at = ?,
			updated_at = ? WHERE tracker = ? AND id = ? AND start_message = ? AND state = 'open'`,
			now, now, tracker, id, startMessage)
		if err != nil {
			return storeErr("time out registration", err)
		}
		n, _ := res.RowsAffected()
		if won = n > 0; won {
			// Kept past a new request of the same user, so that this
			// request's late answer is still known as late then.
			_, err = tx.Exec(`INSERT OR IGNORE INTO timed_out (tracker, id, start_message, at) VALUES (?, ?, ?, ?)`,
				tracker, id, startMessage, now)
		}
		return storeErr("time out registration", err)
	})
	return won, err
}

// MarkAnswered records that a timed-out registration got its answer.
func (s *Store) MarkAnswered(ctx context.Context, tracker, id string) error {
	return s.exec(ctx, "mark answered", `UPDATE registrations SET answered = 1, updated_at = ?
		WHERE tracker = ? AND id = ?`, formatTime(time.Now()), tracker, id)
}

// NoteLate records a result that arrived after the registration timed out.
func (s *Store) NoteLate(ctx context.Context, tracker, id, what string) error {
	return s.exec(ctx, "note late result", `UPDATE registrations
		SET late = CASE WHEN late = '' THEN ? ELSE late || '; ' || ? END, updated_at = ?
		WHERE tracker = ? AND id = ?`, what, what, formatTime(time.Now()), tracker, id)
}

// StepRecord is everything one step leaves in the store: its journal
// entry and, for tracked registrations, the step and what the
// registration waits for next. It is written in one transaction.
type StepRecord struct {
	Scope, Step string
	Journal     *JournalEntry // nil: nothing to journal
	Steps       []TrackedStep
	Waiting     []Waiting
}

// TrackedStep is a step that ran for one registration.
type TrackedStep struct {
	Tracker, ID string
	Step        RegistrationStep
}

// Waiting says what an open registration waits for.
type Waiting struct {
	Tracker, ID, For string
}

func (rec *StepRecord) empty() bool {
	return rec.Journal == nil && len(rec.Steps) == 0 && len(rec.Waiting) == 0
}

// RecordStep writes a step record.
func (s *Store) RecordStep(ctx context.Context, rec *StepRecord) error {
	var added []byte
	if rec.Journal != nil {
		var err error
		if added, err = json.Marshal(rec.Journal.Added); err != nil {
			return Permanent(fmt.Errorf("encode journal: %w", err))
		}
		if rec.Journal.Added == nil {
			added = []byte("{}")
		}
	}
	return s.write(ctx, func(tx *wtx) error {
		if e := rec.Journal; e != nil {
			if err := putJournal(tx, rec.Scope, rec.Step, e, added); err != nil {
				return err
			}
		}
		for _, ts := range rec.Steps {
			if err := addRegistrationStep(tx, ts.Tracker, ts.ID, ts.Step); err != nil {
				return err
			}
		}
		for _, w := range rec.Waiting {
			_, err := tx.Exec(`UPDATE registrations SET waiting_for = ?, updated_at = ?
				WHERE tracker = ? AND id = ? AND state = 'open'`, w.For, formatTime(time.Now()), w.Tracker, w.ID)
			if err != nil {
				return storeErr("note registration", err)
			}
		}
		return nil
	})
}

// AddRegistrationStep records a step that ran for a registration, and its
// error as the registration's last one.
func (s *Store) AddRegistrationStep(ctx context.Context, tracker, id string, st RegistrationStep) error {
	return s.write(ctx, func(tx *wtx) error { return addRegistrationStep(tx, tracker, id, st) })
}

func addRegistrationStep(tx *wtx, tracker, id string, st RegistrationStep) error {
	_, err := tx.Exec(`INSERT INTO registration_steps (tracker, id, at, pipeline, step, status, attempts, note, error)
		SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9
		WHERE EXISTS (SELECT 1 FROM registrations WHERE tracker = ?1 AND id = ?2)`,
		tracker, id, formatTime(st.At), st.Pipeline, st.Step, st.Status, st.Attempts, st.Note, st.Error)
	if err != nil {
		return storeErr("record registration step", err)
	}
	if st.Error != "" {
		_, err = tx.Exec(`UPDATE registrations SET last_error = ?, updated_at = ? WHERE tracker = ? AND id = ?`,
			st.Pipeline+"/"+st.Step+": "+st.Error, formatTime(st.At), tracker, id)
	}
	return storeErr("record registration error", err)
}

const registrationColumns = `tracker, id, state, start_message, opened_at, deadline_at, updated_at, closed_at,
	closed_by, answered, waiting_for, last_error, late, msg, corr`

func scanRegistrations(rows *sql.Rows) ([]Registration, error) {
	defer rows.Close()
	var out []Registration
	for rows.Next() {
		var r Registration
		var opened, deadline, updated, closed, msg string
		if err := rows.Scan(&r.Tracker, &r.ID, &r.State, &r.StartMessage, &opened, &deadline, &updated,
			&closed, &r.ClosedBy, &r.Answered, &r.WaitingFor, &r.LastError, &r.Late, &msg, &r.Correlation); err != nil {
			return nil, storeErr("read registrations", err)
		}
		r.OpenedAt, r.DeadlineAt, r.UpdatedAt, r.ClosedAt = parseTime(opened), parseTime(deadline),
			parseTime(updated), parseTime(closed)
		r.Msg, _ = DecodeMessage([]byte(msg))
		out = append(out, r)
	}
	return out, storeErr("read registrations", rows.Err())
}

// Registrations returns the tracked registrations, newest first: all of
// them, or those whose id is id.
func (s *Store) Registrations(ctx context.Context, id string) ([]Registration, error) {
	q := `SELECT ` + registrationColumns + ` FROM registrations`
	var args []any
	if id != "" {
		q += ` WHERE id = ?`
		args = append(args, id)
	}
	rows, err := s.read(ctx, q+` ORDER BY opened_at DESC`, args...)
	if err != nil {
		return nil, storeErr("read registrations", err)
	}
	return scanRegistrations(rows)
}

// Registration returns one registration, or nil.
func (s *Store) Registration(ctx context.Context, tracker, id string) (*Registration, error) {
	rows, err := s.read(ctx, `SELECT `+registrationColumns+` FROM registrations
		WHERE tracker = ? AND id = ?`, tracker, id)
	if err != nil {
		return nil, storeErr("read registration", err)
	}
	regs, err := scanRegistrations(rows)
	if err != nil || len(regs) == 0 {
		return nil, err
	}
	return &regs[0], nil
}

// PendingRegistrations returns the registrations a deadline watcher must
// look after: open ones, and timed-out ones whose answer did not go out.
func (s *Store) PendingRegistrations(ctx context.Context) ([]Registration, error) {
	rows, err := s.read(ctx, `SELECT `+registrationColumns+` FROM registrations
		WHERE state = 'open' OR (state = 'timed_out' AND answered = 0)`)
	if err != nil {
		return nil, storeErr("read registrations", err)
	}
	return scanRegistrations(rows)
}

// RegistrationSteps returns the steps recorded for a registration, in order.
func (s *Store) RegistrationSteps(ctx context.Context, tracker, id string) ([]RegistrationStep, error) {
	rows, err := s.read(ctx, `SELECT at, pipeline, step, status, attempts, note, error
		FROM registration_steps WHERE tracker = ? AND id = ? ORDER BY at`, tracker, id)
	if err != nil {
		return nil, storeErr("read registration steps", err)
	}
	defer rows.Close()
	var out []RegistrationStep
	for rows.Next() {
		var st RegistrationStep
		var at string
		if err := rows.Scan(&at, &st.Pipeline, &st.Step, &st.Status, &st.Attempts, &st.Note, &st.Error); err != nil {
			return nil, storeErr("read registration steps", err)
		}
		st.At = parseTime(at)
		out = append(out, st)
	}
	return out, storeErr("read registration steps", rows.Err())
}

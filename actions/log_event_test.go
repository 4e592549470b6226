package actions_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"regflow/engine"
)

const logPipeline = `
pipeline "event_log" {
  on            = ["#"]
  check_message = false
  log_event "log" {
    path = "log/user_reg.log"
  }
}

pipeline "short_log" {
  on = ["#"]
  log_event "log" {
    path   = "log/short.log"
    fields = ["username", "uid"]
  }
}
`

// logLine is one line of the event log as written.
type logLine struct {
	Time       string         `json:"time"`
	Pipeline   string         `json:"pipeline"`
	RoutingKey string         `json:"routing_key"`
	MessageID  string         `json:"message_id"`
	Body       map[string]any `json:"body"`
}

// readLog returns the lines of an event log, each decoded.
func readLog(t *testing.T, path string) []logLine {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		t.Errorf("the log does not end with a newline")
	}
	var lines []logLine
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<22)
	for sc.Scan() {
		var l logLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		want := []string{"body", "message_id", "pipeline", "routing_key", "time"}
		if got := keys(decodeJSON(t, sc.Bytes())); !reflect.DeepEqual(got, want) {
			t.Errorf("line keys %v", got)
		}
		lines = append(lines, l)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

// eventRow is one row of the store's events table.
type eventRow struct {
	Time, Pipeline, RoutingKey, MessageID, Body string
}

func events(t *testing.T, s *engine.Store) []eventRow {
	t.Helper()
	rows, err := s.DB().Query(`SELECT time, pipeline, routing_key, message_id, body FROM events ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []eventRow
	for rows.Next() {
		var r eventRow
		if err := rows.Scan(&r.Time, &r.Pipeline, &r.RoutingKey, &r.MessageID, &r.Body); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// TestLogEvent: each message is one JSON line and one events row with
// its routing key, pipeline, message id and body.
func TestLogEvent(t *testing.T) {
	tests := []struct {
		name     string
		pipeline string
		key      string
		body     any
		wantBody map[string]any
	}{
		{"request", "event_log", "request.ana%2Elima", request("ana.lima"),
			map[string]any{"username": "ana.lima", "queuename": "ana%2Elima", "email": "ana.lima@example.org",
				"fullname": "Test User", "reason": "thesis"}},
		{"successful registration", "event_log", "completed.ana",
			map[string]any{"username": "ana", "uid": 10001, "success": true, "errmsg": []string{}},
			map[string]any{"username": "ana", "uid": 10001, "success": true, "errmsg": []any{}}},
		{"failed registration", "event_log", "completed.ana",
			map[string]any{"username": "ana", "uid": 10001, "success": false, "errmsg": []string{"lists: timeout"}},
			map[string]any{"username": "ana", "uid": 10001, "success": false, "errmsg": []any{"lists: timeout"}}},
		{"message outside the schema", "event_log", "request.ana", `{"username":"ana","uid":"10042"}`,
			map[string]any{"username": "ana", "uid": "10042"}},
		{"key with no words", "event_log", "", `{"username":"ana"}`,
			map[string]any{"username": "ana"}},
		{"selected fields", "short_log", "verify.ana", request("ana", "uid", 10001),
			map[string]any{"username": "ana", "uid": 10001}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, logPipeline)
			before := time.Now().UTC().Add(-time.Second)
			res := e.run(tt.pipeline, tt.key, tt.body)
			st := wantOK(t, res, "log")

			path := filepath.Join(e.root, "log/user_reg.log")
			if tt.pipeline == "short_log" {
				path = filepath.Join(e.root, "log/short.log")
			}
			if want := "logged to " + strings.TrimPrefix(path, e.root+"/"); st.Note != want {
				t.Errorf("note %q; want %q", st.Note, want)
			}
			lines := readLog(t, path)
			if len(lines) != 1 {
				t.Fatalf("%d lines; want 1", len(lines))
			}
			l := lines[0]
			if l.Pipeline != tt.pipeline || l.RoutingKey != tt.key || l.MessageID != res.MessageID {
				t.Errorf("pipeline, routing_key, message_id = %q, %q, %q; want %q, %q, %q",
					l.Pipeline, l.RoutingKey, l.MessageID, tt.pipeline, tt.key, res.MessageID)
			}
			sameJSON(t, "line body", l.Body, tt.wantBody)
			if ts, err := time.Parse(time.RFC3339Nano, l.Time); err != nil || ts.Before(before) ||
				ts.After(time.Now().Add(time.Second)) {
				t.Errorf("time %q (%v); want now", l.Time, err)
			}

			rows := events(t, e.svc.Store)
			if len(rows) != 1 {
				t.Fatalf("%d events rows; want 1", len(rows))
			}
			r := rows[0]
			if r.Pipeline != tt.pipeline || r.RoutingKey != tt.key || r.MessageID != res.MessageID {
				t.Errorf("row pipeline, routing_key, message_id = %q, %q, %q", r.Pipeline, r.RoutingKey, r.MessageID)
			}
			sameJSON(t, "row body", decodeJSON(t, []byte(r.Body)), tt.wantBody)
		})
	}
}

// TestLogEventConcurrent: many handlers at once append whole lines; every
// message is there exactly once, in the file and in the store.
func TestLogEventConcurrent(t *testing.T) {
	e := newEnv(t, logPipeline)
	const n = 64
	big := strings.Repeat("x", 16<<10) // larger than one pipe or page
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		ids = map[string]string{} // message id → username
	)
	for i := range n {
		user := fmt.Sprintf("user%02d", i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := e.handle("event_log", "request."+user, request(user, "reason", user+big))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Error(err)
				return
			}
			if st := res.Steps[0]; st.Status != engine.StepOK {
				t.Errorf("%s: %s", user, st.Error)
			}
			ids[res.MessageID] = user
		}()
	}
	wg.Wait()

	lines := readLog(t, filepath.Join(e.root, "log/user_reg.log"))
	if len(lines) != n {
		t.Fatalf("%d lines; want %d", len(lines), n)
	}
	seen := map[string]bool{}
	for _, l := range lines {
		user, ok := ids[l.MessageID]
		if !ok || seen[l.MessageID] {
			t.Errorf("unexpected or repeated message id %q", l.MessageID)
			continue
		}
		seen[l.MessageID] = true
		if l.Body["username"] != user || l.Body["reason"] != user+big {
			t.Errorf("line of %s holds username %v and a reason of %d bytes", user, l.Body["username"],
				len(fmt.Sprint(l.Body["reason"])))
		}
	}
	if got := count(t, e.svc.Store, `SELECT COUNT(DISTINCT message_id) FROM events`); got != n {
		t.Errorf("%d distinct events in the store; want %d", got, n)
	}
}

// TestLogEventAppends: a second engine writing the same log appends
// after what is there.
func TestLogEventAppends(t *testing.T) {
	e := newEnv(t, logPipeline)
	path := filepath.Join(e.root, "log/user_reg.log")
	writeFile(t, path, `{"earlier":"line"}`+"\n")
	e.run("event_log", "request.ana", request("ana"))
	e.run("event_log", "request.bob", request("bob"))

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(got) != 3 || got[0] != `{"earlier":"line"}` {
		t.Fatalf("log:\n%s", data)
	}
	for i, user := range []string{"ana", "bob"} {
		if !strings.Contains(got[i+1], `"username":"`+user+`"`) {
			t.Errorf("line %d: %s; want %s's message", i+2, got[i+1], user)
		}
	}
}

// TestLogEventRotation: after the log is renamed or removed (logrotate),
// the next line goes to a new file at the configured path.
func TestLogEventRotation(t *testing.T) {
	tests := []struct {
		name   string
		rotate func(path string) error
	}{
		{"renamed", func(p string) error { return os.Rename(p, p+".1") }},
		{"removed", os.Remove},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, logPipeline)
			path := filepath.Join(e.root, "log/user_reg.log")
			e.run("event_log", "request.ana", request("ana"))
			if err := tt.rotate(path); err != nil {
				t.Fatal(err)
			}
			e.run("event_log", "request.bob", request("bob"))

			lines := readLog(t, path)
			if len(lines) != 1 || lines[0].Body["username"] != "bob" {
				t.Fatalf("current log holds %d lines; want bob's line only", len(lines))
			}
			if tt.name == "renamed" {
				if old := readLog(t, path+".1"); len(old) != 1 || old[0].Body["username"] != "ana" {
					t.Errorf("rotated log holds %d lines; want ana's line only", len(old))
				}
			}
		})
	}
}

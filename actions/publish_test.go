package actions_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"regflow/engine"
)

// TestPublishShapes: the routing key is rendered and fields, omit and set
// shape the body that is published.
func TestPublishShapes(t *testing.T) {
	req := request("ana.lima", "uid", 10001)
	tests := []struct {
		name         string
		step         string
		body         map[string]any
		wantExchange string
		wantKey      string
		wantBody     map[string]any
	}{
		{"whole message", ``, req, "RegUsr", "completed.ana%2Elima",
			map[string]any{"username": "ana.lima", "queuename": "ana%2Elima", "email": "ana.lima@example.org",
				"fullname": "Test User", "reason": "thesis", "uid": 10001, "errmsg": []any{}, "success": true}},
		{"fields", `fields = ["username", "uid"]`, req, "RegUsr", "completed.ana%2Elima",
			map[string]any{"username": "ana.lima", "uid": 10001}},
		{"fields absent from the message", `fields = ["username", "gid"]`, req, "RegUsr", "completed.ana%2Elima",
			map[string]any{"username": "ana.lima"}},
		{"omit", `omit = ["reason", "email", "errmsg"]`, req, "RegUsr", "completed.ana%2Elima",
			map[string]any{"username": "ana.lima", "queuename": "ana%2Elima", "fullname": "Test User",
				"uid": 10001, "success": true}},
		{"set", `fields = ["username"]
    set = { notified = "true", uid = "msg.uid + 1", greeting = "'hi ' + msg.username" }`, req,
			"RegUsr", "completed.ana%2Elima",
			map[string]any{"username": "ana.lima", "notified": true, "uid": 10002, "greeting": "hi ana.lima"}},
		{"set overrides omit", `fields = ["username", "reason"]
    omit = ["reason"]
    set = { reason = "'redacted'" }`, req, "RegUsr", "completed.ana%2Elima",
			map[string]any{"username": "ana.lima", "reason": "redacted"}},
		{"other exchange", `exchange = "Audit"
    fields = ["username"]`, req, "Audit", "completed.ana%2Elima",
			map[string]any{"username": "ana.lima"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, `
pipeline "reply" {
  on = ["request.*"]
  publish "done" {
    routing_key = "completed.{{ msg.queuename }}"
    `+tt.step+`
  }
}
`)
			res, err := e.deliver("reply", &engine.Delivery{
				RoutingKey:  "request.ana%2Elima",
				MessageID:   "m-" + t.Name(),
				Correlation: "corr-42",
				Body:        encode(t, tt.body),
			})
			if err != nil {
				t.Fatal(err)
			}
			st := wantOK(t, res, "done")
			if st.Note != "published "+tt.wantKey {
				t.Errorf("note %q", st.Note)
			}

			pubs := e.pub.all()
			if len(pubs) != 1 {
				t.Fatalf("published %d messages; want 1", len(pubs))
			}
			p := pubs[0]
			if p.Exchange != tt.wantExchange || p.RoutingKey != tt.wantKey {
				t.Errorf("published to %s %s; want %s %s", p.Exchange, p.RoutingKey, tt.wantExchange, tt.wantKey)
			}
			if p.Correlation != "corr-42" {
				t.Errorf("correlation %q; want corr-42", p.Correlation)
			}
			if p.MessageID == "" || len(st.Published) != 1 || st.Published[0].MessageID != p.MessageID {
				t.Errorf("message id %q not reported in the step result %+v", p.MessageID, st.Published)
			}
			sameJSON(t, "body", decodeJSON(t, p.Body), tt.wantBody)
			if _, ok := res.Msg["greeting"]; ok {
				t.Errorf("set changed the message itself, not only the published copy")
			}
		})
	}
}

// TestPublishRefusesKey is C5 on the way out: a routing key with an empty
// word or a wildcard is never published.
func TestPublishRefusesKey(t *testing.T) {
	long := strings.Repeat("q", 250)
	tests := []struct {
		name    string
		body    map[string]any
		wantErr string
	}{
		{"missing queuename", request("ana", "queuename", nil),
			`routing key "completed." has an empty word at position 2`},
		{"empty queuename", request("ana", "queuename", ""),
			`routing key "completed." has an empty word at position 2`},
		{"queuename with dots", request("ana", "queuename", "a..b"),
			`routing key "completed.a..b" has an empty word at position 3`},
		{"star", request("ana", "queuename", "*"), `routing key "completed.*" has the wildcard "*" as a word`},
		{"hash", request("ana", "queuename", "#"), `routing key "completed.#" has the wildcard "#" as a word`},
		{"too long", request("ana", "queuename", long), "routing key is 260 bytes long; AMQP allows at most 255"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, `
pipeline "reply" {
  on = ["request.*"]
  publish "done" {
    routing_key = "completed.{{ msg.queuename }}"
  }
}
`)
			wantFailed(t, e.run("reply", "request.x", tt.body), "done", tt.wantErr)
			if pubs := e.pub.all(); len(pubs) != 0 {
				t.Errorf("published %d messages; want none", len(pubs))
			}
		})
	}
}

// TestPublishEmptyQueuenameRequest is C5 end to end: the request is
// refused by validate, and the on_failure reply with an empty word is not
// published either; the message is dead-lettered with the reason.
func TestPublishEmptyQueuenameRequest(t *testing.T) {
	e := newEnv(t, `
pipeline "get_next_uid_gid" {
  on = ["request.*"]
  validate "request" {
    required      = ["username", "queuename"]
    routing_words = ["queuename"]
  }
  publish "verify" {
    routing_key = "verify.{{ msg.queuename }}"
  }
  on_failure {
    publish "reply" {
      routing_key = "completed.{{ msg.queuename }}"
    }
  }
}
`)
	res := e.run("get_next_uid_gid", "request.", `{"username":"","queuename":"","email":"a@example.org"}`)
	wantFailed(t, res, "request", "username: must be non-empty; queuename: must be non-empty")
	wantFailed(t, res, "reply", `routing key "completed." has an empty word at position 2`)
	if pubs := e.pub.all(); len(pubs) != 0 {
		t.Errorf("published %d messages; want none", len(pubs))
	}
	const wantDL = `on_failure step reply could not answer (routing key "completed." has an empty word ` +
		`at position 2) a chain that failed with: request: username: must be non-empty; queuename: must be non-empty`
	if res.DeadLetter != wantDL {
		t.Errorf("dead letter %q; want %q", res.DeadLetter, wantDL)
	}
}

func TestPublishBrokerError(t *testing.T) {
	tests := []struct {
		name string
		err  error
	}{
		{"refused", engine.Permanent(errors.New("publish completed.ana: exchange RegUsrr not found in vhost /"))},
		{"not confirmed",
			engine.Transient(errors.New("publish completed.ana: the broker refused the message (nack)"))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, `
pipeline "reply" {
  on = ["request.*"]
  publish "done" {
    routing_key = "completed.{{ msg.queuename }}"
  }
}
`)
			e.pub.err = tt.err
			st := wantFailed(t, e.run("reply", "request.ana", request("ana")), "done", tt.err.Error())
			if len(st.Published) != 0 {
				t.Errorf("step reports %d published messages; want none", len(st.Published))
			}
		})
	}
}

// TestPublishMessageID: the id of what a step publishes is derived from
// the message it handles, so a redelivery after a crash publishes the
// same id and consumers can drop the duplicate.
func TestPublishMessageID(t *testing.T) {
	const pipeline = `
pipeline "reply" {
  on = ["request.*"]
  publish "done" {
    routing_key = "completed.{{ msg.queuename }}"
  }
}
`
	publishedID := func(messageID string) string {
		e := newEnv(t, pipeline)
		if _, err := e.deliver("reply", &engine.Delivery{RoutingKey: "request.ana", MessageID: messageID,
			Body: encode(t, request("ana"))}); err != nil {
			t.Fatal(err)
		}
		pubs := e.pub.all()
		if len(pubs) != 1 {
			t.Fatalf("published %d messages; want 1", len(pubs))
		}
		return pubs[0].MessageID
	}
	first, again, other := publishedID("m-1"), publishedID("m-1"), publishedID("m-2")
	if first != again {
		t.Errorf("the same message published ids %s and %s; want equal", first, again)
	}
	if first == other {
		t.Errorf("two messages published the same id %s", first)
	}
}

func TestPublishConfig(t *testing.T) {
	tests := []struct {
		name, step, wantSummary, wantDetail string
	}{
		{"constant key with an empty word", `routing_key = "completed."`, "Invalid routing key",
			`routing key "completed." has an empty word at position 2.`},
		{"constant key with a wildcard", `routing_key = "completed.*"`, "Invalid routing key",
			`routing key "completed.*" has the wildcard "*" as a word.`},
		{"misspelt field", `routing_key = "done"
    fields = ["usernme"]`, "Unknown message field",
			`The field "usernme" is not declared in the message block. Did you mean "username"?`},
		{"misspelt omitted field", `routing_key = "done"
    omit = ["reson"]`, "Unknown message field",
			`The field "reson" is not declared in the message block. Did you mean "reason"?`},
		{"empty exchange", `routing_key = "done"
    exchange = ""`, "Empty exchange", "Name an exchange or leave exchange out."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			diags := loadDiags(t, fmt.Sprintf(`
pipeline "reply" {
  on = ["request.*"]
  publish "done" {
    %s
  }
}
`, tt.step))
			if len(diags) != 1 || diags[0].Summary != tt.wantSummary || diags[0].Detail != tt.wantDetail {
				t.Fatalf("diagnostics:\n%s\nwant %s: %s", diagText(diags), tt.wantSummary, tt.wantDetail)
			}
		})
	}
}

// TestPublishRefusesOversize: a message larger than broker.max_body is not
// published, since every reader would refuse it.
func TestPublishRefusesOversize(t *testing.T) {
	e := newEnv(t, `
pipeline "reply" {
  on = ["request.*"]
  publish "done" {
    routing_key = "completed.{{ msg.queuename }}"
    set         = { reason = "repeat(msg.reason, 40)" }
  }
}
`)
	e.cfg.Broker.MaxBody = 1024
	res := e.run("reply", "request.x", request("ana", "reason", strings.Repeat("r", 50)))
	s := stepOf(t, res, "done")
	if s.Status != engine.StepFailed || !strings.Contains(s.Error, "the limit is 1024 (broker.max_body)") {
		t.Fatalf("step done: %s %q; want failed for the size limit", s.Status, s.Error)
	}
	if pubs := e.pub.all(); len(pubs) != 0 {
		t.Fatalf("published %d messages; want none", len(pubs))
	}
}

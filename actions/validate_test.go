package actions_test

import (
	"fmt"
	"strings"
	"testing"

	"regflow/actions"
)

// registerPipeline validates a request the way pipelines/registration.hcl
// does and then reserves ids, so that a refusal can be seen to leave the
// store untouched.
const registerPipeline = `
pipeline "register" {
  on = ["request.*"]

  validate "request" {
    required      = ["username", "queuename", "email", "fullname"]
    usernames     = ["username"]
    emails        = ["email"]
    routing_words = ["queuename"]
    multiline     = ["reason"]
    unique        = { email = "Email already exists" }
  }

  allocate_uid "ids" {
    uid_range = [10001, 19999]
  }
}
`

// wantUntouched asserts that a refused request reserved no id and claimed
// no unique value.
func wantUntouched(t *testing.T, e *testEnv) {
	t.Helper()
	if n := count(t, e.svc.Store, `SELECT COUNT(*) FROM ids`); n != 0 {
		t.Errorf("ids rows = %d after a refusal; want 0", n)
	}
	if n := count(t, e.svc.Store, `SELECT COUNT(*) FROM claims`); n != 0 {
		t.Errorf("claims rows = %d after a refusal; want 0", n)
	}
}

func TestValidateUsernames(t *testing.T) {
	tests := []struct {
		name     string
		username string
		wantErr  string // "" when the name is accepted
	}{
		{"leading digit", "2024lab", `username: must begin with a lowercase letter or underscore, not '2'`},
		{"leading dash", "-rf", `username: must begin with a lowercase letter or underscore, not '-'`},
		{"33 characters", strings.Repeat("a", 33), `username: must be at most 32 characters (has 33)`},
		{"capital letter", "José", `username: must be lowercase (found 'J')`},
		{"accented letter", "josé", `username: character 'é' is not allowed; use a-z, 0-9, '_', '-' and '.'`},
		{"space", "ana lima", `username: character ' ' is not allowed; use a-z, 0-9, '_', '-' and '.'`},
		{"reserved", "root", `username: "root" is reserved`},
		{"wildcard", "*", `username: character '*' is not allowed; use a-z, 0-9, '_', '-' and '.'`},
		{"slash", "../x", `username: must begin with a lowercase letter or underscore, not '.'`},
		{"dot inside", "ana.lima", ""},
		{"underscore and dash", "a_b-c", ""},
		{"32 characters", strings.Repeat("a", 32), ""},
		{"leading underscore", "_svc", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, registerPipeline)
			res := e.run("register", "request."+request(tt.username)["queuename"].(string),
				request(tt.username, "email", "someone@example.org"))

			if tt.wantErr != "" {
				wantFailed(t, res, "request", tt.wantErr)
				if got := ran(res); len(got) != 1 {
					t.Errorf("steps run = %v; want only request", got)
				}
				wantUntouched(t, e)
				return
			}
			wantOK(t, res, "request")
			wantOK(t, res, "ids")
			if n := count(t, e.svc.Store, `SELECT COUNT(*) FROM ids WHERE username = ?`, tt.username); n != 1 {
				t.Errorf("ids rows for %q = %d; want 1", tt.username, n)
			}
		})
	}
}

func TestValidateReservedList(t *testing.T) {
	const pipeline = `
pipeline "register" {
  on = ["request.*"]
  validate "request" {
    usernames = ["username"]
    reserved  = ["hpc", "ops"]
  }
}
`
	tests := []struct {
		name, username, wantErr string
	}{
		{"listed", "hpc", `username: "hpc" is reserved`},
		{"second listed", "ops", `username: "ops" is reserved`},
		{"default list replaced", "games", ""},
		{"ordinary name", "ana", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, pipeline)
			res := e.run("register", "request."+tt.username, request(tt.username))
			wantOutcome(t, res, "request", tt.wantErr)
		})
	}
}

// TestValidateControlCharacters is C4: a line break in a field that ends up
// in a list-server command or a header is refused before anything is sent.
func TestValidateControlCharacters(t *testing.T) {
	const pipeline = `
pipeline "register" {
  on = ["request.*"]

  validate "request" {
    required  = ["username", "email", "fullname"]
    multiline = ["reason"]
  }

  subscribe_list "lists" {
    lists  = ["hpc-users"]
    server = "listserv@lists.example.edu"
  }
}
`
	tests := []struct {
		name    string
		field   string
		value   string
		wantErr string // "" when accepted
	}{
		{"list command smuggled in a name", "fullname", "Gita Novak\nQUIET DELETE hpc-users *",
			"fullname: control character U+000A is not allowed"},
		{"header smuggled in a name", "fullname", "Eve\r\nBcc: x@example.net",
			"fullname: control character U+000D is not allowed"},
		{"unicode line separator", "fullname", "Ana\u2028Lima",
			"fullname: control character U+2028 is not allowed"},
		{"C1 next line", "fullname", "Ana\u0085Lima", "fullname: control character U+0085 is not allowed"},
		{"tab in a single-line field", "username", "ana\tx", "username: control character U+0009 is not allowed"},
		{"NUL in a multiline field", "reason", "thesis\x00", "reason: control character U+0000 is not allowed"},
		{"lines in a multiline field", "reason", "Thesis work.\r\nSecond line\twith a tab.", ""},
		{"right-to-left override", "fullname", "Ana \u202egnp.exe",
			"fullname: invisible format character U+202E is not allowed"},
		{"zero-width space", "fullname", "Ana\u200bLima", "fullname: invisible format character U+200B is not allowed"},
		{"byte order mark", "reason", "\ufeffthesis", "reason: invisible format character U+FEFF is not allowed"},
		{"zero-width non-joiner a Persian name needs", "fullname", "\u0645\u06cc\u200c\u0631\u0648\u062f", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, pipeline)
			res := e.run("register", "request.ana", request("ana", tt.field, tt.value))

			if tt.wantErr == "" {
				wantOK(t, res, "request")
				wantOK(t, res, "lists")
				if got := len(outboxFiles(t, e.outbox)); got != 1 {
					t.Errorf("outbox holds %d mails; want 1", got)
				}
				return
			}
			wantFailed(t, res, "request", tt.wantErr)
			if got := ran(res); len(got) != 1 {
				t.Errorf("steps run = %v; want only request", got)
			}
			if files := outboxFiles(t, e.outbox); len(files) != 0 {
				t.Errorf("mail sent after a refusal: %v", files)
			}
		})
	}
}

// TestValidateEmptyFields is C5: an empty queuename is refused with the
// field named, once, and an absent field is reported as required.
func TestValidateEmptyFields(t *testing.T) {
	tests := []struct {
		name    string
		body    map[string]any
		wantErr string
	}{
		{"empty username and queuename",
			request("ana", "username", "", "queuename", ""),
			"username: must be non-empty; queuename: must be non-empty"},
		{"empty queuename",
			request("ana", "queuename", ""),
			"queuename: must be non-empty"},
		{"blank username",
			request("ana", "username", "   "),
			"username: must be non-empty"},
		{"absent fields",
			map[string]any{"email": "ana@example.org"},
			"username: is required; queuename: is required; fullname: is required"},
		{"queuename with a dot",
			request("ana.lima", "queuename", "ana.lima"),
			"queuename: has '.' at byte 4; encode it as %2E"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, registerPipeline)
			res := e.run("register", "request.", tt.body)
			wantFailed(t, res, "request", tt.wantErr)
			wantUntouched(t, e)
		})
	}
}

// TestValidateEmails is C8: a bare address passes unchanged, a display
// name is refused, an IDN domain is rewritten in punycode, and a quoted
// local part is refused.
func TestValidateEmails(t *testing.T) {
	tests := []struct {
		name    string
		email   string
		want    string // the address the message carries afterwards
		wantErr string
	}{
		{"plus address", "ana+hpc@example.org", "ana+hpc@example.org", ""},
		{"IDN domain", "ana@bücher.example", "ana@xn--bcher-kva.example", ""},
		{"punycode domain", "ana@xn--bcher-kva.example", "ana@xn--bcher-kva.example", ""},
		{"display name", "Ana <ana@example.org>", "",
			"email: must be a bare address, without a name or angle brackets"},
		{"angle brackets", "<ana@example.org>", "",
			"email: must be a bare address, without a name or angle brackets"},
		{"quoted local part with a space", `"ana lima"@example.org`, "",
			"email: a quoted local part is not supported; write the address without quotes"},
		{"quoted local part", `"ana"@example.org`, "",
			"email: a quoted local part is not supported; write the address without quotes"},
		{"two addresses", "ana@example.org, bob@example.org", "",
			"email: must be a bare address such as ana@example.org"},
		{"no at sign", "ana", "", "email: must be a bare address such as ana@example.org"},
		{"non-ASCII local part", "josé@example.org", "",
			"email: non-ASCII characters before the @ are not supported"},
		{"trailing space", "ana@example.org ", "", "email: must not have leading or trailing spaces"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, registerPipeline)
			res := e.run("register", "request.ana", request("ana", "email", tt.email))

			if tt.wantErr != "" {
				wantFailed(t, res, "request", tt.wantErr)
				wantUntouched(t, e)
				return
			}
			wantOK(t, res, "request")
			if got := res.Msg["email"]; got != tt.want {
				t.Errorf("msg.email = %q; want %q", got, tt.want)
			}
			if n := count(t, e.svc.Store, `SELECT COUNT(*) FROM claims WHERE field = 'email' AND value = ?`,
				tt.want); n != 1 {
				t.Errorf("claims of %q = %d; want 1", tt.want, n)
			}
		})
	}
}

// TestValidateUnique runs requests one after another against one store:
// another owner of a claimed address gets the configured message, the
// same owner may send again.
func TestValidateUnique(t *testing.T) {
	e := newEnv(t, registerPipeline)
	steps := []struct {
		name    string
		user    string
		email   string
		wantErr string
	}{
		{"first owner", "ana", "ana@example.org", ""},
		{"second owner", "bob", "ana@example.org", "Email already exists"},
		{"second owner, other case", "bob", "ANA@Example.ORG", "Email already exists"},
		{"same owner again", "ana", "ana@example.org", ""},
		{"second owner, own address", "bob", "bob@example.org", ""},
	}
	for _, s := range steps {
		res := e.run("register", "request."+s.user, request(s.user, "email", s.email))
		if s.wantErr == "" {
			wantOK(t, res, "request")
			continue
		}
		wantFailed(t, res, "request", s.wantErr)
		if got := ran(res); len(got) != 1 {
			t.Errorf("%s: steps run = %v; want only request", s.name, got)
		}
	}
	if n := count(t, e.svc.Store, `SELECT COUNT(*) FROM claims WHERE owner = 'ana'`); n != 1 {
		t.Errorf("claims of ana = %d; want 1", n)
	}
	if n := count(t, e.svc.Store, `SELECT COUNT(*) FROM claims`); n != 2 {
		t.Errorf("claims = %d; want 2", n)
	}
}

// TestValidateConfigAllAtOnce: every misspelt field of a validate step is
// reported in one run, each where it is written.
func TestValidateConfigAllAtOnce(t *testing.T) {
	diags := loadDiags(t, `
pipeline "register" {
  on = ["request.*"]
  validate "request" {
    required  = ["emial"]
    absent    = ["gdi"]
    usernames = ["usernmae"]
    unique    = { emali = "taken" }
  }
  log_event "log" {
    fields = ["uidd"]
  }
}
`)
	var got []string
	for _, d := range diags { // lines counted from the first error's
		got = append(got, fmt.Sprintf("%d: %s", d.Subject.Start.Line-diags[0].Subject.Start.Line+5, d.Detail))
	}
	want := []string{
		`5: required names the field "emial", which the message block does not declare. Did you mean "email"?`,
		`6: absent names the field "gdi", which the message block does not declare. Did you mean "gid"?`,
		`7: usernames names the field "usernmae", which the message block does not declare. Did you mean "username"?`,
		`8: unique names the field "emali", which the message block does not declare. Did you mean "email"?`,
		`11: fields names "uidd", which the message block does not declare. Did you mean "uid"?`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("diagnostics:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestValidateAbsent: a request may not bring what later steps add.
func TestValidateAbsent(t *testing.T) {
	const pipeline = `
pipeline "register" {
  on = ["request.*"]
  validate "request" {
    absent = ["uid", "gid", "errmsg", "notified"]
  }
}
`
	e := newEnv(t, pipeline)
	tests := []struct {
		name    string
		kv      []any
		wantErr string
	}{
		{"plain request", nil, ""},
		{"empty errmsg", []any{"errmsg", []any{}}, ""},
		{"no uid", []any{"uid", nil}, ""},
		{"own uid", []any{"uid", 0}, "uid: must not be set in this message"},
		{"errmsg planted", []any{"errmsg", []any{"x"}}, "errmsg: must not be set in this message"},
		{"notified false", []any{"notified", false}, "notified: must not be set in this message"},
		{"two at once", []any{"uid", 5, "gid", 5}, "uid: must not be set in this message; gid: must not be set in this message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := e.run("register", "request.ana", request("ana", tt.kv...))
			wantOutcome(t, res, "request", tt.wantErr)
		})
	}
}

// TestValidateUniquePair: with owner = [username, email] a username and
// its address stay paired. Another address cannot take the username (its
// record would be overwritten), and a refused request claims nothing.
func TestValidateUniquePair(t *testing.T) {
	const pipeline = `
pipeline "register" {
  on = ["request.*"]
  validate "request" {
    unique = { username = "Username already exists", email = "Email already exists" }
    owner  = ["username", "email"]
  }
}
`
	e := newEnv(t, pipeline)
	steps := []struct {
		name, user, email, wantErr string
	}{
		{"first", "ana", "ana@example.org", ""},
		{"same pair again, other case", "ana", "Ana@Example.org", ""},
		{"username with another address", "ana", "other@example.org", "Username already exists"},
		{"address with another username", "bob", "ana@example.org", "Email already exists"},
		{"the refused address is still free", "cid", "other@example.org", ""},
		{"the refused username is still free", "bob", "bob@example.org", ""},
	}
	for _, s := range steps {
		res := e.run("register", "request."+s.user, request(s.user, "email", s.email))
		if s.wantErr == "" {
			wantOK(t, res, "request")
			continue
		}
		wantFailed(t, res, "request", s.wantErr)
	}
	if n := count(t, e.svc.Store, `SELECT COUNT(*) FROM claims`); n != 6 {
		t.Errorf("claims = %d; want 6 (username and email of ana, cid and bob)", n)
	}
	if n := count(t, e.svc.Store, `SELECT COUNT(*) FROM claims WHERE owner = '["ana","ana@example.org"]'`); n != 2 {
		t.Errorf("claims of ana's pair = %d; want 2", n)
	}
}

// TestValidateUniqueAllOrNothing checks that a conflict on one field
// claims none of the request's other values.
func TestValidateUniqueAllOrNothing(t *testing.T) {
	const pipeline = `
pipeline "register" {
  on = ["request.*"]
  validate "request" {
    unique = { email = "Email already exists", fullname = "Name already registered" }
  }
}
`
	e := newEnv(t, pipeline)
	wantOK(t, e.run("register", "request.ana", request("ana", "fullname", "Ana Lima")), "request")

	res := e.run("register", "request.bob", request("bob", "fullname", "Ana Lima"))
	wantFailed(t, res, "request", "Name already registered")
	if n := count(t, e.svc.Store, `SELECT COUNT(*) FROM claims WHERE value = 'bob@example.org'`); n != 0 {
		t.Errorf("bob's email was claimed although his request was refused")
	}
	if n := count(t, e.svc.Store, `SELECT COUNT(*) FROM claims WHERE owner = 'bob'`); n != 0 {
		t.Errorf("claims of bob = %d; want 0", n)
	}
}

func TestValidateRules(t *testing.T) {
	const pipeline = `
pipeline "register" {
  on = ["request.*"]
  validate "request" {
    required = ["username"]
    rules = {
      "msg.queuename == queuename(msg.username)" = "queuename: must be the username encoded for a routing key"
    }
  }
}
`
	tests := []struct {
		name      string
		queuename string
		wantErr   string
	}{
		{"encoded", "ana%2Elima", ""},
		{"not encoded", "ana.lima", "queuename: must be the username encoded for a routing key"},
		{"another user", "bob", "queuename: must be the username encoded for a routing key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, pipeline)
			res := e.run("register", "request.x", request("ana.lima", "queuename", tt.queuename))
			wantOutcome(t, res, "request", tt.wantErr)
		})
	}
}

func TestValidateConfig(t *testing.T) {
	tests := []struct {
		name        string
		step        string
		wantSummary string
		wantDetail  string
	}{
		{"misspelt required field", `required = ["usernme"]`, "Unknown message field",
			`required names the field "usernme", which the message block does not declare. Did you mean "username"?`},
		{"success cannot be absent", `absent = ["success"]`, "Field set on every message",
			`absent names success, which every pipeline sets on the message it runs; it cannot be absent.`},
		{"unknown absent field", `absent = ["uidd"]`, "Unknown message field",
			`absent names the field "uidd", which the message block does not declare. Did you mean "uid"?`},
		{"unknown unique field", `unique = { mail = "taken" }`, "Unknown message field",
			`unique names the field "mail", which the message block does not declare. Did you mean "email"?`},
		{"unknown owner", "unique = { email = \"taken\" }\n    owner = [\"usernam\"]", "Unknown message field",
			`owner names the field "usernam", which the message block does not declare. Did you mean "username"?`},
		{"owner as a string", "unique = { email = \"taken\" }\n    owner = \"username\"", "Expected a list",
			`The argument "owner" must be a list in brackets, such as ["a", "b"].`},
		{"empty owner", "unique = { email = \"taken\" }\n    owner = []", "Empty owner",
			`owner must name at least one message field.`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			diags := loadDiags(t, `
pipeline "register" {
  on = ["request.*"]
  validate "request" {
    `+tt.step+`
  }
}
`)
			if len(diags) != 1 || diags[0].Summary != tt.wantSummary || diags[0].Detail != tt.wantDetail {
				t.Fatalf("diagnostics:\n%s\nwant %s: %s", diagText(diags), tt.wantSummary, tt.wantDetail)
			}
		})
	}
}

// TestBareAddress covers the function subscribe_list also uses directly.
func TestBareAddress(t *testing.T) {
	tests := []struct {
		in, want, wantErr string
	}{
		{"ana@example.org", "ana@example.org", ""},
		{"ANA@Example.ORG", "ANA@example.org", ""},
		{"ana@bücher.example", "ana@xn--bcher-kva.example", ""},
		{"Ana <ana@example.org>", "", "must be a bare address, without a name or angle brackets"},
		{"ana@example.org>", "", "must be a bare address, without a name or angle brackets"},
		{"@example.org", "", "must be a bare address such as ana@example.org"},
		{"ana@", "", "must be a bare address such as ana@example.org"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := actions.BareAddress(tt.in)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("BareAddress(%q) = %q, %v; want error %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("BareAddress(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

// TestValidateLengths refuses values longer than the configured limits, and
// addresses longer than the mail standards allow.
func TestValidateLengths(t *testing.T) {
	tests := []struct {
		name    string
		field   string
		value   string
		wantErr string
	}{
		{"long fullname", "fullname", strings.Repeat("x", 257), "fullname: is 257 characters long; at most 256 are allowed"},
		{"fullname at the limit", "fullname", strings.Repeat("x", 256), ""},
		{"long multiline reason", "reason", strings.Repeat("y\n", 2049), "reason: is 4098 characters long; at most 4096 are allowed"},
		{"65-character local part", "email", strings.Repeat("a", 65) + "@example.org",
			"email: the part before the @ is 65 characters long; at most 64 are allowed"},
		{"64-character local part", "email", strings.Repeat("a", 64) + "@example.org", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, registerPipeline)
			res := e.run("register", "request.ana", request("ana", tt.field, tt.value))
			if !wantOutcome(t, res, "request", tt.wantErr) {
				return
			}
			wantUntouched(t, e)
		})
	}
}

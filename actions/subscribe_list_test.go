package actions_test

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

const subscribePipeline = `
pipeline "lists" {
  on = ["verify.*"]
  subscribe_list "lists" {
    lists  = ["hpc-announce", "hpc-users"]
    server = "listserv@lists.example.edu"
  }
}
`

// TestSubscribeListCommands: the list server gets one mail whose body is
// exactly one command line per list.
func TestSubscribeListCommands(t *testing.T) {
	tests := []struct {
		name      string
		pipeline  string
		body      map[string]any
		wantLines []string
		wantTo    string
		wantSubj  string
	}{
		{"two lists", subscribePipeline,
			request("ana", "email", "ana@example.org", "fullname", "Ana Lima"),
			[]string{
				"QUIET ADD hpc-announce ana@example.org Ana Lima",
				"QUIET ADD hpc-users ana@example.org Ana Lima",
			}, "listserv@lists.example.edu", "subscribe ana@example.org"},
		{"spaces in the name collapsed", subscribePipeline,
			request("ana", "email", "ana@example.org", "fullname", "  Ana   Lima "),
			[]string{
				"QUIET ADD hpc-announce ana@example.org Ana Lima",
				"QUIET ADD hpc-users ana@example.org Ana Lima",
			}, "listserv@lists.example.edu", "subscribe ana@example.org"},
		{"IDN address in punycode", subscribePipeline,
			request("ana", "email", "ana@bücher.example", "fullname", "Ana"),
			[]string{
				"QUIET ADD hpc-announce ana@xn--bcher-kva.example Ana",
				"QUIET ADD hpc-users ana@xn--bcher-kva.example Ana",
			}, "listserv@lists.example.edu", "subscribe ana@xn--bcher-kva.example"},
		{"not quiet, templated server and name", `
pipeline "lists" {
  on = ["verify.*"]
  subscribe_list "lists" {
    lists  = ["hpc-users"]
    server = "listserv@{{ msg.reason }}"
    name   = "{{ msg.username }}"
    quiet  = false
  }
}
`,
			request("ana", "reason", "lists.example.edu"),
			[]string{"ADD hpc-users ana@example.org ana"}, "listserv@lists.example.edu", "subscribe ana@example.org"},
		{"long name and an = in the address, one line each on the wire", subscribePipeline,
			request("ana", "email", "mp.one=x@example.org", "fullname", "Maximiliana "+strings.Repeat("Wolfeschlegel", 8)),
			[]string{
				"QUIET ADD hpc-announce mp.one=x@example.org Maximiliana " + strings.Repeat("Wolfeschlegel", 8),
				"QUIET ADD hpc-users mp.one=x@example.org Maximiliana " + strings.Repeat("Wolfeschlegel", 8),
			}, "listserv@lists.example.edu", "subscribe mp.one=x@example.org"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.pipeline)
			st := wantOK(t, e.run("lists", "verify.ana", tt.body), "lists")

			files := outboxFiles(t, e.outbox)
			if len(files) != 1 {
				t.Fatalf("outbox holds %d mails; want 1", len(files))
			}
			m := readEML(t, files[0])
			if got := strings.Split(strings.TrimSuffix(m.Body, "\n"), "\n"); !reflect.DeepEqual(got, tt.wantLines) {
				t.Errorf("body lines:\n got %q\nwant %q", got, tt.wantLines)
			}
			// The list server reads the mail as it is: no transfer
			// encoding may fold or escape a command.
			raw, _ := os.ReadFile(files[0])
			wire := strings.ReplaceAll(string(raw), "\r\n", "\n")
			for _, line := range tt.wantLines {
				if !strings.Contains(wire, "\n"+line+"\n") {
					t.Errorf("the raw mail lacks the line %q:\n%s", line, raw)
				}
			}
			if got := m.addresses(t, "To"); len(got) != 1 || got[0] != tt.wantTo {
				t.Errorf("To %v; want %s", got, tt.wantTo)
			}
			if got := m.addresses(t, "From"); len(got) != 1 || got[0] != "rc-accounts@example.edu" {
				t.Errorf("From %v; want the mail block's from", got)
			}
			if got := m.subject(t); got != tt.wantSubj {
				t.Errorf("Subject %q; want %q", got, tt.wantSubj)
			}
			if !strings.HasPrefix(st.Note, "asked "+tt.wantTo+" to add ") {
				t.Errorf("note %q", st.Note)
			}
		})
	}
}

// TestSubscribeListRefuses is C4 at the list server: a value that could
// add a second command line is refused and nothing is sent.
func TestSubscribeListRefuses(t *testing.T) {
	tests := []struct {
		name    string
		body    map[string]any
		wantErr string
	}{
		{"newline in the name", request("gita", "fullname", "Gita Novak\nQUIET DELETE hpc-users *"),
			"name: control character U+000A is not allowed"},
		{"carriage return in the name", request("eve", "fullname", "Eve\rQUIET DELETE hpc-users *"),
			"name: control character U+000D is not allowed"},
		{"line separator in the name", request("eve", "fullname", "Eve\u2028QUIET DELETE hpc-users *"),
			"name: control character U+2028 is not allowed"},
		{"display name as address", request("ana", "email", "Ana <ana@example.org>"),
			"email: must be a bare address, without a name or angle brackets"},
		{"command in the address", request("ana", "email", "ana@example.org QUIET DELETE hpc-users *"),
			`email: domain "example.org QUIET DELETE hpc-users *" is not a valid internationalized domain name`},
		{"newline in the address", request("ana", "email", "ana@example.org\nQUIET DELETE hpc-users *"),
			`email: domain "example.org\nQUIET DELETE hpc-users *" is not a valid internationalized domain name`},
		{"no address", request("ana", "email", ""), "email: must be a bare address such as ana@example.org"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, subscribePipeline)
			res := e.run("lists", "verify.x", tt.body)
			st := wantFailed(t, res, "lists", tt.wantErr)
			if len(st.Mails) != 0 {
				t.Errorf("step mailed %d messages", len(st.Mails))
			}
			if files := outboxFiles(t, e.outbox); len(files) != 0 {
				t.Errorf("mail sent: %v", files)
			}
		})
	}
}

func TestSubscribeListConfig(t *testing.T) {
	tests := []struct {
		name, step, wantSummary, wantDetail string
	}{
		{"no lists", `lists = []
    server = "l@example.edu"`, "No lists", "lists needs at least one list name."},
		{"command in a list name", `lists = ["hpc-users *"]
    server = "l@example.edu"`, "Invalid list name",
			`"hpc-users *" is not a list name; use letters, digits, _, - and .`},
		{"missing server", `lists = ["hpc-users"]`, "Missing required argument", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			diags := loadDiags(t, `
pipeline "lists" {
  on = ["verify.*"]
  subscribe_list "lists" {
    `+tt.step+`
  }
}
`)
			if !hasDiag(diags, tt.wantSummary) {
				t.Fatalf("diagnostics:\n%s\nwant %q", diagText(diags), tt.wantSummary)
			}
			if tt.wantDetail != "" && diags[0].Detail != tt.wantDetail {
				t.Errorf("detail %q; want %q", diags[0].Detail, tt.wantDetail)
			}
		})
	}
}

// TestSubscribeListDefaultsNeedFields: without an email field in the
// message block, the default email template is a load diagnostic.
func TestSubscribeListDefaultsNeedFields(t *testing.T) {
	cfg, diags := loadRaw(t, `
message {
  username = string
}
pipeline "lists" {
  on = ["verify.*"]
  subscribe_list "lists" {
    lists  = ["hpc-users"]
    server = "l@example.edu"
  }
}
`)
	if cfg != nil || !hasDiag(diags, "Cannot use the default of email") {
		t.Fatalf("diagnostics:\n%s\nwant \"Cannot use the default of email\"", diagText(diags))
	}
}

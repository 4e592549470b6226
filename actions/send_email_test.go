package actions_test

import (
	"context"
	"net"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"regflow/engine"
)

// welcomePipeline mails the user as pipelines/registration.hcl does, with
// the body as an indented heredoc (C18).
const welcomePipeline = `
pipeline "notify" {
  on = ["completed.*"]

  send_email "welcome" {
    to      = ["{{ msg.email }}"]
    cc      = ["rc-admin@example.edu"]
    bcc     = ["rc-audit@example.edu"]
    subject = "Your research computing account {{ msg.username }}"
    body    = <<-EOT
    Dear {{ msg.fullname }},

    your account {{ msg.username }} is ready (uid {{ msg.uid }}).
        Indented more.

    Research Computing
    EOT
  }
}
`

// welcomeRest is the welcome body after its greeting: the heredoc's common
// indentation is gone, the extra indentation and the empty lines are kept.
const welcomeRest = "your account ana is ready (uid 10001).\n    Indented more.\n\nResearch Computing\n"

// TestSendEmailOutbox: the .eml file in the outbox is an RFC 5322 message
// with the rendered headers and body.
func TestSendEmailOutbox(t *testing.T) {
	tests := []struct {
		name        string
		fullname    string
		wantSubject string
		wantBody    string
	}{
		{"ASCII", "Ana Lima", "Your research computing account ana",
			"Dear Ana Lima,\n\n" + welcomeRest},
		{"non-ASCII name", "José Müller", "Your research computing account ana",
			"Dear José Müller,\n\n" + welcomeRest},
		{"header lookalike in the body", "Eve\nBcc: x@example.net", "Your research computing account ana",
			"Dear Eve\nBcc: x@example.net,\n\n" + welcomeRest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, welcomePipeline)
			res := e.run("notify", "completed.ana", request("ana", "fullname", tt.fullname, "uid", 10001))
			st := wantOK(t, res, "welcome")
			if st.Note != "mailed ana@example.org: "+tt.wantSubject {
				t.Errorf("note %q", st.Note)
			}

			files := outboxFiles(t, e.outbox)
			if len(files) != 1 {
				t.Fatalf("outbox holds %d files; want 1", len(files))
			}
			m := readEML(t, files[0])
			if got := m.subject(t); got != tt.wantSubject {
				t.Errorf("Subject %q; want %q", got, tt.wantSubject)
			}
			if got := m.addresses(t, "To"); !reflect.DeepEqual(got, []string{"ana@example.org"}) {
				t.Errorf("To %v", got)
			}
			if got := m.addresses(t, "Cc"); !reflect.DeepEqual(got, []string{"rc-admin@example.edu"}) {
				t.Errorf("Cc %v", got)
			}
			from, err := m.Header.AddressList("From")
			if err != nil || len(from) != 1 || from[0].Name != "Research Computing" ||
				from[0].Address != "rc-accounts@example.edu" {
				t.Errorf("From %v, %v; want the mail block's from", from, err)
			}
			// The outbox keeps the blind copies in a Bcc header for the
			// delivery agent (sendmail -t removes it); over SMTP they go in
			// the envelope only (send_email_smtp_test.go).
			if got := m.Header.Get("Bcc"); got != "rc-audit@example.edu" {
				t.Errorf("Bcc header %q; want the blind copy for the delivery agent", got)
			}
			if got := st.Mails[0].Recipients(); !reflect.DeepEqual(got,
				[]string{"ana@example.org", "rc-admin@example.edu", "rc-audit@example.edu"}) {
				t.Errorf("envelope recipients %v", got)
			}
			id := m.Header.Get("Message-Id")
			if !strings.HasPrefix(id, "<") || !strings.HasSuffix(id, "@example.edu>") {
				t.Errorf("Message-Id %q; want <…@example.edu>", id)
			}
			if _, err := m.Header.Date(); err != nil {
				t.Errorf("Date: %v", err)
			}
			if got := m.Header.Get("Content-Type"); !strings.HasPrefix(got, "text/plain") ||
				!strings.Contains(strings.ToLower(got), "charset=utf-8") {
				t.Errorf("Content-Type %q", got)
			}
			if m.Body != tt.wantBody {
				t.Errorf("body\n got %q\nwant %q", m.Body, tt.wantBody)
			}
		})
	}
}

// TestSendEmailRefuses: a value that would spill into other headers is
// refused before anything is written.
func TestSendEmailRefuses(t *testing.T) {
	tests := []struct {
		name    string
		step    string
		body    map[string]any
		wantErr string
	}{
		{"CR LF in the subject", `to = ["{{ msg.email }}"]
    subject = "Welcome {{ msg.fullname }}"`,
			request("eve", "fullname", "Eve\r\nBcc: x@example.net"), "subject: must be one line"},
		{"LF in the subject", `to = ["{{ msg.email }}"]
    subject = "Welcome {{ msg.fullname }}"`,
			request("eve", "fullname", "Eve\nBcc: x@example.net"), "subject: must be one line"},
		{"CR LF in the recipient", `to = ["{{ msg.email }}"]
    subject = "Welcome"`,
			request("eve", "email", "eve@example.org\r\nBcc: x@example.net"),
			`to: "eve@example.org\r\nBcc: x@example.net" is not an address`},
		{"two recipients in one", `to = ["{{ msg.email }}"]
    subject = "Welcome"`,
			request("eve", "email", "eve@example.org, x@example.net"),
			`to: "eve@example.org, x@example.net" is not an address`},
		{"recipient rendered empty", `to = ["{{ msg.email }}"]
    subject = "Welcome"`,
			request("eve", "email", nil), `to: "{{ msg.email }}" rendered empty`},
		{"CR LF in the sender", `to = ["{{ msg.email }}"]
    from = "{{ msg.fullname }} <rc@example.edu>"
    subject = "Welcome"`,
			request("eve", "fullname", "Eve\r\nBcc: x@example.net"),
			`header value "Eve\r\nBcc: x@example.net <rc@example.edu>" contains a control character`},
		{"tab in the subject", `to = ["{{ msg.email }}"]
    subject = "Welcome {{ msg.fullname }}"`,
			request("eve", "fullname", "Eve\tEvil"), `header value "Welcome Eve\tEvil" contains a control character`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, `
pipeline "notify" {
  on = ["completed.*"]
  send_email "welcome" {
    `+tt.step+`
    body = "Hello"
  }
}
`)
			res := e.run("notify", "completed.eve", tt.body)
			wantFailed(t, res, "welcome", tt.wantErr)
			if files := outboxFiles(t, e.outbox); len(files) != 0 {
				t.Errorf("mail written: %v", files)
			}
			if entries, _ := os.ReadDir(e.outbox); len(entries) != 0 {
				t.Errorf("outbox not empty: %d entries", len(entries))
			}
		})
	}
}

// TestSendEmailOncePerUser is the mail half of C12: with once set, a
// second request for the same user sends no second welcome mail.
func TestSendEmailOncePerUser(t *testing.T) {
	e := newEnv(t, `
pipeline "notify" {
  on = ["completed.*"]
  send_email "welcome" {
    to      = ["{{ msg.email }}"]
    subject = "Welcome {{ msg.username }}"
    body    = "Hello"
    once    = "welcome:{{ msg.username }}"
  }
}
`)
	steps := []struct {
		user         string
		wantReplayed bool
		wantFiles    int
	}{
		{"ana", false, 1},
		{"ana", true, 1},
		{"bob", false, 2},
	}
	for i, s := range steps {
		st := wantOK(t, e.run("notify", "completed."+s.user, request(s.user)), "welcome")
		if st.Replayed != s.wantReplayed {
			t.Errorf("run %d (%s): replayed = %v; want %v", i+1, s.user, st.Replayed, s.wantReplayed)
		}
		if got := len(outboxFiles(t, e.outbox)); got != s.wantFiles {
			t.Errorf("run %d (%s): %d mails; want %d", i+1, s.user, got, s.wantFiles)
		}
	}
}

func TestSendEmailConfig(t *testing.T) {
	tests := []struct {
		name, step, wantSummary string
	}{
		{"no recipients", `to = []
    subject = "x"
    body = "x"`, "No recipients"},
		{"missing subject", `to = ["a@example.org"]
    body = "x"`, "Missing required argument"},
		{"unknown field in a template", `to = ["{{ msg.mail }}"]
    subject = "x"
    body = "x"`, "Unknown message field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			diags := loadDiags(t, `
pipeline "notify" {
  on = ["completed.*"]
  send_email "welcome" {
    `+tt.step+`
  }
}
`)
			if !hasDiag(diags, tt.wantSummary) {
				t.Fatalf("diagnostics:\n%s\nwant %q", diagText(diags), tt.wantSummary)
			}
		})
	}
}

// TestSendEmailSMTPUnavailable is C9's stalled server: a refused or
// silent SMTP server is a transient failure, retried with backoff.
func TestSendEmailSMTPUnavailable(t *testing.T) {
	tests := []struct {
		name   string
		listen func(t *testing.T) string // returns host:port
	}{
		{"connection refused", func(t *testing.T) string {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := l.Addr().String()
			l.Close()
			return addr
		}},
		{"server stalls", func(t *testing.T) string {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				var conns []net.Conn // accepted, never greeted
				defer func() {
					for _, c := range conns {
						c.Close()
					}
				}()
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					conns = append(conns, c)
				}
			}()
			t.Cleanup(func() { l.Close(); <-done })
			return l.Addr().String()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := tt.listen(t)
			cfg, err := engine.ParseSMTPURL("smtp://" + addr + "?tls=none&timeout=300ms")
			if err != nil {
				t.Fatal(err)
			}
			mailer, err := engine.NewSMTP(cfg)
			if err != nil {
				t.Fatal(err)
			}
			e := newEnv(t, `
pipeline "notify" {
  on = ["completed.*"]
  send_email "welcome" {
    to      = ["{{ msg.email }}"]
    subject = "Welcome"
    body    = "Hello"
    retry {
      attempts = 3
      backoff  = "10ms"
    }
  }
}
`, withMailer(mailer))
			start := time.Now()
			st := stepOf(t, e.run("notify", "completed.ana", request("ana")), "welcome")
			if st.Status != engine.StepFailed || !strings.HasPrefix(st.Error, "smtp "+addr+": ") {
				t.Fatalf("status %s, error %q; want failed with \"smtp %s: …\"", st.Status, st.Error, addr)
			}
			if st.Attempts != 3 {
				t.Errorf("%d attempts; want 3 (the failure is transient)", st.Attempts)
			}
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Errorf("took %s; each attempt should time out after 300ms", elapsed)
			}
		})
	}
}

// TestOnceReplayShownInStatus: a once step that an earlier message did
// already is shown as replayed in the registration's steps, not as a
// second mail.
func TestOnceReplayShownInStatus(t *testing.T) {
	const pipelines = `
track "registration" {
  id       = "{{ msg.username }}"
  start    = ["request.*"]
  finish   = ["completed.*"]
  deadline = "1h"
  on_timeout {
    publish "reply" { routing_key = "completed.{{ msg.queuename }}" }
  }
}

pipeline "register" {
  on = ["request.*"]
  send_email "welcome" {
    to      = ["{{ msg.email }}"]
    subject = "Welcome"
    body    = "Hello"
    once    = "welcome:{{ msg.username }}"
  }
}
`
	e := newEnv(t, pipelines)
	wantOK(t, e.run("register", "request.ana", request("ana")), "welcome")
	wantOK(t, e.run("register", "request.ana", request("ana")), "welcome")
	if n := len(outboxFiles(t, e.outbox)); n != 1 {
		t.Fatalf("%d mails; want 1", n)
	}
	steps, err := e.svc.Store.RegistrationSteps(context.Background(), "registration", "ana")
	if err != nil || len(steps) != 2 {
		t.Fatalf("steps = %+v, %v", steps, err)
	}
	if strings.HasPrefix(steps[0].Note, "replayed: ") || !strings.HasPrefix(steps[1].Note, "replayed: ") {
		t.Errorf("notes %q, %q; want only the second marked replayed", steps[0].Note, steps[1].Note)
	}
}

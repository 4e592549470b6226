//go:build integration

package actions_test

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"regflow/engine"
)

// TestSendEmailSMTP sends through a real SMTP server (Mailpit) and checks
// the message as the server received it.
func TestSendEmailSMTP(t *testing.T) {
	mp := needMailpit(t)
	tests := []struct {
		name        string
		fullname    string
		wantSubject string
		wantText    string
	}{
		{"plain", "Ana Lima", "Your account ana",
			"Dear Ana Lima,\n\nyour account ana is ready (uid 10001).\n\nResearch Computing\n"},
		{"non-ASCII name", "José Müller", "Your account ana",
			"Dear José Müller,\n\nyour account ana is ready (uid 10001).\n\nResearch Computing\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := token(t)
			to := "ana-" + tok + "@example.org"
			cc := "admin-" + tok + "@example.edu"
			bcc := "audit-" + tok + "@example.edu"
			e := newEnv(t, fmt.Sprintf(`
pipeline "notify" {
  on = ["completed.*"]
  send_email "welcome" {
    to      = ["{{ msg.email }}"]
    cc      = [%q]
    bcc     = [%q]
    subject = "Your account {{ msg.username }}"
    body    = <<-EOT
      Dear {{ msg.fullname }},

      your account {{ msg.username }} is ready (uid {{ msg.uid }}).

      Research Computing
    EOT
  }
}
`, cc, bcc), withMailer(mp.mailer(t, "tls=none")))

			res := e.run("notify", "completed.ana", request("ana", "email", to, "fullname", tt.fullname, "uid", 10001))
			st := wantOK(t, res, "welcome")

			got := mp.waitFor(t, to, 1)[0]
			if want := []string{to}; !reflect.DeepEqual(addressesOf(got.To), want) {
				t.Errorf("To %v; want %v", addressesOf(got.To), want)
			}
			if want := []string{cc}; !reflect.DeepEqual(addressesOf(got.Cc), want) {
				t.Errorf("Cc %v; want %v", addressesOf(got.Cc), want)
			}
			if want := []string{bcc}; !reflect.DeepEqual(addressesOf(got.Bcc), want) {
				t.Errorf("Bcc (envelope) %v; want %v", addressesOf(got.Bcc), want)
			}
			if got.From.Address != "rc-accounts@example.edu" || got.From.Name != "Research Computing" {
				t.Errorf("From %+v", got.From)
			}
			if got.Subject != tt.wantSubject {
				t.Errorf("Subject %q; want %q", got.Subject, tt.wantSubject)
			}
			if got.Text != tt.wantText {
				t.Errorf("text\n got %q\nwant %q", got.Text, tt.wantText)
			}
			if want := st.Mails[0].ID + "@example.edu"; got.MessageID != want {
				t.Errorf("Message-ID %q; want %q", got.MessageID, want)
			}
		})
	}
}

// TestSendEmailRequiresSTARTTLS is C9: Mailpit offers no STARTTLS, so a
// URL that requires it (the default) refuses to send in plaintext.
func TestSendEmailRequiresSTARTTLS(t *testing.T) {
	mp := needMailpit(t)
	to := "ana-" + token(t) + "@example.org"
	const pipeline = `
pipeline "notify" {
  on = ["completed.*"]
  send_email "welcome" {
    to      = ["{{ msg.email }}"]
    subject = "Welcome {{ msg.fullname }}"
    body    = "Hello"
  }
}
`
	strict := newEnv(t, pipeline, withMailer(mp.mailer(t, "")))
	res := strict.run("notify", "completed.ana", request("ana", "email", to, "fullname", "first"))
	wantFailed(t, res, "welcome", "smtp "+mp.smtp+": the server offers no STARTTLS and tls=starttls is "+
		"required; refusing to send in plaintext")

	// A second mail over plaintext, sent after the refused one, is the
	// only one the server holds.
	plain := newEnv(t, pipeline, withMailer(mp.mailer(t, "tls=none")))
	wantOK(t, plain.run("notify", "completed.ana", request("ana", "email", to, "fullname", "second")), "welcome")
	if got := mp.waitFor(t, to, 1)[0].Subject; got != "Welcome second" {
		t.Errorf("the server holds %q; want only \"Welcome second\"", got)
	}
}

// TestSendEmailSMTPRefusesHeaderInjection: nothing reaches the server
// when the subject would carry a second header.
func TestSendEmailSMTPRefusesHeaderInjection(t *testing.T) {
	mp := needMailpit(t)
	to := "eve-" + token(t) + "@example.org"
	e := newEnv(t, `
pipeline "notify" {
  on = ["completed.*"]
  send_email "welcome" {
    to      = ["{{ msg.email }}"]
    subject = "Welcome {{ msg.fullname }}"
    body    = "Hello"
  }
}
`, withMailer(mp.mailer(t, "tls=none")))
	res := e.run("notify", "completed.eve", request("eve", "email", to, "fullname", "Eve\r\nBcc: x@example.net"))
	wantFailed(t, res, "welcome", "subject: must be one line")

	wantOK(t, e.run("notify", "completed.eve", request("eve", "email", to, "fullname", "Eve")), "welcome")
	if got := mp.waitFor(t, to, 1)[0].Subject; got != "Welcome Eve" {
		t.Errorf("the server holds %q; want only \"Welcome Eve\"", got)
	}
}

// TestSMTPAuthOnLoopback sends with a user and password over plaintext to a
// server on loopback, which ParseSMTPURL allows: the mailer must choose
// PLAIN itself, since discovery never offers a password without TLS.
func TestSMTPAuthOnLoopback(t *testing.T) {
	m := needMailpit(t)
	cfg, err := engine.ParseSMTPURL("smtp://regflow:s3cret@" + m.smtp + "?tls=none")
	if err != nil {
		t.Fatal(err)
	}
	rcpt := fmt.Sprintf("auth-%d@example.org", time.Now().UnixNano())
	mailer, err := engine.NewSMTP(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = mailer.Send(context.Background(), &engine.Mail{
		From: "rc@example.edu", To: []string{rcpt}, Subject: "auth", Text: "hello\n"})
	if err != nil {
		t.Fatalf("send with AUTH on loopback: %v", err)
	}
	got := m.waitFor(t, rcpt, 1)
	if got[0].Subject != "auth" {
		t.Fatalf("subject %q", got[0].Subject)
	}
}

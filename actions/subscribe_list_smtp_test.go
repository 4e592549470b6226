//go:build integration

package actions_test

import (
	"fmt"
	"reflect"
	"testing"
)

// TestSubscribeListSMTP sends the list server's commands through a real
// SMTP server and checks them as received: one command line per list,
// and a refused name sends nothing.
func TestSubscribeListSMTP(t *testing.T) {
	mp := needMailpit(t)
	tok := token(t)
	server := "listserv-" + tok + "@lists.example.edu"
	email := "ana-" + tok + "@example.org"
	e := newEnv(t, fmt.Sprintf(`
pipeline "lists" {
  on = ["verify.*"]
  subscribe_list "lists" {
    lists  = ["hpc-announce", "hpc-users"]
    server = %q
  }
}
`, server), withMailer(mp.mailer(t, "tls=none")))

	// Refused first: had it been sent, the server would hold it before
	// the good one.
	bad := e.run("lists", "verify.gita", request("gita", "email", "gita-"+tok+"@example.org",
		"fullname", "Gita Novak\nQUIET DELETE hpc-users *"))
	wantFailed(t, bad, "lists", "name: control character U+000A is not allowed")

	wantOK(t, e.run("lists", "verify.ana", request("ana", "email", email, "fullname", "Ana Lima")), "lists")

	got := mp.waitFor(t, server, 1)[0]
	if want := []string{server}; !reflect.DeepEqual(addressesOf(got.To), want) {
		t.Errorf("To %v; want %v", addressesOf(got.To), want)
	}
	if want := "subscribe " + email; got.Subject != want {
		t.Errorf("Subject %q; want %q", got.Subject, want)
	}
	want := "QUIET ADD hpc-announce " + email + " Ana Lima\n" +
		"QUIET ADD hpc-users " + email + " Ana Lima\n"
	if got.Text != want {
		t.Errorf("text\n got %q\nwant %q", got.Text, want)
	}
	if got.From.Address != "rc-accounts@example.edu" {
		t.Errorf("From %+v; want the mail block's from", got.From)
	}
}

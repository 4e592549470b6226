package actions_test

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"regflow/engine"
)

// TestExecArgvWithoutShell: each rendered argument arrives as one
// argument, literally; nothing in a value is run or split.
func TestExecArgvWithoutShell(t *testing.T) {
	dir := t.TempDir()
	pwned := filepath.Join(dir, "pwned")
	victim := filepath.Join(dir, "victim")
	writeFile(t, victim, "keep me\n")

	tests := []struct {
		name  string
		value string
	}{
		{"command substitution", "$(touch " + pwned + ")"},
		{"backquotes", "`touch " + pwned + "`"},
		{"command separator", "; rm -f " + victim},
		{"pipe and redirect", "| tee " + pwned + " > " + pwned},
		{"glob and spaces", "* ?  two  spaces"},
		{"option lookalike", "--version"},
		{"quotes", `O'Brien "Ozzy"`},
		{"empty", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, `
pipeline "account" {
  on = ["verify.*"]
  exec "mkaccount" {
    command = ["printf", "[%s]\n", "{{ msg.fullname }}", "{{ msg.username }}"]
    output  = "out"
  }
}
`)
			res := e.run("account", "verify.ana", request("ana", "fullname", tt.value))
			st := wantOK(t, res, "mkaccount")
			if want := "[" + tt.value + "]\n[ana]"; res.Msg["out"] != want {
				t.Errorf("output %q; want %q", res.Msg["out"], want)
			}
			if st.Note != "ran printf" {
				t.Errorf("note %q; want \"ran printf\"", st.Note)
			}
			if _, err := os.Stat(pwned); err == nil {
				t.Fatalf("a shell ran the value: %s exists", pwned)
			}
			if _, err := os.Stat(victim); err != nil {
				t.Fatalf("a shell ran the value: %v", err)
			}
		})
	}
}

func TestExecResults(t *testing.T) {
	tests := []struct {
		name    string
		step    string
		body    map[string]any
		wantOut any    // msg.out afterwards; nil when unset
		wantErr string // exact step error; "" on success
	}{
		{"output trimmed", `command = ["printf", "  uid=%s\n\n", "{{ msg.uid }}"]
    output = "out"`, request("ana", "uid", 10042), "uid=10042", ""},
		{"no output field", `command = ["true"]`, request("ana"), nil, ""},
		{"environment", `command = ["sh", "-c", "printf %s \"$REGFLOW_USER\""]
    env = { REGFLOW_USER = "{{ msg.username }}" }
    output = "out"`, request("ana"), "ana", ""},
		{"working directory", `command = ["pwd"]
    dir = "work"
    output = "out"`, request("ana"), "<root>/work", ""},
		{"non-zero exit", `command = ["sh", "-c", "echo \"no such group: $1\" >&2; exit 3",
                 "sh", "{{ msg.username }}"]
    output = "out"`, request("ana"), nil, "sh exited with status 3: no such group: ana"},
		{"non-zero exit without stderr", `command = ["false"]`, request("ana"), nil,
			"false exited with status 1"},
		{"missing program", `command = ["/nonexistent/mkaccount"]`, request("ana"), nil,
			"run /nonexistent/mkaccount: fork/exec /nonexistent/mkaccount: no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, `
pipeline "account" {
  on = ["verify.*"]
  exec "mkaccount" {
    `+tt.step+`
  }
}
`)
			if err := os.MkdirAll(filepath.Join(e.root, "work"), 0o750); err != nil {
				t.Fatal(err)
			}
			res := e.run("account", "verify.ana", tt.body)
			if tt.wantErr != "" {
				wantFailed(t, res, "mkaccount", tt.wantErr)
			} else {
				wantOK(t, res, "mkaccount")
			}
			want := tt.wantOut
			if s, ok := want.(string); ok {
				want = strings.ReplaceAll(s, "<root>", e.root)
			}
			if got := res.Msg["out"]; got != want {
				t.Errorf("msg.out = %#v; want %#v", got, want)
			}
		})
	}
}

// TestExecTimeout: the step's timeout kills the command and the step
// fails with a transient error well before the command would end.
func TestExecTimeout(t *testing.T) {
	e := newEnv(t, `
pipeline "account" {
  on = ["verify.*"]
  exec "slow" {
    command = ["sleep", "10"]
    timeout = "300ms"
  }
}
`)
	start := time.Now()
	res := e.run("account", "verify.ana", request("ana"))
	elapsed := time.Since(start)

	wantFailed(t, res, "slow", "timed out after 300ms: sleep was stopped")
	if elapsed > 3*time.Second {
		t.Errorf("the step took %s; the timeout is 300ms", elapsed)
	}
	if got := res.Errmsg(); len(got) != 1 || got[0] != "slow: timed out after 300ms: sleep was stopped" {
		t.Errorf("errmsg %q", got)
	}
}

// TestExecSandbox: in the sandbox the command is not run and the output
// field is set empty, so that later steps still see it.
func TestExecSandbox(t *testing.T) {
	cfg := loadConfig(t, `
pipeline "account" {
  on = ["verify.*"]
  exec "mkaccount" {
    command = ["touch", "{{ msg.reason }}"]
    output  = "out"
  }
}
`)
	marker := filepath.Join(t.TempDir(), "ran")
	svc, err := engine.Sandbox(cfg, t.TempDir(), &recorder{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Store.Close() })
	res, err := engine.NewRunner(cfg, svc).Handle(t.Context(), cfg.Pipelines[0],
		&engine.Delivery{RoutingKey: "verify.ana", Body: encode(t, request("ana", "reason", marker))})
	if err != nil {
		t.Fatal(err)
	}
	st := wantOK(t, res, "mkaccount")
	if want := "not run in the sandbox: touch " + marker; st.Note != want {
		t.Errorf("note %q; want %q", st.Note, want)
	}
	if res.Msg["out"] != "" {
		t.Errorf("msg.out = %#v; want \"\"", res.Msg["out"])
	}
	if _, err := os.Stat(marker); err == nil {
		t.Errorf("the command ran in the sandbox")
	}
}

// TestExecConfig: the program is a fixed string; a message never chooses
// what runs.
func TestExecConfig(t *testing.T) {
	tests := []struct {
		name        string
		command     string
		wantSummary string
	}{
		{"templated program", `["{{ msg.username }}", "x"]`, "Program must be fixed"},
		{"partly templated program", `["/usr/local/sbin/{{ msg.reason }}"]`, "Program must be fixed"},
		{"empty program", `["", "x"]`, "Program must be fixed"},
		{"empty command", `[]`, "Empty command"},
		{"variable name with =", `["/bin/true"]
    env     = { "A=B" = "1" }`, "Invalid variable name"},
		{"empty variable name", `["/bin/true"]
    env     = { "" = "2" }`, "Invalid variable name"},
		{"variable name with a blank", `["/bin/true"]
    env     = { "X Y" = "3" }`, "Invalid variable name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			diags := loadDiags(t, fmt.Sprintf(`
pipeline "account" {
  on = ["verify.*"]
  exec "mkaccount" {
    command = %s
  }
}
`, tt.command))
			if !hasDiag(diags, tt.wantSummary) {
				t.Fatalf("diagnostics:\n%s\nwant %q", diagText(diags), tt.wantSummary)
			}
		})
	}
}

// TestExecOutputLimit: a command that writes more than MaxCommandOutput
// to its standard output fails the step instead of filling memory, the
// journal and the messages published after it.
func TestExecOutputLimit(t *testing.T) {
	e := newEnv(t, `
pipeline "account" {
  on = ["verify.*"]
  exec "chatty" {
    command = ["head", "-c", "10000000", "/dev/zero"]
    output  = "reason"
  }
}
`)
	res := e.run("account", "verify.ana", request("ana"))
	wantFailed(t, res, "chatty", "head wrote more than 65536 bytes to its standard output")
}

package engine_test

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"

	"regflow/actions"
	"regflow/engine"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestDiagnosticsGolden loads each directory under testdata/diag and
// compares every diagnostic, one per line as file:line:col: summary:
// detail, with NAME.golden beside the directory.
func TestDiagnosticsGolden(t *testing.T) {
	dirs, err := filepath.Glob("testdata/diag/*")
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range dirs {
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			continue
		}
		name := filepath.Base(dir)
		golden := dir + ".golden"
		if _, err := os.Stat(golden); os.IsNotExist(err) && !*update {
			continue
		}
		t.Run(name, func(t *testing.T) {
			_, _, diags := engine.Load([]string{dir}, actions.Registry())
			got := formatDiags(dir, diags)
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("diagnostics differ from %s (run go test -run Golden -update to accept)\n--- got\n%s--- want\n%s",
					golden, got, want)
			}
		})
	}
}

func formatDiags(dir string, diags hcl.Diagnostics) string {
	var b strings.Builder
	for _, d := range diags {
		sev := "error"
		if d.Severity == hcl.DiagWarning {
			sev = "warning"
		}
		loc := "-"
		if d.Subject != nil {
			rel, _ := filepath.Rel(dir, d.Subject.Filename)
			loc = fmt.Sprintf("%s:%d:%d", rel, d.Subject.Start.Line, d.Subject.Start.Column)
		}
		fmt.Fprintf(&b, "%s: %s: %s: %s\n", loc, sev, d.Summary, d.Detail)
	}
	return b.String()
}

// TestLoadNothingHalfLoaded checks that a configuration with any error
// yields no Config at all, and that a good one loads every pipeline.
func TestLoadNothingHalfLoaded(t *testing.T) {
	cfg, files, diags := engine.Load([]string{"testdata/diag/c17"}, actions.Registry())
	if cfg != nil || !diags.HasErrors() {
		t.Fatalf("Load(c17) = %v, %v; want no config and errors", cfg, diags)
	}
	if len(files) != 1 {
		t.Fatalf("Load returned %d sources, want 1 to print diagnostics with", len(files))
	}
	cfg, _, diags = engine.Load([]string{"../pipelines"}, actions.Registry())
	if diags.HasErrors() {
		t.Fatalf("pipelines/: %v", diags)
	}
	var names []string
	for _, p := range cfg.Pipelines {
		names = append(names, fmt.Sprintf("%s(%d+%d)", p.Name, len(p.Steps), len(p.OnFailure)))
	}
	want := "get_next_uid_gid(3+1) provision(3+1) notify(3+0) event_log(1+0)"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("pipelines = %s, want %s", got, want)
	}
}

// TestIndentedHeredoc covers C18: a <<-EOT body indented four spaces,
// with an empty line between paragraphs, renders without the indentation
// and keeps the empty line.
func TestIndentedHeredoc(t *testing.T) {
	dir := t.TempDir()
	src := "message {\n  fullname = string\n  email = string\n}\n" +
		"pipeline \"mail\" {\n  on = [\"completed.*\"]\n" +
		"  send_email \"welcome\" {\n    to = [\"{{ msg.email }}\"]\n    subject = \"Welcome\"\n" +
		"    body = <<-EOT\n" +
		"        Dear {{ msg.fullname }},\n" +
		"\n" +
		"        your account is ready.\n" +
		"          Indented a little more.\n" +
		"        Research Computing\n" +
		"    EOT\n  }\n}\n"
	os.WriteFile(filepath.Join(dir, "p.hcl"), []byte(src), 0o644)
	cfg, _, diags := engine.Load([]string{dir}, actions.Registry())
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	body := cfg.Pipelines[0].Steps[0].Config.Template("body")
	got, err := body.Render(engine.Env(engine.Message{"fullname": "Ana Lima"}, "completed.ana"))
	if err != nil {
		t.Fatal(err)
	}
	want := "Dear Ana Lima,\n\nyour account is ready.\n  Indented a little more.\nResearch Computing\n"
	if got != want {
		t.Fatalf("body = %q, want %q", got, want)
	}
}

// TestLoadFunctions covers env() and file(): file paths are relative to
// the HCL file, env falls back to its default, and a missing variable
// without a default is a diagnostic.
func TestLoadFunctions(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "welcome.txt"), []byte("Hello {{ msg.username }}\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "p.hcl"), []byte(`
mail { from = env("REGFLOW_TEST_FROM", "Default <d@example.org>") }
message {
  username = string
  email    = string
}
pipeline "p" {
  on = ["x.*"]
  send_email "w" {
    to      = ["{{ msg.email }}"]
    subject = "hi"
    body    = file("welcome.txt")
  }
}`), 0o644)
	t.Setenv("REGFLOW_TEST_FROM", "Set <s@example.org>")
	cfg, _, diags := engine.Load([]string{dir}, actions.Registry())
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if cfg.Mail.From != "Set <s@example.org>" {
		t.Fatalf("mail.from = %q", cfg.Mail.From)
	}
	body, _ := cfg.Pipelines[0].Steps[0].Config.Template("body").Render(engine.Env(engine.Message{"username": "ana"}, ""))
	if body != "Hello ana\n" {
		t.Fatalf("body from file() = %q", body)
	}

	os.WriteFile(filepath.Join(dir, "p.hcl"), []byte(`store { path = env("REGFLOW_TEST_UNSET_VAR") }`), 0o644)
	_, _, diags = engine.Load([]string{dir}, actions.Registry())
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "REGFLOW_TEST_UNSET_VAR is not set and no default was given") {
		t.Fatalf("diags = %v", diags)
	}
}

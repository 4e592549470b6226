package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"regflow/actions"
	"regflow/engine"
)

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestValidateExitCodes(t *testing.T) {
	code, out, _ := runCLI(t, "validate", "../../pipelines")
	if code != 0 || !strings.HasPrefix(out, "ok: 4 pipelines, 12 steps") {
		t.Fatalf("validate pipelines: exit %d, %q", code, out)
	}
	code, out, _ = runCLI(t, "validate", "../../examples.hcl")
	if code != 0 || !strings.HasPrefix(out, "ok: 2 pipelines") {
		t.Fatalf("validate examples.hcl: exit %d, %q", code, out)
	}
	// A test file named beside the pipeline file is loaded as tests.
	code, out, _ = runCLI(t, "validate", "../../pipelines/registration.hcl", "../../pipelines/registration_test.hcl")
	if code != 0 || !strings.HasPrefix(out, "ok: 4 pipelines, 12 steps, 8 tests") {
		t.Fatalf("validate registration.hcl registration_test.hcl: exit %d, %q", code, out)
	}
	code, _, errOut := runCLI(t, "validate", "../../engine/testdata/diag/c17")
	if code != 1 {
		t.Fatalf("validate c17: exit %d, want 1", code)
	}
	for _, want := range []string{
		"c17/pipeline.hcl:10:3: error: Attribute redefined\n   10 |   on = [\"verify.*\"]\n      |   ^^\n",
		"c17/pipeline.hcl:14:5: error: Unsupported argument\n",
		"      |     ^^^^^^^^\n  An argument named \"condtion\" is not expected here. Did you mean \"when\"?\n",
		"c17/pipeline.hcl:17:13: error: Duplicate step name\n", "3 errors, 0 warnings",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("validate output lacks %q:\n%s", want, errOut)
		}
	}
	if code, _, _ := runCLI(t, "validate"); code != 2 {
		t.Fatalf("validate without paths: exit %d, want 2", code)
	}
	if code, _, _ := runCLI(t, "frobnicate"); code != 2 {
		t.Fatalf("unknown command: exit %d, want 2", code)
	}
}

func TestValidateJSON(t *testing.T) {
	code, out, _ := runCLI(t, "validate", "--json", "../../engine/testdata/diag/c19")
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	var diags []struct {
		Severity, Summary, Detail, File string
		Start                           struct{ Line, Column int }
	}
	if err := json.Unmarshal([]byte(out), &diags); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	if len(diags) != 4 || diags[0].Summary != "Unknown message field" || diags[0].Start.Line != 12 ||
		diags[0].Start.Column != 17 || !strings.HasSuffix(diags[0].File, "pipeline.hcl") ||
		diags[0].Severity != "error" {
		t.Fatalf("diagnostics = %+v", diags)
	}
}

func TestSimulate(t *testing.T) {
	msg := filepath.Join(t.TempDir(), "m.json")
	os.WriteFile(msg, []byte(`{"username":"ana.lima","queuename":"ana%2Elima","email":"ana.lima@example.org",`+
		`"fullname":"Ana Lima","reason":"thesis"}`), 0o644)
	code, out, errOut := runCLI(t, "simulate", "../../pipelines", "--key", "request.ana%2Elima", msg)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"→ request.ana%2Elima  (input)",
		"uid 10001, gid 10001",
		"→ verify.ana%2Elima  (from get_next_uid_gid/verify)",
		"→ completed.ana%2Elima  (from provision/done)",
		"mailed ana.lima@example.org: Your research computing account ana.lima",
		"→ notify.ana%2Elima  (from notify/notified)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("trace lacks %q:\n%s", want, out)
		}
	}

	code, out, _ = runCLI(t, "simulate", "--json", "--key", "request.ana%2Elima", "../../pipelines", msg)
	if code != 0 {
		t.Fatalf("--json: exit %d", code)
	}
	var trace struct {
		Hops []struct {
			RoutingKey string `json:"routing_key"`
			Pipelines  []struct {
				Pipeline string
				Status   string
				Message  map[string]any
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &trace); err != nil {
		t.Fatal(err)
	}
	if len(trace.Hops) != 4 || trace.Hops[2].RoutingKey != "completed.ana%2Elima" {
		t.Fatalf("hops = %+v", trace.Hops)
	}
	if m := trace.Hops[0].Pipelines[0].Message; m["uid"] != 10001.0 || trace.Hops[0].Pipelines[0].Status != "ok" {
		t.Fatalf("first hop: %+v", trace.Hops[0].Pipelines[0])
	}

	if code, _, _ := runCLI(t, "simulate", "../../pipelines", msg); code != 2 {
		t.Fatalf("simulate without --key: exit %d, want 2", code)
	}
	code, _, errOut = runCLI(t, "simulate", "../../pipelines", "--key", "request.*", msg)
	if code != 1 || !strings.Contains(errOut, "wildcard") {
		t.Fatalf("simulate with a wildcard key: exit %d, %s", code, errOut)
	}
}

func TestParseArgsInterspersed(t *testing.T) {
	fs := newFlagSet("x", "x", &bytes.Buffer{})
	k := fs.String("key", "", "")
	j := fs.Bool("json", false, "")
	pos, err := parseArgs(fs, []string{"a", "--key", "k", "b", "--json", "c"})
	if err != nil || *k != "k" || !*j || strings.Join(pos, ",") != "a,b,c" {
		t.Fatalf("pos=%v key=%q json=%v err=%v", pos, *k, *j, err)
	}
}

// TestShippedFilesFormatted keeps examples.hcl and pipelines/ in the form
// regflow fmt writes.
func TestShippedFilesFormatted(t *testing.T) {
	code, out, errOut := runCLI(t, "fmt", "-check", "../../examples.hcl", "../../pipelines")
	if code != 0 {
		t.Fatalf("regflow fmt -check: exit %d; these files need regflow fmt:\n%s%s", code, out, errOut)
	}
}

func TestFmt(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "p.hcl")
	messy := "pipeline \"p\" {\n    on=[\"a.*\"]\n  description   =  \"x\"\n}\n"
	tidy := "pipeline \"p\" {\n  on          = [\"a.*\"]\n  description = \"x\"\n}\n"
	os.WriteFile(name, []byte(messy), 0o644)

	code, out, _ := runCLI(t, "fmt", "-check", dir)
	if code != 1 || out != name+"\n" {
		t.Fatalf("-check: exit %d, %q", code, out)
	}
	code, out, _ = runCLI(t, "fmt", "-diff", name)
	if code != 0 || !strings.Contains(out, "-    on=[\"a.*\"]\n") || !strings.Contains(out, "+  on          = [\"a.*\"]\n") {
		t.Fatalf("-diff: exit %d\n%s", code, out)
	}
	if b, _ := os.ReadFile(name); string(b) != messy {
		t.Fatal("-diff wrote the file")
	}
	if code, _, _ = runCLI(t, "fmt", dir); code != 0 {
		t.Fatalf("fmt: exit %d", code)
	}
	if b, _ := os.ReadFile(name); string(b) != tidy {
		t.Fatalf("formatted:\n%s\nwant:\n%s", b, tidy)
	}
	os.WriteFile(name, []byte("pipeline \"p\" {\n"), 0o644)
	if code, _, errOut := runCLI(t, "fmt", name); code != 1 || !strings.Contains(errOut, "does not parse") {
		t.Fatalf("broken file: exit %d, %s", code, errOut)
	}
}

// TestGraph checks the routing picture of pipelines/ and that the README
// shows the current one.
func TestGraph(t *testing.T) {
	code, mermaid, errOut := runCLI(t, "graph", "../../pipelines")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"flowchart LR\n",
		`on0(["request.*"])`,
		`subgraph p0 ["pipeline get_next_uid_gid"]`,
		`p0s3["on_failure: publish reply"]`,
		"on0 --> p0\n",
		`key0>"verify.{{ msg.queuename }}"]`,
		"p0s2 -.-> key0\n", "key0 --> on1\n", "on1 --> p1\n",
		"key1 --> on2\n", "on2 --> c0\n",
	} {
		if !strings.Contains(mermaid, want) {
			t.Errorf("mermaid lacks %q", want)
		}
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "```mermaid\n"+mermaid+"```\n") {
		t.Errorf("README.md does not show the current graph; paste the output of regflow graph pipelines")
	}

	code, dot, _ := runCLI(t, "graph", "--format", "dot", "../../pipelines")
	if code != 0 || !strings.HasPrefix(dot, "digraph regflow {") || !strings.Contains(dot, "key0 -> on1;") {
		t.Fatalf("dot: exit %d\n%s", code, dot)
	}
}

// TestReferenceCurrent fails when docs/reference.md differs from what
// regflow docs generates from the schemas.
func TestReferenceCurrent(t *testing.T) {
	code, out, _ := runCLI(t, "docs")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	want, err := os.ReadFile("../../docs/reference.md")
	if err != nil {
		t.Fatal(err)
	}
	if out != string(want) {
		t.Fatal("docs/reference.md is stale; run: go run ./cmd/regflow docs -o docs/reference.md")
	}
	for _, name := range []string{"validate", "allocate_uid", "git_commit", "subscribe_list", "send_email",
		"log_event", "publish", "exec"} {
		if !strings.Contains(out, "\n### "+name+"\n") {
			t.Errorf("the reference lacks action %s", name)
		}
	}
}

func TestPipelineTests(t *testing.T) {
	code, out, errOut := runCLI(t, "test", "../../pipelines")
	if code != 0 || !strings.HasSuffix(out, "8 passed, 0 failed\n") {
		t.Fatalf("regflow test pipelines: exit %d\n%s%s", code, out, errOut)
	}

	// A wrong expectation fails with the place and the difference.
	dir := t.TempDir()
	src, _ := os.ReadFile("../../pipelines/registration.hcl")
	os.WriteFile(filepath.Join(dir, "registration.hcl"), src, 0o644)
	os.WriteFile(filepath.Join(dir, "wrong_test.hcl"), []byte(`test "wrong" {
  key     = "request.bo"
  message = { username = "bo", queuename = "bo", email = "bo@example.org", fullname = "Bo" }
  expect {
    publish "completed.bo" {
      uid = 20000
    }
    step "provision/record" {
      status = "failed"
    }
    mails = 1
  }
}
`), 0o644)
	code, out, _ = runCLI(t, "test", dir)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, out)
	}
	for _, want := range []string{
		"FAIL  wrong",
		"wrong_test.hcl:5:5: completed.bo: field uid is 10001, want 20000",
		"wrong_test.hcl:8:5: step provision/record: status ok, want failed",
		"wrong_test.hcl:11:5: 3 mails were sent, want 1",
		"0 passed, 1 failed",
		"      | → request.bo  (input)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	os.WriteFile(filepath.Join(dir, "wrong_test.hcl"), []byte(`test "typo" {
  key     = "request.bo"
  message = {}
  stub "provison/lists" {}
}
`), 0o644)
	code, _, errOut = runCLI(t, "test", dir)
	if code != 1 || !strings.Contains(errOut, `Did you mean "provision"?`) {
		t.Fatalf("exit %d: %s", code, errOut)
	}

	// Tests that check nothing, and a misspelt pipeline, are errors.
	os.WriteFile(filepath.Join(dir, "wrong_test.hcl"), []byte(`test "no expect" {
  key     = "request.bo"
  message = {}
}

test "empty expect" {
  key     = "request.bo"
  message = {}
  expect {}
}

test "pipeline typo" {
  key     = "request.bo"
  message = {}
  expect {
    pipeline "provison" { status = "ok" }
  }
}

test "pipeline typo" {
  key     = "request.bo"
  message = {}
  expect { mails = -1 }
}
`), 0o644)
	code, _, errOut = runCLI(t, "test", dir)
	for _, want := range []string{
		`wrong_test.hcl:1:1: error: Missing expect`,
		`Test "no expect" has no expect block, so it checks nothing`,
		`wrong_test.hcl:9:3: error: Empty expect`,
		`wrong_test.hcl:16:14: error: Unknown pipeline`,
		`No pipeline is named "provison". Did you mean "provision"?`,
		`wrong_test.hcl:23:20: error: Invalid mails`,
		`wrong_test.hcl:20:6: error: Duplicate test`, // reported along with the error inside it
	} {
		if code != 1 || !strings.Contains(errOut, want) {
			t.Errorf("exit %d; output lacks %q:\n%s", code, want, errOut)
		}
	}
}

func TestStatus(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "regflow.db")
	os.WriteFile(filepath.Join(dir, "p.hcl"), []byte(`store { path = "`+db+`" }
message { username = string }
pipeline "log" {
  on = ["#"]
  log_event "log" {}
}`), 0o644)
	store, err := engine.OpenStore(db)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := time.Now()
	store.OpenRegistration(ctx, &engine.Registration{Tracker: "registration", ID: "ana", StartMessage: "m1",
		OpenedAt: now, DeadlineAt: now.Add(time.Minute), WaitingFor: "provision (verify.ana)",
		Msg: engine.Message{"username": "ana"}})
	store.AddRegistrationStep(ctx, "registration", "ana", engine.RegistrationStep{At: now, Pipeline: "provision",
		Step: "lists", Status: "failed", Attempts: 3, Error: "451 try again later"})
	store.Close()

	code, out, errOut := runCLI(t, "status", "--config", dir)
	if code != 0 || !strings.Contains(out, "ana") || !strings.Contains(out, "open") ||
		!strings.Contains(out, "provision (verify.ana)") {
		t.Fatalf("status: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = runCLI(t, "status", "--config", dir, "ana")
	for _, want := range []string{"registration ana (registration): open", "waiting for provision (verify.ana)",
		"last error  provision/lists: 451 try again later", "provision/lists", "failed", "(3 attempts)"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("status ana lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = runCLI(t, "status", "--config", dir, "--json", "ana")
	var regs []struct {
		ID         string `json:"id"`
		State      string `json:"state"`
		WaitingFor string `json:"waiting_for"`
		LastError  string `json:"last_error"`
		Steps      []struct {
			Step     string `json:"step"`
			Attempts int    `json:"attempts"`
			Error    string `json:"error"`
		} `json:"steps"`
	}
	if err := json.Unmarshal([]byte(out), &regs); code != 0 || err != nil || len(regs) != 1 {
		t.Fatalf("status --json ana: exit %d, %v\n%s", code, err, out)
	}
	if r := regs[0]; r.ID != "ana" || r.State != "open" || r.WaitingFor != "provision (verify.ana)" ||
		r.LastError != "provision/lists: 451 try again later" || len(r.Steps) != 1 ||
		r.Steps[0].Step != "lists" || r.Steps[0].Attempts != 3 || r.Steps[0].Error != "451 try again later" {
		t.Errorf("status --json ana = %+v", r)
	}
	if code, _, errOut := runCLI(t, "status", "--config", dir, "nobody"); code != 1 ||
		!strings.Contains(errOut, "no registration of nobody") {
		t.Fatalf("unknown user: exit %d %s", code, errOut)
	}
}

// TestExamplesCoverEverything keeps the promise of examples.hcl: every
// block, action and attribute the loader accepts appears in it at least
// once.
func TestExamplesCoverEverything(t *testing.T) {
	src, err := os.ReadFile("../../examples.hcl")
	if err != nil {
		t.Fatal(err)
	}
	f, diags := hclsyntax.ParseConfig(src, "examples.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	reg := actions.Registry()
	seen := map[string]map[string]bool{}
	note := func(kind string, body *hclsyntax.Body) {
		if seen[kind] == nil {
			seen[kind] = map[string]bool{}
		}
		for name := range body.Attributes {
			seen[kind][name] = true
		}
	}
	var walk func(kind string, body *hclsyntax.Body)
	walk = func(kind string, body *hclsyntax.Body) {
		for _, b := range body.Blocks {
			switch {
			case b.Type == "on_failure" || b.Type == "on_timeout":
				walk(kind, b.Body)
			case b.Type == "retry":
				note("retry", b.Body)
			case kind == "pipeline" || kind == "track":
				if _, ok := reg.Lookup(b.Type); !ok {
					t.Errorf("examples.hcl:%d: %s is not an action", b.TypeRange.Start.Line, b.Type)
					continue
				}
				note(b.Type, b.Body)
				note("step", b.Body)
				walk(b.Type, b.Body)
			default:
				note(b.Type, b.Body)
				walk(b.Type, b.Body)
			}
		}
	}
	walk("", f.Body.(*hclsyntax.Body))
	for kind, attrs := range engine.Documented(reg) {
		if seen[kind] == nil {
			t.Errorf("examples.hcl has no %s block", kind)
			continue
		}
		for _, a := range attrs {
			if !seen[kind][a] {
				t.Errorf("examples.hcl never sets %s in a %s block", a, kind)
			}
		}
	}
}

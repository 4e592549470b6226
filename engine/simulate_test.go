package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"regflow/actions"
	"regflow/engine"
)

// workflow simulates the shipped pipelines/ in one sandbox, so that
// several registrations share a store, a repository and an outbox.
type workflow struct {
	t   *testing.T
	cfg *engine.Config
	svc *engine.Services
	sim *engine.Simulator
	dir string
	seq int
}

func newWorkflow(t *testing.T) *workflow {
	t.Helper()
	cfg, _, diags := engine.Load([]string{"../pipelines"}, actions.Registry())
	if diags.HasErrors() {
		t.Fatalf("pipelines/: %v", diags)
	}
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	svc, err := engine.Sandbox(cfg, dir, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Store.Close() })
	return &workflow{t: t, cfg: cfg, svc: svc, sim: engine.NewSimulator(cfg, svc), dir: dir}
}

// send publishes body on key with a fresh message id, as a producer
// submitting a new request does.
func (w *workflow) send(key, body string) *engine.Trace {
	w.t.Helper()
	w.seq++
	tr, err := w.sim.Run(context.Background(), key, []byte(body), fmt.Sprintf("%s-%d", w.t.Name(), w.seq))
	if err != nil {
		w.t.Fatalf("simulate %s: %v", key, err)
	}
	return tr
}

func request(user, email string) string {
	b, _ := json.Marshal(map[string]string{"username": user, "queuename": engine.QueueName(user),
		"email": email, "fullname": "Test User", "reason": "thesis"})
	return string(b)
}

func keys(tr *engine.Trace) []string {
	var out []string
	for _, h := range tr.Hops {
		out = append(out, h.RoutingKey)
	}
	return out
}

// result returns the result of pipeline p on the first hop with key.
func result(t *testing.T, tr *engine.Trace, key, p string) *engine.Result {
	t.Helper()
	for _, h := range tr.Hops {
		if h.RoutingKey != key {
			continue
		}
		for _, r := range h.Results {
			if r.Pipeline == p {
				return r
			}
		}
	}
	t.Fatalf("no result of %s on %s; hops: %v", p, key, keys(tr))
	return nil
}

// completed returns the body published on completed.<q>.
func completed(t *testing.T, tr *engine.Trace, q string) engine.Message {
	t.Helper()
	for _, h := range tr.Hops {
		if h.RoutingKey == "completed."+q {
			m, err := engine.DecodeMessage(h.Body)
			if err != nil {
				t.Fatal(err)
			}
			return m
		}
	}
	t.Fatalf("no completed.%s; hops: %v", q, keys(tr))
	return nil
}

func (w *workflow) outbox() []string {
	files, _ := filepath.Glob(filepath.Join(w.dir, "var/outbox/*.eml"))
	var subjects []string
	for _, f := range files {
		b, _ := os.ReadFile(f)
		for _, line := range strings.Split(string(b), "\r\n") {
			if strings.HasPrefix(line, "Subject: ") {
				subjects = append(subjects, strings.TrimPrefix(line, "Subject: "))
			}
		}
	}
	return subjects
}

func TestWorkflowSuccess(t *testing.T) {
	w := newWorkflow(t)
	tr := w.send("request.ana%2Elima", request("ana.lima", "ana.lima@example.org"))

	want := []string{"request.ana%2Elima", "verify.ana%2Elima", "completed.ana%2Elima", "notify.ana%2Elima"}
	if got := keys(tr); !reflect.DeepEqual(got, want) {
		t.Fatalf("hops = %v, want %v", got, want)
	}
	done := completed(t, tr, "ana%2Elima")
	if done["success"] != true || done["uid"] != 10001 || done["gid"] != 10001 ||
		len(done["errmsg"].([]any)) != 0 {
		t.Fatalf("completed = %v", done)
	}
	notify := tr.Hops[3]
	m, _ := engine.DecodeMessage(notify.Body)
	if m["notified"] != true || m["uid"] != 10001 {
		t.Fatalf("notify body = %v", m)
	}
	subjects := w.outbox()
	for _, s := range []string{"subscribe ana.lima@example.org", "Your research computing account ana.lima",
		"New account ana.lima (10001)"} {
		if !contains(subjects, s) {
			t.Errorf("outbox lacks %q; has %q", s, subjects)
		}
	}
	rec, err := os.ReadFile(filepath.Join(w.dir, "var/users/users/ana.lima.json"))
	if err != nil || !strings.Contains(string(rec), `"uid": 10001`) {
		t.Fatalf("git record: %v %s", err, rec)
	}
	log, _ := os.ReadFile(filepath.Join(w.dir, "var/log/user_reg.log"))
	if n := strings.Count(string(log), "\n"); n != 4 {
		t.Fatalf("event log has %d lines, want one per message (4)", n)
	}
}

func TestWorkflowDuplicateEmail(t *testing.T) {
	w := newWorkflow(t)
	w.send("request.ana%2Elima", request("ana.lima", "ana.lima@example.org"))
	tr := w.send("request.alima", request("alima", "Ana.Lima@example.org"))

	done := completed(t, tr, "alima")
	errs, _ := done["errmsg"].([]any)
	if done["success"] != false || len(errs) != 1 || errs[0] != "request: Email already exists" {
		t.Fatalf("completed = %v", done)
	}
	if _, has := done["uid"]; has {
		t.Fatalf("a refused registration got a uid: %v", done)
	}
	if got := keys(tr); !reflect.DeepEqual(got, []string{"request.alima", "completed.alima"}) {
		t.Fatalf("hops = %v; a failure must not reach verify or notify", got)
	}
}

// TestWorkflowBadUsername covers C2 end to end: the sender learns which
// rule its username breaks, and nothing was reserved.
func TestWorkflowBadUsername(t *testing.T) {
	w := newWorkflow(t)
	tr := w.send("request.2024lab", request("2024lab", "lab@example.org"))
	done := completed(t, tr, "2024lab")
	errs, _ := done["errmsg"].([]any)
	if done["success"] != false || len(errs) != 1 ||
		errs[0] != `request: username: must begin with a lowercase letter or underscore, not '2'` {
		t.Fatalf("completed = %v", done)
	}
	var n int
	w.svc.Store.DB().QueryRow(`SELECT count(*) FROM ids`).Scan(&n)
	if n != 0 {
		t.Fatalf("%d ids reserved for a refused request", n)
	}
}

// TestWorkflowEmptyQueuename covers C5: refused with the reason, and
// regflow publishes no "completed." with an empty word; the message is
// dead-lettered instead since nobody can be answered.
func TestWorkflowEmptyQueuename(t *testing.T) {
	w := newWorkflow(t)
	tr := w.send("request.", `{"username":"","queuename":"","email":"x@example.org","fullname":"X"}`)
	r := result(t, tr, "request.", "get_next_uid_gid")
	errs := r.Errmsg()
	if len(errs) < 1 || !strings.Contains(errs[0], "queuename: must be non-empty") {
		t.Fatalf("errmsg = %q", errs)
	}
	for _, k := range keys(tr) {
		if strings.HasSuffix(k, ".") && k != "request." {
			t.Fatalf("published %q with an empty word", k)
		}
	}
	if !strings.Contains(r.DeadLetter, "empty word") {
		t.Fatalf("dead letter = %q", r.DeadLetter)
	}
}

// TestWorkflowUnencodedDot covers C1: a key with the dot left in matches
// no request.* pipeline; only the event log sees it.
func TestWorkflowUnencodedDot(t *testing.T) {
	w := newWorkflow(t)
	tr := w.send("request.ana.lima", request("ana.lima", "ana.lima@example.org"))
	if len(tr.Hops) != 1 || len(tr.Hops[0].Results) != 1 || tr.Hops[0].Results[0].Pipeline != "event_log" {
		t.Fatalf("trace = %v", keys(tr))
	}
}

// TestWorkflowSameRequestTwice covers C12: the second run gets the same
// ids, makes no new commit, sends no second welcome mail, and still
// answers with completed.<q>.
func TestWorkflowSameRequestTwice(t *testing.T) {
	w := newWorkflow(t)
	body := request("ana.lima", "ana.lima@example.org")
	w.send("request.ana%2Elima", body)
	first := len(w.outbox())
	tr := w.send("request.ana%2Elima", body)

	done := completed(t, tr, "ana%2Elima")
	if done["success"] != true || done["uid"] != 10001 || done["gid"] != 10001 {
		t.Fatalf("second completed = %v", done)
	}
	rec := result(t, tr, "verify.ana%2Elima", "provision")
	if !strings.HasPrefix(rec.Steps[0].Note, "already committed") {
		t.Fatalf("git step: %q, want already committed", rec.Steps[0].Note)
	}
	if got := len(w.outbox()); got != first {
		t.Fatalf("outbox grew from %d to %d mails on a repeated request", first, got)
	}
	notify := result(t, tr, "completed.ana%2Elima", "notify")
	if !notify.Steps[0].Replayed {
		t.Fatal("the welcome mail step ran again instead of replaying")
	}
}

// TestSimulateSandbox checks that absolute paths in the configuration
// are moved into the sandbox.
func TestSimulateSandbox(t *testing.T) {
	svc := &engine.Services{Root: "/tmp/sb", Sandbox: true}
	if got := svc.Path("/var/log/user_reg.log"); got != "/tmp/sb/root/var/log/user_reg.log" {
		t.Fatalf("Path = %s", got)
	}
	svc.Sandbox = false
	if got := svc.Path("var/x"); got != "/tmp/sb/var/x" {
		t.Fatalf("Path = %s", got)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

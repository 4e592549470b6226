package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testAction is a configurable action for runner tests: it counts its
// calls, fails as told, and sets a field.
type testAction struct {
	calls     atomic.Int32
	failFirst int    // the first failFirst calls fail transiently
	fail      string // always fail permanently with this text
	panicMsg  string
	sleep     time.Duration
	set       string
	value     any // set instead of the call count when not nil
}

func (a *testAction) Run(ctx context.Context, c *Call) error {
	n := int(a.calls.Add(1))
	switch {
	case a.panicMsg != "":
		panic(a.panicMsg)
	case a.fail != "":
		return Permanent(errors.New(a.fail))
	case n <= a.failFirst:
		return Transient(fmt.Errorf("hiccup %d", n))
	case a.sleep > 0:
		select {
		case <-time.After(a.sleep):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if a.set != "" {
		if a.value != nil {
			c.Set(a.set, a.value)
		} else {
			c.Set(a.set, n)
		}
	}
	c.Notef("call %d", n)
	return nil
}

// testRegistry registers one "step" action whose behaviour comes from the
// acts map, keyed by step name.
func testRegistry(acts map[string]*testAction) *Registry {
	return NewRegistry(&ActionSpec{
		Name: "step",
		Attrs: []AttrSpec{
			{Name: "sets", Kind: AttrString},
		},
		Adds: func(c *StepConfig) Schema {
			if f := c.String("sets", ""); f != "" {
				return Schema{f: TypeInteger}
			}
			return nil
		},
		New: func(c *StepConfig) (Action, error) {
			a := acts[c.Step]
			if a == nil {
				a = &testAction{}
				acts[c.Step] = a
			}
			a.set = c.String("sets", "")
			return a, nil
		},
	}, &ActionSpec{
		Name:  "emit",
		Attrs: []AttrSpec{{Name: "key", Kind: AttrTemplate, Required: true}},
		New: func(c *StepConfig) (Action, error) {
			key := c.Template("key")
			return ActionFunc(func(ctx context.Context, call *Call) error {
				k, err := call.Render(key)
				if err != nil {
					return err
				}
				return call.Publish(ctx, "RegUsr", k, call.Msg)
			}), nil
		},
	})
}

type recordingPublisher struct {
	keys []string
}

func (p *recordingPublisher) Publish(ctx context.Context, o *Outgoing) error {
	p.keys = append(p.keys, o.RoutingKey)
	return nil
}

// loadTest writes src to a file and loads it with the test registry.
func loadTest(t *testing.T, src string, acts map[string]*testAction) (*Config, *Runner, *recordingPublisher) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.hcl"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, _, diags := Load([]string{dir}, testRegistry(acts))
	if diags.HasErrors() {
		t.Fatalf("load: %v", diags)
	}
	store, err := OpenStore(filepath.Join(dir, "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	pub := &recordingPublisher{}
	svc := &Services{Store: store, Publisher: pub, Root: dir,
		Logger: slog.New(slog.DiscardHandler)}
	return cfg, NewRunner(cfg, svc), pub
}

func handle(t *testing.T, r *Runner, body string) *Result {
	t.Helper()
	res, err := r.Handle(context.Background(), r.Config.Pipelines[0],
		&Delivery{RoutingKey: "request.ana", MessageID: "m1", Body: []byte(body)})
	if err != nil {
		t.Fatalf("Handle: %v", err)
	}
	return res
}

func statuses(res *Result) string {
	var s []string
	for _, st := range res.Steps {
		x := st.Step + "=" + st.Status
		if st.Replayed {
			x += "(replayed)"
		}
		s = append(s, x)
	}
	return strings.Join(s, " ")
}

const chainSrc = `
message {
  username  = string
  queuename = string
}
pipeline "p" {
  on = ["request.*"]
  step "a" { sets = "count_a" }
  step "b" { on_error = "continue" }
  step "c" { when = "msg.username != 'skip'" }
  step "d" {}
  on_failure {
    emit "reply" { key = "completed.{{ msg.queuename }}" }
  }
}
`

func TestChainOrderAndErrors(t *testing.T) {
	acts := map[string]*testAction{"b": {fail: "list server down"}, "d": {fail: "disk full"}}
	_, r, pub := loadTest(t, chainSrc, acts)
	res := handle(t, r, `{"username":"ana","queuename":"ana"}`)

	if got, want := statuses(res), "a=ok b=failed c=ok d=failed reply=ok"; got != want {
		t.Fatalf("steps = %s, want %s", got, want)
	}
	want := []string{"b: list server down", "d: disk full"}
	if got := res.Errmsg(); !reflect.DeepEqual(got, want) {
		t.Fatalf("errmsg = %q, want %q", got, want)
	}
	if res.Msg[FieldSuccess] != false || !res.Failed {
		t.Fatalf("success = %v, failed = %v; want false, true", res.Msg[FieldSuccess], res.Failed)
	}
	if res.Msg["count_a"] != 1 {
		t.Fatalf("count_a = %v, want 1: later steps see what earlier ones set", res.Msg["count_a"])
	}
	if !reflect.DeepEqual(pub.keys, []string{"completed.ana"}) {
		t.Fatalf("published %v, want [completed.ana] from on_failure", pub.keys)
	}
	if res.DeadLetter != "" {
		t.Fatalf("dead letter %q: on_failure handled the failure", res.DeadLetter)
	}
}

func TestWhenSkips(t *testing.T) {
	acts := map[string]*testAction{}
	_, r, _ := loadTest(t, chainSrc, acts)
	res := handle(t, r, `{"username":"skip","queuename":"skip"}`)
	if got, want := statuses(res), "a=ok b=ok c=skipped d=ok"; got != want {
		t.Fatalf("steps = %s, want %s", got, want)
	}
	if acts["c"].calls.Load() != 0 {
		t.Fatal("a skipped step ran")
	}
	if res.Msg[FieldSuccess] != true || len(res.Errmsg()) != 0 {
		t.Fatalf("success = %v, errmsg = %v", res.Msg[FieldSuccess], res.Errmsg())
	}
}

// TestRedeliveryReplays checks the journal: a message handled twice runs
// each step once; the second time every result, the fields it set and
// the errmsg entries included, comes from the journal.
func TestRedeliveryReplays(t *testing.T) {
	acts := map[string]*testAction{"b": {fail: "list server down"}}
	_, r, pub := loadTest(t, chainSrc, acts)
	first := handle(t, r, `{"username":"ana","queuename":"ana"}`)
	second := handle(t, r, `{"username":"ana","queuename":"ana"}`)

	for name, a := range acts {
		if n := a.calls.Load(); n != 1 {
			t.Errorf("step %s ran %d times, want 1", name, n)
		}
	}
	if got, want := statuses(second), "a=ok(replayed) b=failed(replayed) c=ok(replayed) d=ok(replayed)"; got != want {
		t.Fatalf("second delivery: %s, want %s", got, want)
	}
	if !reflect.DeepEqual(first.Msg, second.Msg) {
		t.Fatalf("replayed message differs:\n%v\n%v", first.Msg, second.Msg)
	}
	if len(pub.keys) != 0 {
		t.Fatalf("published %v; nothing should be", pub.keys)
	}
}

func TestRetryTransient(t *testing.T) {
	src := `
message { username = string }
pipeline "p" {
  on = ["#"]
  step "flaky" {
    retry {
      attempts = 3
      backoff  = "1ms"
    }
  }
  step "once" {}
}`
	acts := map[string]*testAction{"flaky": {failFirst: 2}}
	_, r, _ := loadTest(t, src, acts)
	res := handle(t, r, `{"username":"ana"}`)
	if res.Steps[0].Status != StepOK || res.Steps[0].Attempts != 3 {
		t.Fatalf("flaky: %s after %d attempts, want ok after 3", res.Steps[0].Status, res.Steps[0].Attempts)
	}

	acts2 := map[string]*testAction{"flaky": {failFirst: 5}}
	_, r2, _ := loadTest(t, src, acts2)
	res = handle(t, r2, `{"username":"ana"}`)
	if res.Steps[0].Status != StepFailed || acts2["flaky"].calls.Load() != 3 {
		t.Fatalf("flaky: %s after %d calls, want failed after 3", res.Steps[0].Status, acts2["flaky"].calls.Load())
	}
	if got := res.Errmsg(); len(got) != 1 || got[0] != "flaky: hiccup 3" {
		t.Fatalf("errmsg = %q", got)
	}
}

func TestPermanentNotRetried(t *testing.T) {
	src := `
message { username = string }
pipeline "p" {
  on = ["#"]
  step "auth" {
    retry {
      attempts = 5
      backoff  = "1ms"
    }
  }
}`
	acts := map[string]*testAction{"auth": {fail: "535 authentication failed"}}
	_, r, _ := loadTest(t, src, acts)
	res := handle(t, r, `{"username":"ana"}`)
	if n := acts["auth"].calls.Load(); n != 1 {
		t.Fatalf("a permanent error was tried %d times, want 1", n)
	}
	if !strings.Contains(res.DeadLetter, "no on_failure") {
		t.Fatalf("dead letter = %q; a failure nothing handles is dead-lettered", res.DeadLetter)
	}
}

func TestTimeoutAndPanic(t *testing.T) {
	src := `
message { username = string }
pipeline "p" {
  on = ["#"]
  step "slow" {
    timeout  = "20ms"
    on_error = "continue"
  }
  step "boom" { on_error = "continue" }
  step "after" {}
}`
	acts := map[string]*testAction{"slow": {sleep: 5 * time.Second}, "boom": {panicMsg: "nil map"}}
	_, r, _ := loadTest(t, src, acts)
	start := time.Now()
	res := handle(t, r, `{"username":"ana"}`)
	if time.Since(start) > 2*time.Second {
		t.Fatal("the step timeout did not stop the slow step")
	}
	errs := res.Errmsg()
	if len(errs) != 2 || !strings.HasPrefix(errs[0], "slow: timed out after 20ms") ||
		errs[1] != "boom: internal error in step: nil map" {
		t.Fatalf("errmsg = %q", errs)
	}
	if res.Steps[2].Status != StepOK {
		t.Fatalf("the engine did not go on after a panic: %s", statuses(res))
	}
}

// TestRuntimeExprError covers C19: an expr error at run time fails the
// step with an errmsg; it does not crash the engine.
func TestRuntimeExprError(t *testing.T) {
	src := `
message {
  username = string
  uid      = integer
}
pipeline "p" {
  on = ["#"]
  step "big" {
    when     = "msg.uid > 10000"
    on_error = "continue"
  }
}`
	_, r, _ := loadTest(t, src, map[string]*testAction{})
	res := handle(t, r, `{"username":"ana"}`)
	errs := res.Errmsg()
	if len(errs) != 1 || !strings.Contains(errs[0], "big: when: msg.uid > 10000: invalid operation: <nil> > int") {
		t.Fatalf("errmsg = %q", errs)
	}
}

func TestRefusals(t *testing.T) {
	src := `
message {
  username  = string
  queuename = string
  uid       = number
}
pipeline "p" {
  on = ["#"]
  step "a" {}
  on_failure {
    emit "reply" { key = "completed.{{ msg.queuename }}" }
  }
}`
	acts := map[string]*testAction{}
	_, r, pub := loadTest(t, src, acts)

	res := handle(t, r, `[1,2]`)
	if !strings.Contains(res.Refused, "not a JSON object") || res.DeadLetter == "" {
		t.Fatalf("array body: refused %q, dead letter %q", res.Refused, res.DeadLetter)
	}
	res = handle(t, r, `{"username":"ana","queuename":"ana","uid":"10042"}`)
	if res.Refused != "uid: expected number, got string" {
		t.Fatalf("refused = %q", res.Refused)
	}
	if got := res.Errmsg(); !reflect.DeepEqual(got, []string{"uid: expected number, got string"}) {
		t.Fatalf("errmsg = %q", got)
	}
	if !reflect.DeepEqual(pub.keys, []string{"completed.ana"}) {
		t.Fatalf("published %v: the sender must get its completed.<q>", pub.keys)
	}
	if acts["a"].calls.Load() != 0 {
		t.Fatal("a step ran for a refused message")
	}

	r.Config.Broker.MaxBody = 1024
	res = handle(t, r, `{"username":"`+strings.Repeat("a", 2000)+`"}`)
	if !strings.Contains(res.Refused, "limit is 1024") {
		t.Fatalf("huge body: refused %q", res.Refused)
	}
}

// TestOnceAcrossMessages covers the once key (C12): two different
// messages for the same user run a once step once; the second replays.
func TestOnceAcrossMessages(t *testing.T) {
	src := `
message { username = string }
pipeline "p" {
  on = ["#"]
  step "welcome" { once = "welcome:{{ msg.username }}" }
}`
	acts := map[string]*testAction{}
	_, r, _ := loadTest(t, src, acts)
	for i, id := range []string{"m1", "m2"} {
		res, err := r.Handle(context.Background(), r.Config.Pipelines[0],
			&Delivery{RoutingKey: "k", MessageID: id, Body: []byte(`{"username":"ana"}`)})
		if err != nil {
			t.Fatal(err)
		}
		if res.Steps[0].Replayed != (i == 1) {
			t.Fatalf("message %d: replayed = %v", i+1, res.Steps[0].Replayed)
		}
	}
	if n := acts["welcome"].calls.Load(); n != 1 {
		t.Fatalf("welcome ran %d times, want 1", n)
	}
}

func TestBackoff(t *testing.T) {
	r := Retry{Attempts: 10, Backoff: 100 * time.Millisecond, MaxBackoff: time.Second}
	for n, max := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond,
		4: 800 * time.Millisecond, 8: time.Second} {
		d := backoff(r, n)
		if d > max || d < max*3/4 {
			t.Errorf("backoff after attempt %d = %s, want between %s and %s", n, d, max*3/4, max)
		}
	}
}

// TestAbsentField covers C19's documented value: an absent field is nil,
// which compares unequal to any string, so a typed condition does not
// fail on it.
func TestAbsentField(t *testing.T) {
	src := `
message {
  username = string
  reason   = string
}
pipeline "p" {
  on = ["#"]
  step "lists" { when = "msg.reason != 'test'" }
  step "named" { when = "(msg.reason ?? 'none') == 'none'" }
}`
	acts := map[string]*testAction{}
	_, r, _ := loadTest(t, src, acts)
	res := handle(t, r, `{"username":"ana"}`)
	if got := statuses(res); got != "lists=ok named=ok" {
		t.Fatalf("steps = %s, errmsg = %q", got, res.Errmsg())
	}
}

// TestRetryBudget checks that retries stop in time for the delivery to be
// acknowledged within the broker's consumer_timeout.
func TestRetryBudget(t *testing.T) {
	src := `
broker { consumer_timeout = "500ms" }
message { username = string }
pipeline "p" {
  on = ["#"]
  step "flaky" {
    timeout = "50ms"
    retry {
      attempts    = 50
      backoff     = "100ms"
      max_backoff = "100ms"
    }
  }
}`
	acts := map[string]*testAction{"flaky": {failFirst: 100}}
	_, r, _ := loadTest(t, src, acts)
	start := time.Now()
	res := handle(t, r, `{"username":"ana"}`)
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Fatalf("the chain took %s, past the 500ms consumer timeout", took)
	}
	errs := res.Errmsg()
	if len(errs) != 1 || !strings.Contains(errs[0], "another could outlast the broker's consumer_timeout") {
		t.Fatalf("errmsg = %q", errs)
	}
	if n := acts["flaky"].calls.Load(); n < 2 || n > 5 {
		t.Fatalf("%d attempts, want a few", n)
	}
}

// A message that fails the same way on every delivery goes to the dead
// letters at once instead of being requeued for ever.
func TestUnhandleableDeadLettered(t *testing.T) {
	acts := map[string]*testAction{"a": {value: math.Inf(1)}}
	_, r, _ := loadTest(t, `
message {
  username = string
}
pipeline "p" {
  on = ["request.*"]
  step "a" { sets = "ratio" }
}
`, acts)
	res := handle(t, r, `{"username":"ana"}`)
	if !res.Failed || !strings.HasPrefix(res.DeadLetter, "cannot be handled: ") ||
		!strings.Contains(res.DeadLetter, "unsupported value: +Inf") {
		t.Fatalf("failed=%v dead letter %q; want a dead letter naming the +Inf", res.Failed, res.DeadLetter)
	}
}

// handleAll delivers body n times at once, concurrently, the i-th with
// the message id idOf(i), and waits for all.
func handleAll(t *testing.T, r *Runner, n int, idOf func(int) string, body string) []*Result {
	t.Helper()
	res := make([]*Result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], errs[i] = r.Handle(context.Background(), r.Config.Pipelines[0],
				&Delivery{RoutingKey: "request.ana", MessageID: idOf(i), Body: []byte(body)})
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return res
}

// Ten copies of one message (one message id) handled at the same moment
// run each step once; the other nine replay it.
func TestConcurrentCopiesRunOnce(t *testing.T) {
	acts := map[string]*testAction{"slow": {sleep: 20 * time.Millisecond}}
	_, r, _ := loadTest(t, `
message { username = string }
pipeline "p" {
  on = ["#"]
  step "slow" {}
}`, acts)
	results := handleAll(t, r, 10, func(int) string { return "m1" }, `{"username":"ana"}`)
	if n := acts["slow"].calls.Load(); n != 1 {
		t.Fatalf("the step ran %d times for ten copies of one message, want 1", n)
	}
	replayed := 0
	for _, res := range results {
		if res.Steps[0].Replayed {
			replayed++
		}
	}
	if replayed != 9 {
		t.Fatalf("%d copies replayed, want 9", replayed)
	}
}

// Fifty different messages for one user at the same moment run a once step
// once: the lock on the key is held until the result is in the store.
func TestOnceConcurrent(t *testing.T) {
	acts := map[string]*testAction{"welcome": {}}
	_, r, _ := loadTest(t, `
message { username = string }
pipeline "p" {
  on = ["#"]
  step "welcome" { once = "welcome:{{ msg.username }}" }
}`, acts)
	handleAll(t, r, 50, func(i int) string { return fmt.Sprintf("m%d", i) }, `{"username":"ana"}`)
	if n := acts["welcome"].calls.Load(); n != 1 {
		t.Fatalf("welcome ran %d times for fifty messages, want 1", n)
	}
}

// A producer that reuses a message id for another message gets it
// handled: the results of the first are never replayed for the second.
func TestReusedMessageID(t *testing.T) {
	acts := map[string]*testAction{}
	_, r, _ := loadTest(t, `
message { username = string }
pipeline "p" {
  on = ["#"]
  step "a" { sets = "n" }
}`, acts)
	var got []any
	for _, body := range []string{`{"username":"ana"}`, `{"username":"bo"}`, `{"username":"ana"}`} {
		res, err := r.Handle(context.Background(), r.Config.Pipelines[0],
			&Delivery{RoutingKey: "request.x", MessageID: "fixed-id", Body: []byte(body)})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, res.Msg["n"])
	}
	// ana runs (1), bo runs (2), ana again is a redelivery: replayed (1).
	if !reflect.DeepEqual(got, []any{1, 2, 1}) {
		t.Fatalf("n = %v, want [1 2 1]", got)
	}
}

// A body that is a JSON object but breaks a decoder rule (a field twice, a
// number beyond float64) still gets its answer where the sender is known,
// with the reason in errmsg, and is dead-lettered as well.
func TestRefusedBodyAnswered(t *testing.T) {
	for _, c := range []struct {
		body, errmsg, dropped, kept string
	}{
		{`{"username":"ana","queuename":"ana","count_a":1e400}`,
			"count_a: the number 1e400 is out of range", "count_a", "username"},
		{`{"username":"ana","queuename":"ana","username":"root"}`,
			"username: given twice in the body", "username", "queuename"},
		{`{"username":"ana","queuename":"ana","extra":{"a":1,"a":2}}`,
			"extra.a: given twice in the body", "extra", "username"},
		// The same value twice leaves no doubt: the answer keeps it.
		{`{"username":"ana","queuename":"ana","queuename": "ana"}`,
			"queuename: given twice in the body", "", "queuename"},
	} {
		acts := map[string]*testAction{}
		_, r, pub := loadTest(t, chainSrc, acts)
		res := handle(t, r, c.body)
		if !res.Failed || !strings.HasPrefix(res.DeadLetter, "body refused: ") ||
			!reflect.DeepEqual(res.Errmsg(), []string{c.errmsg}) {
			t.Errorf("%s: failed=%v dead letter %q errmsg %q; want failed, dead-lettered, errmsg [%s]",
				c.body, res.Failed, res.DeadLetter, res.Errmsg(), c.errmsg)
		}
		if !reflect.DeepEqual(pub.keys, []string{"completed.ana"}) {
			t.Errorf("%s: published %v, want the answer on completed.ana", c.body, pub.keys)
		}
		if _, ok := res.Msg[c.dropped]; ok && c.dropped != "" {
			t.Errorf("%s: the doubtful field %s was kept: %v", c.body, c.dropped, res.Msg)
		}
		if res.Msg[c.kept] != "ana" {
			t.Errorf("%s: field %s = %v, want ana", c.body, c.kept, res.Msg[c.kept])
		}
		for name, a := range acts {
			if n := a.calls.Load(); n != 0 {
				t.Errorf("%s: step %s ran %d times, want 0", c.body, name, n)
			}
		}
	}
}

// C12 for a producer that sets no message id: the same request sent again
// is a new submission and runs again (its answer is published again), while
// the broker's redelivery of a submission replays it.
func TestResubmissionWithoutID(t *testing.T) {
	acts := map[string]*testAction{}
	_, r, _ := loadTest(t, chainSrc, acts)
	body := []byte(`{"username":"ana","queuename":"ana"}`)
	deliver := func(redelivered bool) *Result {
		res, err := r.Handle(context.Background(), r.Config.Pipelines[0],
			&Delivery{RoutingKey: "request.ana", Body: body, Redelivered: redelivered})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	first := deliver(false)
	again := deliver(true) // the broker delivers the first submission again
	second := deliver(false)
	if first.MessageID == second.MessageID || again.MessageID != first.MessageID {
		t.Fatalf("identities %s, %s (redelivered), %s; want the redelivery to share the first's, the second its own",
			first.MessageID, again.MessageID, second.MessageID)
	}
	if got := statuses(again); got != "a=ok(replayed) b=ok(replayed) c=ok(replayed) d=ok(replayed)" {
		t.Fatalf("redelivery: %s, want every step replayed", got)
	}
	if got := statuses(second); got != "a=ok b=ok c=ok d=ok" {
		t.Fatalf("second submission: %s, want every step run", got)
	}
	if n := acts["a"].calls.Load(); n != 2 {
		t.Fatalf("step a ran %d times, want 2 (once per submission)", n)
	}
}

// A step cut off by a shutdown (the handler's context cancelled) is not a
// failure: nothing is journaled or answered, and the redelivery runs it.
func TestInterruptedStepRunsAgain(t *testing.T) {
	acts := map[string]*testAction{"slow": {sleep: 5 * time.Second}}
	_, r, pub := loadTest(t, `
message {
  username  = string
  queuename = string
}
pipeline "p" {
  on = ["request.*"]
  step "slow" { timeout = "60s" }
  on_failure {
    emit "reply" { key = "completed.{{ msg.queuename }}" }
  }
}`, acts)
	d := &Delivery{RoutingKey: "request.ana", MessageID: "m1", Body: []byte(`{"username":"ana","queuename":"ana"}`)}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err := r.Handle(ctx, r.Config.Pipelines[0], d)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Handle after cancel: %v; want an unavailable error, so the message is redelivered", err)
	}
	if len(pub.keys) != 0 {
		t.Fatalf("published %v while shutting down; want nothing", pub.keys)
	}
	acts["slow"].sleep = 0
	res, err := r.Handle(context.Background(), r.Config.Pipelines[0], d)
	if err != nil || res.Failed || res.Steps[0].Replayed || acts["slow"].calls.Load() != 2 {
		t.Fatalf("redelivery: err %v, failed %v, %s, %d calls; want the step run again and ok",
			err, res.Failed, statuses(res), acts["slow"].calls.Load())
	}
}

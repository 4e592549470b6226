//go:build integration

package engine_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"regflow/actions"
	"regflow/engine"
)

func amqpURL() string {
	if u := os.Getenv("REGFLOW_TEST_AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

// dialTest connects to the test broker or fails: an integration test that
// cannot reach RabbitMQ is a failure, never a skip.
func dialTest(t *testing.T) *amqp.Connection {
	t.Helper()
	conn, err := amqp.Dial(amqpURL())
	if err != nil {
		t.Fatalf("RabbitMQ is not reachable at %s (%v); run make test, which starts it", engine.RedactURL(amqpURL()), err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestTopicMatchesBroker checks the in-process matcher against a live
// broker on the C20 table: each pattern gets a queue, each key a message.
func TestTopicMatchesBroker(t *testing.T) {
	conn := dialTest(t)
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	ex := fmt.Sprintf("regflow-test-topic-%d", time.Now().UnixNano())
	if err := ch.ExchangeDeclare(ex, "topic", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	defer ch.ExchangeDelete(ex, false, false)
	cases := []struct{ pattern, key string }{
		{"request.#", "request"}, {"a.#.b", "a.b"}, {"a.#.b", "ab"}, {"a.*.c.#", "a.b.c"},
		{"request.*", "request.ana.lima"}, {"request.*", "request."}, {"#", ""},
		{"*", ""}, {"a.*.#", "a"}, {"#.c", "c"}, {"a.#.#.b", "a.x.y.b"}, {"request.*", "request"},
		{"", ""}, {"", "a"}, {"#.c", "a.b.cc"},
	}
	queues := map[string]string{}
	for _, c := range cases {
		if _, ok := queues[c.pattern]; ok {
			continue
		}
		q, err := ch.QueueDeclare("", false, true, true, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := ch.QueueBind(q.Name, c.pattern, ex, false, nil); err != nil {
			t.Fatal(err)
		}
		queues[c.pattern] = q.Name
	}
	keys := map[string]bool{}
	for _, c := range cases {
		keys[c.key] = true
	}
	for k := range keys {
		if err := ch.PublishWithContext(context.Background(), ex, k, false, false,
			amqp.Publishing{Body: []byte(k)}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	got := map[string]map[string]bool{} // pattern → keys the broker routed
	for pat, q := range queues {
		got[pat] = map[string]bool{}
		for {
			d, ok, err := ch.Get(q, true)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			got[pat][string(d.Body)] = true
		}
	}
	for _, c := range cases {
		broker := got[c.pattern][c.key]
		if mine := engine.TopicMatch(c.pattern, c.key); mine != broker {
			t.Errorf("pattern %q, key %q: RabbitMQ routes %v, TopicMatch says %v", c.pattern, c.key, broker, mine)
		}
	}
}

// liveEngine runs the shipped pipelines/ against the test broker on an
// exchange and queues of its own, in a temporary working directory.
type liveEngine struct {
	cfg      *engine.Config
	svc      *engine.Services
	eng      *engine.Engine
	exchange string
	dir      string
	cancel   context.CancelFunc
	done     chan error
	logs     *syncBuffer
}

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startEngine(t *testing.T, paths ...string) *liveEngine {
	t.Helper()
	return startEngineWith(t, nil, paths...)
}

// startEngineWith is startEngine with adjust applied before the engine
// runs.
func startEngineWith(t *testing.T, adjust func(*liveEngine), paths ...string) *liveEngine {
	t.Helper()
	conn := dialTest(t)
	id := fmt.Sprintf("t%d", time.Now().UnixNano())
	t.Setenv("REGFLOW_EXCHANGE", "RegUsr-"+id)
	t.Setenv("REGFLOW_QUEUE_PREFIX", id+".")
	if len(paths) == 0 {
		paths = []string{"../pipelines"}
	}
	cfg, _, diags := engine.Load(paths, actions.Registry())
	if diags.HasErrors() {
		t.Fatalf("load: %v", diags)
	}
	dir := t.TempDir()
	store, err := engine.OpenStore(dir + "/var/regflow.db")
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	svc := &engine.Services{Store: store, Mailer: &engine.Outbox{Dir: dir + "/var/outbox"}, Root: dir,
		Commands: engine.OSCommands{}, Logger: log}
	le := &liveEngine{cfg: cfg, svc: svc, exchange: cfg.Broker.Exchange, dir: dir, done: make(chan error, 1),
		logs: logs}
	le.eng = engine.NewEngine(cfg, amqpURL(), svc)
	if adjust != nil {
		adjust(le)
	}
	ctx, cancel := context.WithCancel(context.Background())
	le.cancel = cancel
	go func() { le.done <- le.eng.Run(ctx) }()
	t.Cleanup(func() {
		le.stop(t)
		store.Close()
		ch, err := conn.Channel()
		if err != nil {
			return
		}
		for _, p := range cfg.Pipelines {
			ch.QueueDelete(p.Queue, false, false, false)
		}
		ch.QueueDelete(cfg.Broker.QueuePrefix+cfg.Broker.DeadLetter, false, false, false)
		ch.ExchangeDelete(cfg.Broker.DeadLetter, false, false)
		ch.ExchangeDelete(cfg.Broker.Exchange, false, false)
	})
	deadline := time.Now().Add(10 * time.Second)
	for !le.eng.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("the engine did not become ready within 10s")
		}
		select {
		case err := <-le.done:
			t.Fatalf("the engine stopped: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return le
}

// testBrokerHCL is the broker block of the tests' own configurations: the
// exchange and queue prefix startEngineWith sets for each test.
const testBrokerHCL = `
broker {
  exchange     = env("REGFLOW_EXCHANGE")
  queue_prefix = env("REGFLOW_QUEUE_PREFIX")
}`

// trackHCL is a track block that answers a registration on completed.<q>
// when its deadline passes.
func trackHCL(deadline string) string {
	return `track "registration" {
  id       = "{{ msg.username }}"
  start    = ["request.*"]
  finish   = ["completed.*"]
  deadline = "` + deadline + `"
  on_timeout {
    publish "reply" { routing_key = "completed.{{ msg.queuename }}" }
  }
}
`
}

// arrival is a message got from a queue, and when, counted from the
// start of collect.
type arrival struct {
	amqp.Delivery
	after time.Duration
}

// collect takes every message that reaches queue within d.
func collect(t *testing.T, ch *amqp.Channel, queue string, d time.Duration) []arrival {
	t.Helper()
	var got []arrival
	for start := time.Now(); time.Since(start) < d; {
		m, ok, err := ch.Get(queue, true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		got = append(got, arrival{m, time.Since(start)})
	}
	return got
}

func (le *liveEngine) stop(t *testing.T) {
	if le.cancel == nil {
		return
	}
	le.cancel()
	le.cancel = nil
	select {
	case err := <-le.done:
		if err != nil {
			t.Errorf("Run returned %v after shutdown, want nil", err)
		}
	case <-time.After(20 * time.Second):
		t.Error("the engine did not stop within 20s of shutdown")
	}
}

func (le *liveEngine) request(t *testing.T, user, email string) engine.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	msg := engine.Message{"username": user, "queuename": engine.QueueName(user), "email": email,
		"fullname": "Test " + user, "reason": "integration test"}
	reply, err := engine.Request(ctx, amqpURL(), le.exchange, msg)
	if err != nil {
		t.Fatalf("request %s: %v", user, err)
	}
	return reply
}

func TestEngineWorkflow(t *testing.T) {
	le := startEngine(t)

	ok := le.request(t, "ana.lima", "ana.lima@example.org")
	if ok["success"] != true || ok["uid"] != 10001 || ok["gid"] != 10001 || ok["username"] != "ana.lima" {
		t.Fatalf("completed = %v", ok)
	}
	dup := le.request(t, "alima", "ana.lima@example.org")
	errs, _ := dup["errmsg"].([]any)
	if dup["success"] != false || len(errs) != 1 || !strings.Contains(errs[0].(string), "Email already exists") {
		t.Fatalf("duplicate completed = %v", dup)
	}

	// The welcome mail follows completed.<q> asynchronously.
	deadline := time.Now().Add(10 * time.Second)
	for {
		files, _ := os.ReadDir(le.dir + "/var/outbox")
		if len(files) >= 3 || time.Now().After(deadline) {
			if len(files) != 3 {
				t.Fatalf("outbox has %d mails, want 3 (list subscription, welcome, report)", len(files))
			}
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	le.stop(t)
	if logs := le.logs.String(); !strings.Contains(logs, "msg=consuming") || strings.Contains(logs, ":guest@") {
		t.Fatalf("the logs must say consuming and never show the broker password:\n%s", logs)
	}
	log, err := os.ReadFile(le.dir + "/var/log/user_reg.log")
	if err != nil {
		t.Fatal(err)
	}
	var rks []string
	for _, line := range strings.Split(strings.TrimSpace(string(log)), "\n") {
		var ev struct {
			RoutingKey string `json:"routing_key"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("event log line %q: %v", line, err)
		}
		rks = append(rks, ev.RoutingKey)
	}
	want := "completed.alima completed.ana%2Elima notify.ana%2Elima request.alima request.ana%2Elima verify.ana%2Elima"
	if got := strings.Join(sorted(rks), " "); got != want {
		t.Fatalf("event log keys = %s, want %s", got, want)
	}
}

// TestEngineDeadLetters sends bodies that can never succeed: each lands in
// the dead-letter queue with headers naming the pipeline and the reason,
// and the engine goes on with good messages.
func TestEngineDeadLetters(t *testing.T) {
	le := startEngine(t)
	conn := dialTest(t)
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	bad := map[string]string{"request.x": "not json", "request.y": `["a"]`}
	for k, body := range bad {
		if err := ch.PublishWithContext(context.Background(), le.exchange, k, false, false,
			amqp.Publishing{Body: []byte(body), MessageId: "bad-" + k}); err != nil {
			t.Fatal(err)
		}
	}
	if reply := le.request(t, "bob", "bob@example.org"); reply["success"] != true {
		t.Fatalf("a good request after bad ones: %v", reply)
	}

	dlq := le.cfg.Broker.QueuePrefix + le.cfg.Broker.DeadLetter
	reasons := map[string]string{} // pipeline/key → reason
	deadline := time.Now().Add(10 * time.Second)
	for len(reasons) < 4 && time.Now().Before(deadline) {
		d, ok, err := ch.Get(dlq, true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		reasons[fmt.Sprint(d.Headers[engine.HeaderPipeline], "/", d.RoutingKey)] = fmt.Sprint(d.Headers[engine.HeaderReason])
	}
	// Each body reaches two pipelines (get_next_uid_gid and event_log),
	// and both refuse it.
	for _, k := range []string{"get_next_uid_gid/request.x", "event_log/request.x",
		"get_next_uid_gid/request.y", "event_log/request.y"} {
		if !strings.Contains(reasons[k], "not a JSON object") {
			t.Errorf("dead letter %s: reason %q", k, reasons[k])
		}
	}
}

// TestEngineConcurrentRequests covers C15: many requests at once, each
// step publishing from inside its handler under confirms, all complete
// with distinct ids and no deadlock.
func TestEngineConcurrentRequests(t *testing.T) {
	le := startEngine(t)
	const n = 200
	var wg sync.WaitGroup
	uids := make(chan any, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			user := fmt.Sprintf("user%03d", i)
			reply := le.request(t, user, user+"@example.org")
			if reply["success"] != true {
				t.Errorf("%s: %v", user, reply)
			}
			uids <- reply["uid"]
		}(i)
	}
	wg.Wait()
	close(uids)
	seen := map[any]bool{}
	for u := range uids {
		if seen[u] {
			t.Fatalf("uid %v handed out twice", u)
		}
		seen[u] = true
	}
	if len(seen) != n {
		t.Fatalf("%d distinct uids, want %d", len(seen), n)
	}
}

// TestStartupChecksPublishExchange covers C16 at startup: a publish step
// that names a missing exchange stops the engine with one clear line.
func TestStartupChecksPublishExchange(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(dir+"/p.hcl", []byte(`
broker { exchange = "regflow-test-c16" }
message { username = string }
pipeline "typo" {
  on = ["x.*"]
  publish "out" {
    exchange    = "RegUsrr"
    routing_key = "y.z"
  }
}`), 0o644)
	cfg, _, diags := engine.Load([]string{dir}, actions.Registry())
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	conn := dialTest(t)
	err := engine.DeclareTopology(conn, cfg)
	if err == nil || !strings.Contains(err.Error(), "exchange RegUsrr not found in vhost /") {
		t.Fatalf("DeclareTopology = %v", err)
	}
	ch, _ := conn.Channel()
	ch.QueueDelete("typo", false, false, false)
	ch.QueueDelete("regflow-test-c16.dead", false, false, false)
	ch.ExchangeDelete("regflow-test-c16", false, false)
	ch.ExchangeDelete("regflow-test-c16.dead", false, false)
}

// TestEngineWarnsUnencodedDot covers C1 on the broker: a request whose key
// still has the username's dot reaches only the event log, and the engine
// warns that no pipeline consumed it instead of letting it vanish.
func TestEngineWarnsUnencodedDot(t *testing.T) {
	le := startEngine(t)
	conn := dialTest(t)
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	body := `{"username":"ana.lima","queuename":"ana.lima","email":"a@example.org","fullname":"Ana"}`
	if err := ch.PublishWithContext(context.Background(), le.exchange, "request.ana.lima", false, false,
		amqp.Publishing{Body: []byte(body)}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(le.logs.String(), "no pipeline acted on this message") {
		if time.Now().After(deadline) {
			t.Fatalf("no warning; logs:\n%s", le.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	logs := le.logs.String()
	if !strings.Contains(logs, "routing_key=request.ana.lima") || !strings.Contains(logs, `near="get_next_uid_gid binds request.*"`) {
		t.Fatalf("warning lacks the key or the near binding:\n%s", logs)
	}
	le.stop(t)
	log, _ := os.ReadFile(le.dir + "/var/log/user_reg.log")
	if !strings.Contains(string(log), `"routing_key":"request.ana.lima"`) {
		t.Fatalf("the event log did not record the message:\n%s", log)
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// TestEngineDrainsOnShutdown cancels the engine while a message is in the
// middle of a slow step: Run waits for the chain to finish, its output is
// published and the input acknowledged before Run returns nil.
func TestEngineDrainsOnShutdown(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(dir+"/p.hcl", []byte(testBrokerHCL+`
message { username = string }
pipeline "slow" {
  on = ["slow.*"]
  exec "wait" {
    command = ["sleep", "1"]
  }
  publish "done" {
    routing_key = "done.{{ msg.username }}"
  }
}`), 0o644)
	le := startEngine(t, dir)
	conn := dialTest(t)
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, _ := ch.QueueDeclare("", false, true, true, false, nil)
	ch.QueueBind(q.Name, "done.*", le.exchange, false, nil)
	ch.PublishWithContext(context.Background(), le.exchange, "slow.ana", false, false,
		amqp.Publishing{Body: []byte(`{"username":"ana"}`)})
	time.Sleep(300 * time.Millisecond) // the message is now inside "sleep 1"

	start := time.Now()
	le.stop(t)
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Fatalf("Run returned after %s, before the step in flight finished", waited)
	}
	d, ok, err := ch.Get(q.Name, true)
	if err != nil || !ok || d.RoutingKey != "done.ana" {
		t.Fatalf("done.ana not published before shutdown: ok=%v err=%v", ok, err)
	}
	in, err := ch.QueueDeclarePassive(le.cfg.Pipelines[0].Queue, true, false, false, false, nil)
	if err != nil || in.Messages != 0 {
		t.Fatalf("input queue holds %d messages after the drain (err %v); want 0: it was acknowledged", in.Messages, err)
	}
}

// TestDeadLetterReplay: a step fails for good, the message is dead-lettered
// with its pipeline, step and reason; once the cause is mended, replaying it
// runs the failed step again and the chain completes.
func TestDeadLetterReplay(t *testing.T) {
	dir := t.TempDir()
	flag := dir + "/ready"
	os.WriteFile(dir+"/p.hcl", []byte(testBrokerHCL+`
message { username = string }
pipeline "needs_flag" {
  on = ["job.*"]
  exec "check" {
    command = ["test", "-f", "`+flag+`"]
  }
  publish "done" {
    when        = "routing_key == 'job.ana'" # a replay keeps its routing key
    routing_key = "done.{{ msg.username }}"
  }
}`), 0o644)
	le := startEngine(t, dir)
	conn := dialTest(t)
	ch, _ := conn.Channel()
	q, _ := ch.QueueDeclare("", false, true, true, false, nil)
	ch.QueueBind(q.Name, "done.*", le.exchange, false, nil)
	ch.PublishWithContext(context.Background(), le.exchange, "job.ana", false, false,
		amqp.Publishing{Body: []byte(`{"username":"ana"}`), MessageId: "job-1"})

	var dead []engine.DeadLetter
	deadline := time.Now().Add(10 * time.Second)
	for len(dead) == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		var err error
		if dead, err = engine.ListDead(conn, le.cfg); err != nil {
			t.Fatal(err)
		}
	}
	if len(dead) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dead))
	}
	d := dead[0]
	if d.ID != "job-1" || d.Pipeline != "needs_flag" || d.Step != "check" || d.RoutingKey != "job.ana" ||
		!strings.Contains(d.Reason, "test exited with status 1") {
		t.Fatalf("dead letter = %+v", d)
	}
	// Listing leaves it there.
	if again, _ := engine.ListDead(conn, le.cfg); len(again) != 1 {
		t.Fatalf("after list: %d dead letters, want 1", len(again))
	}

	os.WriteFile(flag, nil, 0o644)
	replayed, err := engine.ReplayDead(context.Background(), conn, le.cfg, le.svc.Store, nil, true)
	if err != nil || len(replayed) != 1 || replayed[0] != "needs_flag/job-1" {
		t.Fatalf("replay = %v, %v", replayed, err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		m, ok, err := ch.Get(q.Name, true)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			if m.RoutingKey != "done.ana" {
				t.Fatalf("got %s", m.RoutingKey)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the replayed message did not complete")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if left, _ := engine.ListDead(conn, le.cfg); len(left) != 0 {
		t.Fatalf("%d dead letters left after the replay", len(left))
	}
	if _, err := engine.ReplayDead(context.Background(), conn, le.cfg, le.svc.Store, []string{"nope"}, false); err == nil ||
		!strings.Contains(err.Error(), "no dead letter nope") {
		t.Fatalf("replay of an unknown id: %v", err)
	}
}

// TestRegistrationDeadline: a registration whose answer takes longer than
// its deadline gets exactly one completed.<q>, from on_timeout, naming what
// it waited for; the late answer is recorded, not published, and the admin
// report that follows completed.<q> is sent once.
func TestRegistrationDeadline(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(dir+"/p.hcl", []byte(testBrokerHCL+`
message {
  username  = string
  queuename = string
}
`+trackHCL("1s")+`pipeline "first" {
  on = ["request.*"]
  publish "verify" { routing_key = "verify.{{ msg.queuename }}" }
}
pipeline "slow" {
  on = ["verify.*"]
  exec "wait" { command = ["sleep", "2"] }
  publish "done" { routing_key = "completed.{{ msg.queuename }}" }
}
pipeline "report" {
  on = ["completed.*"]
  send_email "admin" {
    to      = ["admin@example.org"]
    subject = "{{ msg.username }}: {{ msg.success }}"
    body    = "{{ msg.errmsg }}"
  }
}`), 0o644)
	le := startEngine(t, dir)
	conn := dialTest(t)
	ch, _ := conn.Channel()
	q, _ := ch.QueueDeclare("", false, true, true, false, nil)
	ch.QueueBind(q.Name, "completed.*", le.exchange, false, nil)
	ch.PublishWithContext(context.Background(), le.exchange, "request.ana", false, false,
		amqp.Publishing{Body: []byte(`{"username":"ana","queuename":"ana"}`), MessageId: "req-1",
			CorrelationId: "form-42"})

	got := collect(t, ch, q.Name, 5*time.Second)
	var answers []engine.Message
	for _, d := range got {
		m, _ := engine.DecodeMessage(d.Body)
		answers = append(answers, m)
	}
	if len(answers) != 1 {
		t.Fatalf("%d completed messages, want exactly 1: %v", len(answers), answers)
	}
	first, corr := got[0].after, got[0].CorrelationId
	if first < time.Second || first > 2*time.Second {
		t.Errorf("the timeout answer came after %s, want about 1s", first)
	}
	errs, _ := answers[0]["errmsg"].([]any)
	if answers[0]["success"] != false || len(errs) != 1 ||
		errs[0] != "timeout: no answer within 1s; waiting for slow (verify.ana)" {
		t.Fatalf("answer = %v", answers[0])
	}
	if corr != "form-42" {
		t.Errorf("the timeout answer has correlation id %q, want the request's form-42", corr)
	}
	regs, err := le.svc.Store.Registrations(context.Background(), "ana")
	if err != nil || len(regs) != 1 {
		t.Fatalf("registrations = %v, %v", regs, err)
	}
	r := regs[0]
	if r.State != engine.RegTimedOut || !r.Answered || !strings.Contains(r.Late, "slow/done answered on completed.ana") {
		t.Fatalf("registration = %+v", r)
	}
	mails, _ := os.ReadDir(le.dir + "/var/outbox")
	if len(mails) != 1 {
		t.Fatalf("%d admin mails, want 1", len(mails))
	}
}

// TestQueueArgumentMismatch: a queue that exists with other arguments stops
// startup with one line naming the queue and the difference.
func TestQueueArgumentMismatch(t *testing.T) {
	conn := dialTest(t)
	id := fmt.Sprintf("qa%d", time.Now().UnixNano())
	t.Setenv("REGFLOW_EXCHANGE", "RegUsr-"+id)
	t.Setenv("REGFLOW_QUEUE_PREFIX", id+".")
	cfg, _, diags := engine.Load([]string{"../pipelines"}, actions.Registry())
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	ch, _ := conn.Channel()
	// get_next_uid_gid is declared single-active-consumer; an older one
	// without that argument is in the way.
	if _, err := ch.QueueDeclare(id+".get_next_uid_gid", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ch, _ := conn.Channel()
		for _, p := range cfg.Pipelines {
			ch.QueueDelete(p.Queue, false, false, false)
		}
		ch.QueueDelete(id+".RegUsr-"+id+".dead", false, false, false)
		ch.ExchangeDelete("RegUsr-"+id, false, false)
		ch.ExchangeDelete("RegUsr-"+id+".dead", false, false)
	}()
	store, _ := engine.OpenStore(t.TempDir() + "/db")
	defer store.Close()
	e := engine.NewEngine(cfg, amqpURL(), &engine.Services{Store: store, Root: t.TempDir(),
		Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := e.Run(ctx)
	want := "declare queue " + id + ".get_next_uid_gid of pipeline get_next_uid_gid: it already exists with " +
		"different settings: inequivalent arg 'x-single-active-consumer'"
	if err == nil || !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("Run = %v\nwant one line starting %q", err, want)
	}
}

// TestRegistrationAnsweredPerRequest: two requests for one username, the
// second sent while the first is still open (a double click), each get an
// answer of their own.
func TestRegistrationAnsweredPerRequest(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(dir+"/p.hcl", []byte(testBrokerHCL+`
message {
  username  = string
  queuename = string
  asked     = string
}
`+trackHCL("30s")+`pipeline "slow" {
  on = ["request.*"]
  exec "wait" { command = ["sleep", "0.5"] }
  publish "done" { routing_key = "completed.{{ msg.queuename }}" }
}`), 0o644)
	le := startEngine(t, dir)
	conn := dialTest(t)
	ch, _ := conn.Channel()
	q, _ := ch.QueueDeclare("", false, true, true, false, nil)
	ch.QueueBind(q.Name, "completed.*", le.exchange, false, nil)
	for _, id := range []string{"req-1", "req-2"} {
		ch.PublishWithContext(context.Background(), le.exchange, "request.ana", false, false,
			amqp.Publishing{Body: []byte(`{"username":"ana","queuename":"ana","asked":"` + id + `"}`), MessageId: id})
	}
	asked := map[string]int{}
	for start := time.Now(); time.Since(start) < 5*time.Second && len(asked) < 2; {
		d, ok, err := ch.Get(q.Name, true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		m, _ := engine.DecodeMessage(d.Body)
		asked[fmt.Sprint(m["asked"])]++
	}
	time.Sleep(300 * time.Millisecond) // room for a wrong third answer
	for {
		d, ok, _ := ch.Get(q.Name, true)
		if !ok {
			break
		}
		m, _ := engine.DecodeMessage(d.Body)
		asked[fmt.Sprint(m["asked"])]++
	}
	if asked["req-1"] != 1 || asked["req-2"] != 1 || len(asked) != 2 {
		t.Fatalf("answers per request = %v; want one each for req-1 and req-2", asked)
	}
}

// TestTopologyRepaired: an exchange deleted under a running regflow is
// declared again with its queues' bindings, and a deleted queue is
// declared again by a new session; messages flow again without a restart.
func TestTopologyRepaired(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(dir+"/p.hcl", []byte(testBrokerHCL+`
message {
  username  = string
  queuename = string
}
pipeline "answer" {
  on = ["request.*"]
  publish "done" { routing_key = "completed.{{ msg.queuename }}" }
}`), 0o644)
	le := startEngineWith(t, func(le *liveEngine) { le.eng.TopologyInterval = 200 * time.Millisecond }, dir)
	conn := dialTest(t)
	ch, _ := conn.Channel()

	// ask publishes a request for user and waits for its answer on a
	// queue bound now, since deleting the exchange removes bindings.
	ask := func(user string) error {
		q, err := ch.QueueDeclare("", false, true, true, false, nil)
		if err != nil {
			return err
		}
		defer ch.QueueDelete(q.Name, false, false, false)
		if err := ch.QueueBind(q.Name, "completed."+user, le.exchange, false, nil); err != nil {
			return err
		}
		body := fmt.Sprintf(`{"username":%q,"queuename":%q}`, user, user)
		if err := ch.PublishWithContext(context.Background(), le.exchange, "request."+user, false, false,
			amqp.Publishing{Body: []byte(body), MessageId: "req-" + user}); err != nil {
			return err
		}
		for start := time.Now(); time.Since(start) < 10*time.Second; time.Sleep(50 * time.Millisecond) {
			if _, ok, err := ch.Get(q.Name, true); err != nil || ok {
				return err
			}
		}
		return fmt.Errorf("no completed.%s within 10s", user)
	}

	if err := ch.ExchangeDelete(le.exchange, false, false); err != nil {
		t.Fatal(err)
	}
	if !le.waitLog("the exchange was missing", 5*time.Second) {
		t.Fatalf("the deleted exchange was not declared again; log:\n%s", le.logs.String())
	}
	if err := ask("ana"); err != nil {
		t.Fatalf("after the exchange was deleted: %v", err)
	}

	queue := le.cfg.Pipelines[0].Queue
	if _, err := ch.QueueDelete(queue, false, false, false); err != nil {
		t.Fatal(err)
	}
	if !le.waitLog("was queue "+queue+" deleted?", 5*time.Second) {
		t.Fatalf("the cancelled consumer went unnoticed; log:\n%s", le.logs.String())
	}
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		pch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		q, err := pch.QueueDeclarePassive(queue, true, false, false, false, nil)
		if err == nil {
			pch.Close()
			if q.Consumers > 0 {
				break
			}
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("queue %s has no consumer again after 10s (%v); log:\n%s", queue, err, le.logs.String())
		}
	}
	if err := ask("bo"); err != nil {
		t.Fatalf("after the queue was deleted: %v", err)
	}
}

// waitLog waits until the engine's log holds text.
func (le *liveEngine) waitLog(text string, within time.Duration) bool {
	for start := time.Now(); time.Since(start) < within; time.Sleep(20 * time.Millisecond) {
		if strings.Contains(le.logs.String(), text) {
			return true
		}
	}
	return false
}

// TestHopLimit: two pipelines that publish to each other's keys forever
// (a loop validate warns about but does not refuse) stop after MaxHops
// pipelines: the message is dead-lettered with a reason naming the loop.
func TestHopLimit(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(dir+"/p.hcl", []byte(testBrokerHCL+`
message {
  username  = string
  queuename = string
}
pipeline "ping" {
  on = ["ping.*"]
  publish "pong" { routing_key = "pong.{{ msg.queuename }}" }
}
pipeline "pong" {
  on = ["pong.*"]
  publish "ping" { routing_key = "ping.{{ msg.queuename }}" }
}`), 0o644)
	le := startEngine(t, dir)
	conn := dialTest(t)
	ch, _ := conn.Channel()
	q, _ := ch.QueueDeclare("", false, true, true, false, nil)
	ch.QueueBind(q.Name, "#", le.exchange, false, nil)
	ch.PublishWithContext(context.Background(), le.exchange, "ping.ana", false, false,
		amqp.Publishing{Body: []byte(`{"username":"ana","queuename":"ana"}`), MessageId: "loop-1"})

	var dead []engine.DeadLetter
	for start := time.Now(); len(dead) == 0; time.Sleep(100 * time.Millisecond) {
		if time.Since(start) > 30*time.Second {
			t.Fatal("the loop was not stopped within 30s")
		}
		dead, _ = engine.ListDead(conn, le.cfg)
	}
	if len(dead) != 1 || !strings.Contains(dead[0].Reason, "passed through 100 pipelines (x-regflow-hops)") {
		t.Fatalf("dead letters = %+v", dead)
	}
	time.Sleep(300 * time.Millisecond)
	seen := 0
	for {
		_, ok, err := ch.Get(q.Name, true)
		if err != nil || !ok {
			break
		}
		seen++
	}
	if seen != engine.MaxHops+1 {
		t.Errorf("%d messages on the exchange; want the request and %d published", seen, engine.MaxHops)
	}
}

// TestDeadlinePassedWhileDown: a registration whose deadline passed while
// regflow was down, and whose answer's cause is queued, gets the real
// answer: the overdue deadline waits until the queue was read.
func TestDeadlinePassedWhileDown(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(dir+"/p.hcl", []byte(testBrokerHCL+`
message {
  username  = string
  queuename = string
}
`+trackHCL("1m")+`pipeline "finish" {
  on = ["verify.*"]
  publish "done" { routing_key = "completed.{{ msg.queuename }}" }
}`), 0o644)
	conn := dialTest(t)
	ch, _ := conn.Channel()
	var q amqp.Queue
	startEngineWith(t, func(le *liveEngine) {
		// What a regflow that died left: the registration open and past
		// its deadline, and the message that answers it in the queue.
		msg := engine.Message{"username": "ana", "queuename": "ana"}
		past := time.Now().Add(-2 * time.Minute)
		if _, err := le.svc.Store.OpenRegistration(context.Background(), &engine.Registration{
			Tracker: "registration", ID: "ana", StartMessage: "req-1", OpenedAt: past,
			DeadlineAt: past.Add(time.Minute), WaitingFor: "finish (verify.ana)", Msg: msg}); err != nil {
			t.Fatal(err)
		}
		if err := engine.DeclareTopology(conn, le.cfg); err != nil {
			t.Fatal(err)
		}
		q, _ = ch.QueueDeclare("", false, true, true, false, nil)
		ch.QueueBind(q.Name, "completed.*", le.exchange, false, nil)
		ch.PublishWithContext(context.Background(), le.exchange, "verify.ana", false, false,
			amqp.Publishing{Body: []byte(`{"username":"ana","queuename":"ana"}`), MessageId: "verify-1"})
	}, dir)

	var answers []engine.Message
	for _, d := range collect(t, ch, q.Name, 8*time.Second) {
		m, _ := engine.DecodeMessage(d.Body)
		answers = append(answers, m)
	}
	if len(answers) != 1 || answers[0]["success"] != true {
		t.Fatalf("answers = %v; want the one success answer", answers)
	}
}

// tlsRelay listens for TLS on 127.0.0.1 with a certificate signed by a CA
// of the test's own and relays each connection to the test broker, so
// that regflow's amqps:// path meets a real RabbitMQ behind real TLS. It
// returns the relay's address, the CA file and the count of connections
// that completed the TLS handshake.
func tlsRelay(t *testing.T) (addr, ca string, handshakes *atomic.Int32) {
	t.Helper()
	ca, certFile, keyFile := tlsFiles(t)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	u, err := url.Parse(amqpURL())
	if err != nil {
		t.Fatal(err)
	}
	handshakes = new(atomic.Int32)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if c.(*tls.Conn).Handshake() != nil {
					return
				}
				handshakes.Add(1)
				b, err := net.Dial("tcp", u.Host)
				if err != nil {
					return
				}
				defer b.Close()
				go io.Copy(b, c)
				io.Copy(c, b)
			}()
		}
	}()
	return ln.Addr().String(), ca, handshakes
}

// TestEngineOverTLS runs the registration workflow over amqps://, the CA
// given as cacertfile, and checks that a certificate from an unknown CA
// is refused rather than trusted.
func TestEngineOverTLS(t *testing.T) {
	addr, ca, handshakes := tlsRelay(t)
	u, _ := url.Parse(amqpURL())
	tlsURL := fmt.Sprintf("amqps://%s@%s%s?cacertfile=%s", u.User.String(), addr, u.Path, url.QueryEscape(ca))

	if _, err := engine.Dial(fmt.Sprintf("amqps://%s@%s%s", u.User.String(), addr, u.Path), "test"); err == nil ||
		!strings.Contains(err.Error(), "certificate") {
		t.Fatalf("dial without the CA: %v; want a certificate error", err)
	} else if pw, ok := u.User.Password(); ok && strings.Contains(err.Error(), ":"+pw+"@") {
		t.Fatalf("the dial error shows the password: %v", err)
	}

	le := startEngineWith(t, func(le *liveEngine) {
		le.eng = engine.NewEngine(le.cfg, tlsURL, le.svc)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	reply, err := engine.Request(ctx, tlsURL, le.exchange, engine.Message{"username": "tls.user",
		"queuename": engine.QueueName("tls.user"), "email": "tls.user@example.org", "fullname": "Tee Ls",
		"reason": "integration test"})
	if err != nil {
		t.Fatalf("request over amqps: %v", err)
	}
	if reply["success"] != true || reply["uid"] != 10001 || reply["username"] != "tls.user" {
		t.Fatalf("completed over amqps = %v", reply)
	}
	// The engine's connection and the request's, both through TLS.
	if n := handshakes.Load(); n < 2 {
		t.Fatalf("%d TLS handshakes, want the engine's and the request's", n)
	}
}

// TestEngineStopsWhenStoreGone: the store's file removed under a running
// engine stops it with an error, instead of writing into a file nobody
// will read again and handing out ids afresh after a restart.
func TestEngineStopsWhenStoreGone(t *testing.T) {
	le := startEngine(t)
	if err := os.Remove(le.dir + "/var/regflow.db"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-le.done:
		le.cancel = nil // it stopped by itself
		// SQLite may have made a new, empty file meanwhile: gone or replaced.
		if !errors.Is(err, engine.ErrPermanent) ||
			!strings.Contains(err.Error(), "is gone") && !strings.Contains(err.Error(), "was replaced") {
			t.Fatalf("Run returned %v; want a permanent error saying the store is gone or replaced", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the engine kept running for 10s after its store was removed")
	}
}

// TestLateAnswerAfterNewRequest: a user's request times out and is
// answered so; the user asks again and the new request is answered; the
// first request's own answer, arriving late after that, is recorded and
// not published. Two requests, two answers.
func TestLateAnswerAfterNewRequest(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(dir+"/p.hcl", []byte(testBrokerHCL+`
message {
  username  = string
  queuename = string
  delay     = string
}
`+trackHCL("1s")+`pipeline "first" {
  on = ["request.*"]
  publish "verify" { routing_key = "verify.{{ msg.queuename }}" }
}
pipeline "slow" {
  on = ["verify.*"]
  exec "wait" { command = ["sleep", "{{ msg.delay }}"] }
  publish "done" { routing_key = "completed.{{ msg.queuename }}" }
}`), 0o644)
	le := startEngine(t, dir)
	conn := dialTest(t)
	ch, _ := conn.Channel()
	q, _ := ch.QueueDeclare("", false, true, true, false, nil)
	ch.QueueBind(q.Name, "completed.*", le.exchange, false, nil)
	publish := func(id, delay string) {
		ch.PublishWithContext(context.Background(), le.exchange, "request.ana", false, false,
			amqp.Publishing{Body: []byte(`{"username":"ana","queuename":"ana","delay":"` + delay + `"}`), MessageId: id})
	}
	publish("req-1", "2.5")
	time.Sleep(1300 * time.Millisecond) // past the first deadline
	publish("req-2", "0")

	var answers []string
	for _, d := range collect(t, ch, q.Name, 4*time.Second) {
		m, _ := engine.DecodeMessage(d.Body)
		answers = append(answers, fmt.Sprintf("success=%v errmsg=%v", m["success"], m["errmsg"]))
	}
	want := []string{
		"success=false errmsg=[timeout: no answer within 1s; waiting for slow (verify.ana)]",
		"success=true errmsg=[]",
	}
	if !reflect.DeepEqual(answers, want) {
		t.Fatalf("answers on completed.ana:\n%s\nwant the timeout and the second request's answer only:\n%s",
			strings.Join(answers, "\n"), strings.Join(want, "\n"))
	}
	regs, err := le.svc.Store.Registrations(context.Background(), "ana")
	if err != nil || len(regs) != 1 || regs[0].State != engine.RegDone ||
		!strings.Contains(regs[0].Late, "slow/done answered on completed.ana") {
		t.Fatalf("registrations = %+v, %v; want done, with the first request's answer noted as late", regs, err)
	}
}

//go:build fault

// These tests break things on purpose: regflow killed with -9, RabbitMQ
// restarted, the connection closed from the broker, the SMTP server down,
// the git repository locked. They run regflow as a separate process on
// the shipped pipelines, against the real broker, SMTP server and git.
package fault_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

var regflowBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "regflow-fault-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	regflowBin = filepath.Join(dir, "regflow")
	if out, err := exec.Command("go", "build", "-o", regflowBin, "../cmd/regflow").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build regflow: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

var (
	amqpURL     = envOr("REGFLOW_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
	smtpAddr    = envOr("REGFLOW_TEST_SMTP_ADDR", "127.0.0.1:1025")
	mailpitHTTP = "http://" + envOr("REGFLOW_TEST_MAILPIT_HTTP", "127.0.0.1:8025")
)

// world is one regflow process on the shipped pipelines, with an exchange,
// queues, a working directory and a mail domain of its own.
type world struct {
	t        *testing.T
	id       string
	exchange string
	prefix   string
	dir      string
	domain   string
	smtpURL  string
	mailAPI  string
	health   string
	proc     *exec.Cmd
	log      *os.File
	runs     int

	notified map[string]bool // users whose notify.<q> was seen
}

func newWorld(t *testing.T, smtpURL, mailAPI string) *world {
	t.Helper()
	id := fmt.Sprintf("f%d", time.Now().UnixNano()%1e10)
	w := &world{t: t, id: id, exchange: "RegUsr-" + id, prefix: id + ".", dir: t.TempDir(),
		domain: id + ".example.org", smtpURL: smtpURL, mailAPI: mailAPI, health: freeAddr(t)}
	conn := dial(t)
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclare(w.exchange, "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	// Durable watch queues survive a broker restart.
	for q, key := range map[string]string{w.queue("answers"): "completed.*", w.queue("notified"): "notify.*"} {
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if err := ch.QueueBind(q, key, w.exchange, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(w.cleanup)
	return w
}

func (w *world) queue(name string) string { return w.prefix + "watch." + name }

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func dial(t *testing.T) *amqp.Connection {
	t.Helper()
	var conn *amqp.Connection
	var err error
	for i := 0; i < 100; i++ {
		if conn, err = amqp.Dial(amqpURL); err == nil {
			return conn
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("RabbitMQ is not reachable (%v); run make test, which starts it", err)
	return nil
}

// start runs regflow and waits until it is consuming.
func (w *world) start() {
	w.t.Helper()
	w.runs++
	logPath := filepath.Join(w.dir, fmt.Sprintf("regflow-%d.log", w.runs))
	log, err := os.Create(logPath)
	if err != nil {
		w.t.Fatal(err)
	}
	w.log = log
	pipelines, _ := filepath.Abs("../pipelines")
	cmd := exec.Command(regflowBin, "run", pipelines, "--health-addr", w.health, "--drain-timeout", "5s")
	cmd.Dir = w.dir
	cmd.Env = append(os.Environ(),
		"REGFLOW_AMQP_URL="+amqpURL,
		"REGFLOW_EXCHANGE="+w.exchange,
		"REGFLOW_QUEUE_PREFIX="+w.prefix,
		"REGFLOW_SMTP_URL="+w.smtpURL,
		"REGFLOW_ADMIN_EMAIL=admin@"+w.domain,
		"REGFLOW_LISTSERV=listserv@"+w.domain,
	)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	w.proc = cmd
	deadline := time.Now().Add(30 * time.Second)
	for !w.ready() {
		if time.Now().After(deadline) {
			w.t.Fatalf("regflow did not become ready:\n%s", w.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (w *world) ready() bool {
	resp, err := http.Get("http://" + w.health + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// kill ends regflow with SIGKILL: no draining, no acknowledgements.
func (w *world) kill() {
	w.proc.Process.Signal(syscall.SIGKILL)
	w.proc.Wait()
	w.proc = nil
}

func (w *world) stop() {
	if w.proc == nil {
		return
	}
	w.proc.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- w.proc.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			w.t.Errorf("regflow exited with %v after SIGTERM", err)
		}
	case <-time.After(20 * time.Second):
		w.proc.Process.Kill()
		w.t.Errorf("regflow did not stop within 20s of SIGTERM")
	}
	w.proc = nil
}

func (w *world) logs() string {
	var b strings.Builder
	for i := 1; i <= w.runs; i++ {
		data, _ := os.ReadFile(filepath.Join(w.dir, fmt.Sprintf("regflow-%d.log", i)))
		fmt.Fprintf(&b, "--- regflow run %d\n%s", i, data)
	}
	return b.String()
}

func (w *world) cleanup() {
	w.stop()
	if w.t.Failed() {
		w.t.Logf("regflow logs:\n%s", w.logs())
	}
	conn, err := amqp.Dial(amqpURL)
	if err == nil {
		ch, _ := conn.Channel()
		for _, q := range []string{"get_next_uid_gid", "provision", "notify", "event_log", "RegUsr-" + w.id + ".dead",
			"watch.answers", "watch.notified"} {
			ch.QueueDelete(w.prefix+q, false, false, false)
		}
		ch.ExchangeDelete(w.exchange, false, false)
		ch.ExchangeDelete(w.exchange+".dead", false, false)
		conn.Close()
	}
	req, _ := http.NewRequest(http.MethodDelete, w.mailAPI+"/api/v1/search?query="+url.QueryEscape("to:"+w.domain), nil)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
}

func user(i int) string { return fmt.Sprintf("user%03d", i) }

// request publishes n registrations, persistent and confirmed, as the web
// form would, each with a message id of its own.
func (w *world) request(n int) {
	w.t.Helper()
	conn := dial(w.t)
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		w.t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		w.t.Fatal(err)
	}
	var confirms []*amqp.DeferredConfirmation
	for i := 0; i < n; i++ {
		u := user(i)
		body, _ := json.Marshal(map[string]string{"username": u, "queuename": u, "email": u + "@" + w.domain,
			"fullname": "User " + u, "reason": "fault test"})
		// Every other request comes without a message id, as from a
		// producer that sets none: its redelivery must resume it all the
		// same.
		id := w.id + "-" + u
		if i%2 == 1 {
			id = ""
		}
		dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), w.exchange, "request."+u, false, false,
			amqp.Publishing{Body: body, MessageId: id, DeliveryMode: amqp.Persistent,
				ContentType: "application/json"})
		if err != nil {
			w.t.Fatal(err)
		}
		confirms = append(confirms, dc)
	}
	for _, dc := range confirms {
		if !dc.Wait() {
			w.t.Fatal("a request was not confirmed")
		}
	}
}

// depth returns how many messages a queue holds, riding out a broker that
// is restarting.
func (w *world) depth(q string) int {
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		return -1
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return -1
	}
	info, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
	if err != nil {
		return -1
	}
	return info.Messages
}

// waitDepth waits until queue q holds at least n messages.
func (w *world) waitDepth(q string, n int, timeout time.Duration) {
	w.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		d := w.depth(q)
		if d >= n {
			return
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("%s holds %d messages after %s, want %d", q, d, timeout, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitNotified waits until n distinct users have their notify.<q>. The
// queue's depth would not do: a crash can publish a notification twice,
// and copies would count for users still waiting.
func (w *world) waitNotified(n int, timeout time.Duration) {
	w.t.Helper()
	if w.notified == nil {
		w.notified = map[string]bool{}
	}
	conn := dial(w.t)
	defer conn.Close()
	ch, _ := conn.Channel()
	deadline := time.Now().Add(timeout)
	for len(w.notified) < n {
		d, ok, err := ch.Get(w.queue("notified"), true)
		if err != nil {
			w.t.Fatal(err)
		}
		if !ok {
			if time.Now().After(deadline) {
				w.t.Fatalf("%d users notified after %s, want %d", len(w.notified), timeout, n)
			}
			time.Sleep(200 * time.Millisecond)
			continue
		}
		var m map[string]any
		json.Unmarshal(d.Body, &m)
		u, _ := m["username"].(string)
		w.notified[u] = true
	}
}

// answers drains the answers queue: every completed.<q> body by user.
func (w *world) answers() map[string][]map[string]any {
	w.t.Helper()
	conn := dial(w.t)
	defer conn.Close()
	ch, _ := conn.Channel()
	out := map[string][]map[string]any{}
	for {
		d, ok, err := ch.Get(w.queue("answers"), true)
		if err != nil {
			w.t.Fatal(err)
		}
		if !ok {
			return out
		}
		var m map[string]any
		json.Unmarshal(d.Body, &m)
		m["_message_id"] = d.MessageId
		u, _ := m["username"].(string)
		out[u] = append(out[u], m)
	}
}

// checkAnswers asserts the outcome every fault test must keep: each of n
// users answered, successfully, with a uid of its own, and never two
// different answers. A crash between the broker's confirmation and the
// journal can send an answer again; the copy is the same message, with
// the same message id, so a reader drops it. Copies are counted in the log.
func (w *world) checkAnswers(n int) {
	w.t.Helper()
	answers := w.answers()
	if len(answers) != n {
		w.t.Fatalf("%d users answered, want %d", len(answers), n)
	}
	uids := map[float64]string{}
	resent := 0
	for u, list := range answers {
		first := list[0]
		if first["success"] != true {
			w.t.Errorf("%s: %v", u, first)
			continue
		}
		for _, again := range list[1:] {
			resent++
			if again["_message_id"] != first["_message_id"] || again["uid"] != first["uid"] {
				w.t.Errorf("%s got two different answers: %v and %v", u, first, again)
			}
		}
		uid := first["uid"].(float64)
		if other, dup := uids[uid]; dup {
			w.t.Errorf("uid %v went to %s and %s", uid, other, u)
		}
		uids[uid] = u
	}
	w.t.Logf("%d users answered with %d distinct uids; %d answers were re-sent copies", len(answers), len(uids), resent)
}

type mailSummary struct {
	MessageID string
	Subject   string
	To        []struct{ Address string }
}

// mails returns the mails the SMTP server received for this world.
func (w *world) mails() []mailSummary {
	w.t.Helper()
	var all []mailSummary
	for start := 0; ; start += 500 {
		resp, err := http.Get(fmt.Sprintf("%s/api/v1/search?query=%s&start=%d&limit=500", w.mailAPI,
			url.QueryEscape("to:"+w.domain), start))
		if err != nil {
			w.t.Fatal(err)
		}
		var page struct{ Messages []mailSummary }
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err := json.Unmarshal(body, &page); err != nil {
			w.t.Fatalf("mailpit search: %v: %s", err, body)
		}
		all = append(all, page.Messages...)
		if len(page.Messages) < 500 {
			return all
		}
	}
}

// checkWelcomes asserts exactly one welcome mail per user: one Message-ID.
// A crash after the SMTP server accepted a mail and before the journal
// recorded it sends the mail again with the same Message-ID, which mail
// systems use to drop the copy; such copies are counted in the log.
func (w *world) checkWelcomes(n int) {
	w.t.Helper()
	ids := map[string]map[string]bool{}
	copies := 0
	for _, m := range w.mails() {
		u, ok := strings.CutPrefix(m.Subject, "Your research computing account ")
		if !ok {
			continue
		}
		if ids[u] == nil {
			ids[u] = map[string]bool{}
		}
		if ids[u][m.MessageID] {
			copies++
		}
		ids[u][m.MessageID] = true
	}
	missing, twice := 0, 0
	for i := 0; i < n; i++ {
		switch len(ids[user(i)]) {
		case 0:
			missing++
		case 1:
		default:
			twice++
		}
	}
	w.t.Logf("welcome mails: %d users; %d without; %d with two different mails; %d re-sent copies",
		len(ids), missing, twice, copies)
	if missing > 0 || twice > 0 {
		w.t.Errorf("welcome mails: %d users got none and %d two different ones; want exactly one each",
			missing, twice)
	}
}

func rabbitmqctl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("rabbitmqctl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

const load = 300

// TestKill9 kills regflow with SIGKILL while registrations are in flight
// and starts it again: every user is answered once, with a uid of its own,
// and gets one welcome mail.
func TestKill9(t *testing.T) {
	w := newWorld(t, "smtp://"+smtpAddr+"?tls=none", mailpitHTTP)
	w.start()
	w.request(load)
	w.waitDepth(w.queue("answers"), 30, 60*time.Second)
	w.kill()
	w.start()
	w.waitNotified(load, 180*time.Second)
	w.stop()
	w.checkAnswers(load)
	w.checkWelcomes(load)
}

// TestBrokerRestart restarts RabbitMQ in the middle of the same load (C13:
// registrations caught between two steps finish once the broker is back,
// with no uid allocated twice and no mail sent twice).
func TestBrokerRestart(t *testing.T) {
	w := newWorld(t, "smtp://"+smtpAddr+"?tls=none", mailpitHTTP)
	w.start()
	w.request(load)
	w.waitDepth(w.queue("answers"), 30, 60*time.Second)
	rabbitmqctl(t, "stop_app")
	time.Sleep(time.Second)
	if w.ready() {
		t.Error("regflow reports ready while the broker is down")
	}
	rabbitmqctl(t, "start_app")
	rabbitmqctl(t, "await_startup")
	w.waitNotified(load, 180*time.Second)
	if !w.ready() {
		t.Error("regflow is not ready after the broker came back")
	}
	w.stop()
	w.checkAnswers(load)
	w.checkWelcomes(load)
}

// TestForcedClose closes regflow's connection from the broker side, as the
// management UI's "force close" does (C14): regflow reports not-ready,
// reconnects, declares its topology again and answers a request sent
// afterwards.
func TestForcedClose(t *testing.T) {
	w := newWorld(t, "smtp://"+smtpAddr+"?tls=none", mailpitHTTP)
	w.start()
	marker := fmt.Sprintf("pid %d", w.proc.Process.Pid)
	closed := 0
	for _, line := range strings.Split(rabbitmqctl(t, "-q", "list_connections", "pid", "client_properties"), "\n") {
		if strings.Contains(line, marker) {
			pid := strings.Fields(line)[0]
			rabbitmqctl(t, "close_connection", pid, "closed by the fault test")
			closed++
		}
	}
	if closed == 0 {
		t.Fatalf("no connection of regflow (%s) found", marker)
	}
	notReady := false
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline) && !notReady; {
		notReady = !w.ready()
		time.Sleep(5 * time.Millisecond)
	}
	if !notReady {
		t.Error("regflow never reported not-ready after its connection was closed")
	}
	for deadline := time.Now().Add(30 * time.Second); !w.ready(); {
		if time.Now().After(deadline) {
			t.Fatal("regflow did not reconnect within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	w.request(1)
	w.waitNotified(1, 30*time.Second)
	w.stop()
	w.checkAnswers(1)
	if !strings.Contains(w.logs(), "broker connection lost; reconnecting") {
		t.Error("the reconnect was not logged")
	}
}

// mailpitServer is a Mailpit of the test's own, which it can stop and
// start again; its messages live in a file, so they survive that.
type mailpitServer struct {
	t    *testing.T
	smtp string
	http string
	db   string
	cmd  *exec.Cmd
}

func startOwnMailpit(t *testing.T) *mailpitServer {
	bin, err := exec.LookPath("mailpit")
	if err != nil {
		gopath, _ := exec.Command("go", "env", "GOPATH").Output()
		bin = filepath.Join(strings.TrimSpace(string(gopath)), "bin", "mailpit")
	}
	m := &mailpitServer{t: t, smtp: freeAddr(t), http: freeAddr(t), db: filepath.Join(t.TempDir(), "mailpit.db")}
	m.start(bin)
	t.Cleanup(m.stop)
	return m
}

func (m *mailpitServer) start(bin string) {
	m.cmd = exec.Command(bin, "--disable-version-check", "--smtp", m.smtp, "--listen", m.http,
		"--database", m.db, "--smtp-auth-accept-any", "--smtp-auth-allow-insecure")
	var out bytes.Buffer
	m.cmd.Stdout, m.cmd.Stderr = &out, &out
	if err := m.cmd.Start(); err != nil {
		m.t.Fatalf("start mailpit: %v", err)
	}
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", m.smtp); err == nil {
			c.Close()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	m.t.Fatalf("mailpit did not start:\n%s", out.String())
}

func (m *mailpitServer) stop() {
	if m.cmd != nil {
		m.cmd.Process.Signal(syscall.SIGTERM)
		m.cmd.Wait()
		m.cmd = nil
	}
}

// TestSMTPOutage takes the SMTP server away while registrations run and
// brings it back: registrations complete, and every mail arrives once.
func TestSMTPOutage(t *testing.T) {
	mp := startOwnMailpit(t)
	bin := mp.cmd.Path
	w := newWorld(t, "smtp://"+mp.smtp+"?tls=none", "http://"+mp.http)
	w.start()
	mp.stop()
	const n = 30
	w.request(n)
	time.Sleep(5 * time.Second)
	if d := w.depth(w.queue("notified")); d != 0 {
		t.Fatalf("%d users were told while the SMTP server was down", d)
	}
	mp.start(bin)
	w.waitNotified(n, 120*time.Second)
	w.stop()
	w.checkAnswers(n)
	w.checkWelcomes(n)
	if !strings.Contains(w.logs(), "step failed, retrying") {
		t.Error("no retry was logged during the outage")
	}
}

// TestGitLocked holds the users repository's index lock, as another git
// process would: with the lock released soon, the commit step retries and
// succeeds; held for good, it fails with a clear errmsg after its attempts
// and the registration is still answered.
func TestGitLocked(t *testing.T) {
	w := newWorld(t, "smtp://"+smtpAddr+"?tls=none", mailpitHTTP)
	repo := filepath.Join(w.dir, "var", "users")
	if out, err := exec.Command("git", "init", "-q", "-b", "main", repo).CombinedOutput(); err != nil {
		t.Fatalf("git init: %v %s", err, out)
	}
	lock := filepath.Join(repo, ".git", "index.lock")
	os.WriteFile(lock, nil, 0o644)
	w.start()
	w.request(3)
	var once sync.Once
	time.AfterFunc(700*time.Millisecond, func() { once.Do(func() { os.Remove(lock) }) })
	w.waitNotified(3, 60*time.Second)
	w.checkAnswers(3)
	log, _ := exec.Command("git", "-C", repo, "log", "--format=%s").Output()
	if n := strings.Count(string(log), "\n"); n != 3 {
		t.Fatalf("%d commits after the lock was released, want 3:\n%s", n, log)
	}

	os.WriteFile(lock, nil, 0o644)
	defer os.Remove(lock)
	conn := dial(t)
	defer conn.Close()
	ch, _ := conn.Channel()
	body := `{"username":"locked","queuename":"locked","email":"locked@` + w.domain + `","fullname":"Lock Ed"}`
	ch.PublishWithContext(context.Background(), w.exchange, "request.locked", false, false,
		amqp.Publishing{Body: []byte(body), MessageId: w.id + "-locked", DeliveryMode: amqp.Persistent})
	w.waitDepth(w.queue("answers"), 1, 60*time.Second)
	answers := w.answers()
	a := answers["locked"]
	if len(a) != 1 {
		t.Fatalf("answers: %v", answers)
	}
	errs, _ := a[0]["errmsg"].([]any)
	if a[0]["success"] != false || len(errs) != 1 ||
		!strings.HasPrefix(errs[0].(string), "record: commit: the repository is locked by another git process") {
		t.Fatalf("answer = %v", a[0])
	}
}

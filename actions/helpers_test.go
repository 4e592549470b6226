package actions_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/mail"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"

	"regflow/actions"
	"regflow/engine"
)

// preamble is the configuration every test pipeline is loaded with: the
// broker, the mail sender and the registration message fields, as in
// pipelines/registration.hcl.
const preamble = `
broker {
  exchange = "RegUsr"
}

mail {
  from = "Research Computing <rc-accounts@example.edu>"
}

message {
  username  = string
  queuename = string
  email     = string
  fullname  = string
  reason    = string
  uid       = integer(0, 4294967294)
  gid       = integer(0, 4294967294)
  notified  = bool
}
`

// loadConfig writes preamble and pipelines into a file and loads it the
// way regflow run does, failing the test on any diagnostic.
func loadConfig(t *testing.T, pipelines string) *engine.Config {
	t.Helper()
	cfg, diags := load(t, pipelines)
	if diags.HasErrors() {
		t.Fatalf("load: %s", diagText(diags))
	}
	return cfg
}

// hasDiag reports whether diags hold one with the summary.
func hasDiag(diags hcl.Diagnostics, summary string) bool {
	for _, d := range diags {
		if d.Summary == summary {
			return true
		}
	}
	return false
}

// loadDiags loads pipelines that must not load and returns the diagnostics.
func loadDiags(t *testing.T, pipelines string) hcl.Diagnostics {
	t.Helper()
	cfg, diags := load(t, pipelines)
	if !diags.HasErrors() || cfg != nil {
		t.Fatalf("load succeeded; want a diagnostic")
	}
	return diags
}

func load(t *testing.T, pipelines string) (*engine.Config, hcl.Diagnostics) {
	t.Helper()
	return loadRaw(t, preamble+pipelines)
}

// loadRaw loads text as the whole configuration, without the preamble.
func loadRaw(t *testing.T, text string) (*engine.Config, hcl.Diagnostics) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.hcl"), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, diags := engine.Load([]string{dir}, actions.Registry())
	return cfg, diags
}

// diagText renders diagnostics as "Summary: Detail" lines.
func diagText(diags hcl.Diagnostics) string {
	lines := make([]string, len(diags))
	for i, d := range diags {
		lines[i] = d.Summary + ": " + d.Detail
	}
	return strings.Join(lines, "\n")
}

// testEnv is one loaded configuration with its own store, outbox, root
// directory and recording publisher.
type testEnv struct {
	t      *testing.T
	cfg    *engine.Config
	svc    *engine.Services
	runner *engine.Runner
	pub    *recorder
	root   string
	outbox string
}

// messageSeq numbers test messages, so that no two share a message id
// even when two environments share a store and its journal.
var messageSeq atomic.Int64

// newEnv loads pipelines and builds services the way regflow run does,
// with every effect under a temporary directory. opts adjust the services
// before the runner is built.
func newEnv(t *testing.T, pipelines string, opts ...func(*engine.Services)) *testEnv {
	t.Helper()
	cfg := loadConfig(t, pipelines)
	root := t.TempDir()
	store, err := engine.OpenStore(filepath.Join(root, "regflow.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	e := &testEnv{t: t, cfg: cfg, pub: &recorder{}, root: root, outbox: filepath.Join(root, "outbox")}
	e.svc = &engine.Services{
		Store:     store,
		Publisher: e.pub,
		Mailer:    &engine.Outbox{Dir: e.outbox},
		Root:      root,
		Logger:    slog.New(slog.DiscardHandler),
	}
	for _, o := range opts {
		o(e.svc)
	}
	e.runner = engine.NewRunner(cfg, e.svc)
	return e
}

// withMailer makes the services send mail through m.
func withMailer(m engine.Mailer) func(*engine.Services) {
	return func(s *engine.Services) { s.Mailer = m }
}

// pipeline returns the named pipeline of the configuration.
func (e *testEnv) pipeline(name string) *engine.Pipeline {
	e.t.Helper()
	for _, p := range e.cfg.Pipelines {
		if p.Name == name {
			return p
		}
	}
	e.t.Fatalf("no pipeline %q", name)
	return nil
}

// run hands body to the pipeline on key as a new message: every call has
// its own message id, so the actions run instead of replaying the journal.
func (e *testEnv) run(pipeline, key string, body any) *engine.Result {
	e.t.Helper()
	res, err := e.handle(pipeline, key, body)
	if err != nil {
		e.t.Fatalf("handle %s: %v", key, err)
	}
	return res
}

// handle is run without failing the test, for use from goroutines.
func (e *testEnv) handle(pipeline, key string, body any) (*engine.Result, error) {
	id := fmt.Sprintf("%s#%d", e.t.Name(), messageSeq.Add(1))
	return e.deliver(pipeline, &engine.Delivery{RoutingKey: key, MessageID: id, Body: encode(e.t, body)})
}

// deliver hands a delivery to the pipeline as the consumer would.
func (e *testEnv) deliver(pipeline string, d *engine.Delivery) (*engine.Result, error) {
	return e.runner.Handle(context.Background(), e.pipeline(pipeline), d)
}

// encode returns body as JSON; a string or []byte is taken as JSON already.
func encode(t *testing.T, body any) []byte {
	switch b := body.(type) {
	case string:
		return []byte(b)
	case []byte:
		return b
	}
	data, err := json.Marshal(body)
	if err != nil {
		t.Errorf("encode body: %v", err)
	}
	return data
}

// request returns a registration request for user; kv pairs replace or
// add fields (a nil value removes one).
func request(user string, kv ...any) map[string]any {
	m := map[string]any{
		"username":  user,
		"queuename": engine.QueueName(user),
		"email":     user + "@example.org",
		"fullname":  "Test User",
		"reason":    "thesis",
	}
	for i := 0; i+1 < len(kv); i += 2 {
		k := kv[i].(string)
		if kv[i+1] == nil {
			delete(m, k)
			continue
		}
		m[k] = kv[i+1]
	}
	return m
}

// stepOf returns the result of the named step.
func stepOf(t *testing.T, res *engine.Result, name string) engine.StepResult {
	t.Helper()
	for _, s := range res.Steps {
		if s.Step == name {
			return s
		}
	}
	names := make([]string, len(res.Steps))
	for i, s := range res.Steps {
		names[i] = s.Step
	}
	t.Fatalf("step %q did not run; steps: %v (refused: %q)", name, names, res.Refused)
	return engine.StepResult{}
}

// wantOK asserts that the step succeeded and returns its result.
func wantOK(t *testing.T, res *engine.Result, name string) engine.StepResult {
	t.Helper()
	s := stepOf(t, res, name)
	if s.Status != engine.StepOK {
		t.Fatalf("step %s: status %s, error %q; want ok", name, s.Status, s.Error)
	}
	return s
}

// wantFailed asserts that the step failed with exactly the error want.
// wantOutcome checks the step against a table's wantErr: ok when it is
// empty, else failed with exactly that error. It reports whether the step
// was to fail.
func wantOutcome(t *testing.T, res *engine.Result, name, wantErr string) bool {
	t.Helper()
	if wantErr == "" {
		wantOK(t, res, name)
		return false
	}
	wantFailed(t, res, name, wantErr)
	return true
}

func wantFailed(t *testing.T, res *engine.Result, name, want string) engine.StepResult {
	t.Helper()
	s := stepOf(t, res, name)
	if s.Status != engine.StepFailed {
		t.Fatalf("step %s: status %s (note %q); want failed with %q", name, s.Status, s.Note, want)
	}
	if s.Error != want {
		t.Fatalf("step %s error:\n got %q\nwant %q", name, s.Error, want)
	}
	return s
}

// ran returns the names of the steps that ran, in order.
func ran(res *engine.Result) []string {
	var names []string
	for _, s := range res.Steps {
		names = append(names, s.Step)
	}
	return names
}

// count returns the single integer a query yields.
func count(t *testing.T, s *engine.Store, query string, args ...any) int {
	t.Helper()
	var n int
	if err := s.DB().QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// recorder is a Publisher that keeps what it was given. When err is set,
// Publish returns it and keeps nothing.
type recorder struct {
	mu   sync.Mutex
	msgs []*engine.Outgoing
	err  error
}

func (r *recorder) Publish(ctx context.Context, m *engine.Outgoing) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.msgs = append(r.msgs, m)
	return nil
}

func (r *recorder) all() []*engine.Outgoing {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*engine.Outgoing(nil), r.msgs...)
}

// decodeJSON decodes data into a generic value, numbers as float64.
func decodeJSON(t *testing.T, data []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("decode %q: %v", data, err)
	}
	return m
}

// sameJSON asserts that got and want encode to the same JSON value.
func sameJSON(t *testing.T, what string, got, want any) {
	t.Helper()
	g, w := roundTrip(t, got), roundTrip(t, want)
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s:\n got %s\nwant %s", what, mustJSON(g), mustJSON(w))
	}
}

func roundTrip(t *testing.T, v any) any {
	t.Helper()
	var out any
	if err := json.Unmarshal(mustJSON(v), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// keys returns the sorted keys of m.
func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// token returns a random hex string, to keep names of parallel runs apart.
func token(t *testing.T) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// outboxFiles returns the .eml files in dir; a missing dir has none.
func outboxFiles(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.eml"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	return files
}

// email is a parsed RFC 5322 message with its body decoded.
type email struct {
	Header mail.Header
	Body   string // transfer encoding undone, CRLF turned into LF
}

// readEML parses an outbox file with net/mail.
func readEML(t *testing.T, path string) email {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("%s is not RFC 5322: %v", path, err)
	}
	var body io.Reader = m.Body
	switch strings.ToLower(m.Header.Get("Content-Transfer-Encoding")) {
	case "quoted-printable":
		body = quotedprintable.NewReader(m.Body)
	case "", "7bit", "8bit":
	default:
		t.Fatalf("unexpected transfer encoding %q", m.Header.Get("Content-Transfer-Encoding"))
	}
	text, err := io.ReadAll(body)
	if err != nil {
		t.Fatal(err)
	}
	return email{Header: m.Header, Body: strings.ReplaceAll(string(text), "\r\n", "\n")}
}

// subject returns the decoded Subject header.
func (m email) subject(t *testing.T) string {
	t.Helper()
	s, err := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
	if err != nil {
		t.Fatalf("subject %q: %v", m.Header.Get("Subject"), err)
	}
	return s
}

// addresses returns the bare addresses of an address header.
func (m email) addresses(t *testing.T, header string) []string {
	t.Helper()
	list, err := m.Header.AddressList(header)
	if err != nil {
		t.Fatalf("%s: %v", header, err)
	}
	out := make([]string, len(list))
	for i, a := range list {
		out[i] = a.Address
	}
	return out
}

// hermeticGit keeps the user's and the system's git configuration out of
// the test, so that git behaves the same on every machine.
func hermeticGit(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatal("git is not installed; the git_commit tests run real git")
	}
	t.Setenv("GIT_CONFIG_GLOBAL", os.DevNull)
	t.Setenv("GIT_CONFIG_NOSYSTEM", "1")
}

// git runs git in dir as a test user and returns its trimmed output.
func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	return strings.TrimSpace(string(gitRaw(t, dir, args...)))
}

// gitRaw runs git in dir and returns its standard output unchanged.
func gitRaw(t *testing.T, dir string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(),
		"GIT_AUTHOR_NAME=Test", "GIT_AUTHOR_EMAIL=test@example.org",
		"GIT_COMMITTER_NAME=Test", "GIT_COMMITTER_EMAIL=test@example.org")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

// envOr returns the environment variable name, or def when it is unset.
func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// mailpit is the SMTP server with an HTTP API that the integration tests
// send to. Every test uses its own recipients, so runs in parallel and
// messages left from earlier runs do not disturb it.
type mailpit struct {
	smtp string // host:port
	api  string // http://host:port
}

// needMailpit returns the Mailpit server, failing the test when it is not
// reachable: the integration tests are never skipped.
func needMailpit(t *testing.T) *mailpit {
	t.Helper()
	m := &mailpit{
		smtp: envOr("REGFLOW_TEST_SMTP_ADDR", "127.0.0.1:1025"),
		api:  envOr("REGFLOW_TEST_MAILPIT_HTTP", "127.0.0.1:8025"),
	}
	if !strings.Contains(m.api, "://") {
		m.api = "http://" + m.api
	}
	conn, err := net.DialTimeout("tcp", m.smtp, 3*time.Second)
	if err == nil {
		conn.Close()
		var info struct{ Version string }
		err = m.get("/api/v1/info", &info)
	}
	if err != nil {
		t.Fatalf("Mailpit is not reachable (SMTP %s, HTTP %s): %v\n"+
			"The integration tests need it: run `make test`, which starts RabbitMQ and Mailpit, "+
			"or `scripts/services.sh start mailpit`.", m.smtp, m.api, err)
	}
	return m
}

// mailer returns an SMTP mailer for the server; query holds the URL's
// parameters, such as "tls=none".
func (m *mailpit) mailer(t *testing.T, query string) engine.Mailer {
	t.Helper()
	cfg, err := engine.ParseSMTPURL("smtp://" + m.smtp + "?" + query)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Timeout = 10 * time.Second
	mailer, err := engine.NewSMTP(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return mailer
}

type mailpitAddress struct{ Name, Address string }

// mailpitMessage is a message as Mailpit received it.
type mailpitMessage struct {
	ID        string
	MessageID string
	From      mailpitAddress
	To        []mailpitAddress
	Cc        []mailpitAddress
	Bcc       []mailpitAddress
	Subject   string
	Text      string
}

func (m *mailpit) get(path string, v any) error {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(m.api + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// search returns the ids of the messages sent to recipient.
func (m *mailpit) search(t *testing.T, recipient string) []string {
	t.Helper()
	var res struct {
		Messages []struct{ ID string }
	}
	q := url.Values{"query": {`to:"` + recipient + `"`}}
	if err := m.get("/api/v1/search?"+q.Encode(), &res); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(res.Messages))
	for i, msg := range res.Messages {
		ids[i] = msg.ID
	}
	return ids
}

// waitFor waits until Mailpit holds n messages to recipient and returns
// them, and deletes them when the test ends.
func (m *mailpit) waitFor(t *testing.T, recipient string, n int) []mailpitMessage {
	t.Helper()
	var ids []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ids = m.search(t, recipient)
		if len(ids) >= n || time.Now().After(deadline) {
			break
		}
	}
	t.Cleanup(func() { m.delete(ids) })
	if len(ids) != n {
		t.Fatalf("Mailpit holds %d messages to %s; want %d", len(ids), recipient, n)
	}
	out := make([]mailpitMessage, len(ids))
	for i, id := range ids {
		if err := m.get("/api/v1/message/"+id, &out[i]); err != nil {
			t.Fatal(err)
		}
		out[i].Text = strings.ReplaceAll(out[i].Text, "\r\n", "\n")
	}
	return out
}

func (m *mailpit) delete(ids []string) {
	if len(ids) == 0 {
		return
	}
	body, _ := json.Marshal(map[string][]string{"IDs": ids})
	req, err := http.NewRequest(http.MethodDelete, m.api+"/api/v1/messages", bytes.NewReader(body))
	if err != nil {
		return
	}
	req.Header.Set("Content-Type", "application/json")
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req); err == nil {
		resp.Body.Close()
	}
}

// addressesOf returns the bare addresses of a Mailpit address list.
func addressesOf(list []mailpitAddress) []string {
	out := make([]string, len(list))
	for i, a := range list {
		out[i] = a.Address
	}
	return out
}

// logBuffer collects log lines written from any goroutine.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// withLogs makes the services log as text into b.
func withLogs(b *logBuffer) func(*engine.Services) {
	return func(s *engine.Services) { s.Logger = slog.New(slog.NewTextHandler(b, nil)) }
}

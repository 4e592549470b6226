package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	ctyjson "github.com/zclconf/go-cty/cty/json"
)

// PipelineTest is one test block of a *_test.hcl file: messages sent
// first, the message under test, canned results for steps, and what must
// follow.
type PipelineTest struct {
	Name   string
	Range  hcl.Range
	Setup  []TestMessage
	Input  TestMessage
	Stubs  map[string]*Stub
	Expect TestExpect
}

// TestMessage is a message a test sends.
type TestMessage struct {
	Key  string
	Body []byte
}

// TestExpect is what a test checks after its message ran.
type TestExpect struct {
	Publish   []ExpectPublish
	NoPublish []string
	Pipelines []ExpectPipeline
	Steps     []ExpectStep
	Mails     []ExpectMail
	MailCount *int
	MailRange hcl.Range // where mails is set
	Range     hcl.Range
}

// ExpectPublish: a message was published on Key with these field values.
type ExpectPublish struct {
	Key    string
	Fields Message
	Range  hcl.Range
}

// ExpectPipeline: the pipeline's first result has this status and errmsg.
type ExpectPipeline struct {
	Name   string
	Status string   // ok, failed, refused, skipped; "" unchecked
	Errmsg []string // nil unchecked
	Range  hcl.Range
}

// ExpectStep: a step's outcome; Note and Error are excerpts.
type ExpectStep struct {
	Ref                 string // pipeline/step
	Status, Note, Error string
	Range               hcl.Range
}

// ExpectMail: a mail went to these recipients with this subject, and its
// body contains Body.
type ExpectMail struct {
	To            []string
	Subject, Body string
	Range         hcl.Range
}

// TestFiles lists the *_test.hcl files in paths.
func TestFiles(paths []string) ([]string, error) {
	var files []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			if strings.HasSuffix(p, "_test.hcl") {
				files = append(files, p)
			}
			continue
		}
		m, _ := filepath.Glob(filepath.Join(p, "*_test.hcl"))
		files = append(files, m...)
	}
	sort.Strings(files)
	return files, nil
}

// LoadTests parses the test files against cfg: stubbed and expected
// pipelines and steps must exist. It reports every problem.
func LoadTests(files []string, cfg *Config) ([]*PipelineTest, Sources, hcl.Diagnostics) {
	parser := hclparse.NewParser()
	var tests []*PipelineTest
	var diags hcl.Diagnostics
	seen := map[string]hcl.Range{} // test names, across the files
	for _, name := range files {
		f, d := parser.ParseHCLFile(name)
		diags = append(diags, d...)
		if f == nil {
			continue
		}
		body := f.Body.(*hclsyntax.Body)
		tl := &testLoader{cfg: cfg, dec: &decoder{ctx: evalContext(name), src: f.Bytes}, dir: filepath.Dir(name)}
		for n, a := range body.Attributes {
			tl.errorf(a.NameRange, "Unexpected argument", "Test files hold test blocks only; %q is not one.", n)
		}
		for _, b := range body.Blocks {
			if b.Type != "test" || len(b.Labels) != 1 {
				detail := "Test files hold blocks of the form test \"what it checks\" { … }."
				if s := Suggest(b.Type, []string{"test"}); s != "" && b.Type != "test" {
					detail += fmt.Sprintf(" Did you mean %q?", s)
				}
				tl.errorf(b.TypeRange, "Unexpected block", "%s", detail)
				continue
			}
			// Names are compared before the test is read, so that a
			// duplicate is reported along with what else is wrong in it.
			name := b.Labels[0]
			if first, dup := seen[name]; dup {
				tl.errorf(b.LabelRanges[0], "Duplicate test", "A test named %q was already defined at %s.",
					name, at(first))
			} else {
				seen[name] = b.LabelRanges[0]
			}
			if t := tl.test(b); t != nil {
				tests = append(tests, t)
			}
		}
		diags = append(diags, tl.diags...)
	}
	sortDiags(diags)
	return tests, parser.Files(), diags
}

type testLoader struct {
	cfg   *Config
	dec   *decoder
	dir   string
	diags hcl.Diagnostics
}

func (tl *testLoader) errorf(rng hcl.Range, summary, format string, args ...any) {
	tl.diags = append(tl.diags, diag(rng, summary, fmt.Sprintf(format, args...)))
}

var (
	testAttrs   = []string{"key", "message", "body", "message_file"}
	testBlocks  = []string{"setup", "stub", "expect"}
	expectAttrs = []string{"no_publish", "mails"}
	expectBlock = []string{"publish", "pipeline", "step", "mail"}
)

func (tl *testLoader) test(b *hclsyntax.Block) *PipelineTest {
	before := len(tl.diags)
	t := &PipelineTest{Name: b.Labels[0], Range: hcl.RangeBetween(b.TypeRange, b.LabelRanges[0]),
		Stubs: map[string]*Stub{}}
	tl.only(b.Body, testAttrs, testBlocks)
	t.Input = tl.message(b.Body, b.TypeRange)
	expected := false
	for _, blk := range b.Body.Blocks {
		switch blk.Type {
		case "setup":
			tl.only(blk.Body, testAttrs, nil)
			t.Setup = append(t.Setup, tl.message(blk.Body, blk.TypeRange))
		case "stub":
			if ref, ok := tl.stepRef(blk); ok {
				t.Stubs[ref] = tl.stub(blk)
			}
		case "expect":
			tl.expect(blk, &t.Expect)
			expected = true
		}
	}
	if !expected {
		tl.errorf(t.Range, "Missing expect", "Test %q has no expect block, so it checks nothing: "+
			"add one naming what the test must see.", t.Name)
	}
	if len(tl.diags) > before {
		return nil
	}
	return t
}

// only reports attributes and blocks of body that are not allowed.
func (tl *testLoader) only(body *hclsyntax.Body, attrs, blocks []string) {
	for _, name := range sortedKeys(body.Attributes) {
		if !contains(attrs, name) {
			tl.errorf(body.Attributes[name].NameRange, "Unsupported argument",
				"An argument named %q is not expected here.%s", name, suggestText(name, attrs))
		}
	}
	for _, blk := range body.Blocks {
		if !contains(blocks, blk.Type) {
			tl.errorf(blk.TypeRange, "Unsupported block type",
				"Blocks of type %q are not expected here.%s", blk.Type, suggestText(blk.Type, blocks))
		}
	}
}

// suggestOr is suggestText, or the list of candidates when none is near.
func suggestOr(name string, candidates []string) string {
	if s := suggestText(name, candidates); s != "" {
		return s
	}
	return " Name one of " + quoteList(candidates) + "."
}

func suggestText(name string, candidates []string) string {
	if s := Suggest(name, candidates); s != "" {
		return fmt.Sprintf(" Did you mean %q?", s)
	}
	return " Expected " + quoteList(candidates) + "."
}

// message reads key and one of message, body or message_file.
func (tl *testLoader) message(body *hclsyntax.Body, where hcl.Range) TestMessage {
	var m TestMessage
	if a, ok := body.Attributes["key"]; ok {
		s, d := tl.dec.str(a.Expr, "key")
		tl.diags = append(tl.diags, d...)
		m.Key = s
	} else {
		tl.errorf(where, "Missing key", "Say which routing key the message arrives on: key = \"request.ana\".")
	}
	n := 0
	if a, ok := body.Attributes["message"]; ok {
		n++
		v, d := tl.dec.eval(a.Expr)
		tl.diags = append(tl.diags, d...)
		if !d.HasErrors() {
			if !v.Type().IsObjectType() && !v.Type().IsMapType() {
				tl.errorf(a.Expr.Range(), "Expected an object", "message is a JSON-like object: { username = \"ana\" }.")
			} else if js, err := ctyjson.Marshal(v, v.Type()); err != nil {
				tl.errorf(a.Expr.Range(), "Invalid message", "%s.", err)
			} else {
				m.Body = js
			}
		}
	}
	if a, ok := body.Attributes["body"]; ok {
		n++
		s, d := tl.dec.str(a.Expr, "body")
		tl.diags = append(tl.diags, d...)
		m.Body = []byte(s)
	}
	if a, ok := body.Attributes["message_file"]; ok {
		n++
		s, d := tl.dec.str(a.Expr, "message_file")
		tl.diags = append(tl.diags, d...)
		if !d.HasErrors() {
			b, err := os.ReadFile(filepath.Join(tl.dir, s))
			if err != nil {
				tl.errorf(a.Expr.Range(), "Cannot read message file", "%s.", err)
			}
			m.Body = b
		}
	}
	if n != 1 {
		tl.errorf(where, "One message", "Give the message exactly once: message = { … }, body = \"raw text\" "+
			"or message_file = \"file.json\".")
	}
	return m
}

// stepRef checks the "pipeline/step" label of a stub or expect block.
func (tl *testLoader) stepRef(blk *hclsyntax.Block) (string, bool) {
	if len(blk.Labels) != 1 {
		tl.errorf(blk.TypeRange, "Missing step", "Name the step as \"pipeline/step\".")
		return "", false
	}
	ref := blk.Labels[0]
	pname, sname, ok := strings.Cut(ref, "/")
	p := tl.pipeline(pname)
	if !ok || p == nil {
		tl.errorf(blk.LabelRanges[0], "Unknown step", "%q is not \"pipeline/step\" of a pipeline here.%s",
			ref, suggestText(pname, tl.pipelineNames()))
		return "", false
	}
	var names []string
	for _, s := range p.allSteps() {
		if s.Name == sname {
			return ref, true
		}
		names = append(names, s.Name)
	}
	tl.errorf(blk.LabelRanges[0], "Unknown step", "Pipeline %q has no step %q.%s", pname, sname,
		suggestText(sname, names))
	return "", false
}

func (tl *testLoader) pipeline(name string) *Pipeline {
	for _, p := range tl.cfg.Pipelines {
		if p.Name == name {
			return p
		}
	}
	return nil
}

func (tl *testLoader) pipelineNames() []string {
	var out []string
	for _, p := range tl.cfg.Pipelines {
		out = append(out, p.Name)
	}
	return out
}

func (tl *testLoader) stub(blk *hclsyntax.Block) *Stub {
	tl.only(blk.Body, []string{"set", "error", "transient"}, nil)
	s := &Stub{}
	if a, ok := blk.Body.Attributes["set"]; ok {
		s.Set = tl.object(a.Expr)
	}
	if a, ok := blk.Body.Attributes["error"]; ok {
		v, d := tl.dec.str(a.Expr, "error")
		tl.diags = append(tl.diags, d...)
		s.Error = v
	}
	if a, ok := blk.Body.Attributes["transient"]; ok {
		v, d := tl.dec.boolean(a.Expr, "transient")
		tl.diags = append(tl.diags, d...)
		s.Transient = v
	}
	return s
}

// value evaluates an HCL expression into a normalized message value.
func (tl *testLoader) value(e hcl.Expression) (any, bool) {
	v, d := tl.dec.eval(e)
	tl.diags = append(tl.diags, d...)
	if d.HasErrors() {
		return nil, false
	}
	js, err := ctyjson.Marshal(v, v.Type())
	if err != nil {
		tl.errorf(e.Range(), "Invalid value", "%s.", err)
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	var out any
	if err := dec.Decode(&out); err != nil {
		tl.errorf(e.Range(), "Invalid value", "%s.", err)
		return nil, false
	}
	return Normalize(out), true
}

// object evaluates an HCL object into a normalized message.
func (tl *testLoader) object(e hcl.Expression) Message {
	v, ok := tl.value(e)
	if !ok {
		return nil
	}
	m, isObj := v.(map[string]any)
	if !isObj {
		tl.errorf(e.Range(), "Expected an object", "Write { field = value, … }.")
	}
	return m
}

func (tl *testLoader) expect(blk *hclsyntax.Block, e *TestExpect) {
	e.Range = blk.TypeRange
	tl.only(blk.Body, expectAttrs, expectBlock)
	if a, ok := blk.Body.Attributes["no_publish"]; ok {
		v, d := tl.dec.decodeAttr(AttrSpec{Name: "no_publish", Kind: AttrStrings}, a.AsHCLAttribute(), nil)
		tl.diags = append(tl.diags, d...)
		if !d.HasErrors() {
			e.NoPublish = v.([]string)
		}
	}
	if a, ok := blk.Body.Attributes["mails"]; ok {
		n, d := tl.dec.number(a.Expr, "mails")
		tl.diags = append(tl.diags, d...)
		count := int(n)
		if len(d) == 0 && count < 0 {
			tl.diags = append(tl.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid mails",
				Detail: "mails counts the mails sent and cannot be negative.", Subject: a.Expr.Range().Ptr()})
		}
		e.MailCount = &count
		e.MailRange = a.SrcRange
	}
	for _, b := range blk.Body.Blocks {
		switch b.Type {
		case "publish":
			if len(b.Labels) != 1 {
				tl.errorf(b.TypeRange, "Missing routing key", "Write publish \"completed.ana\" { field = value }.")
				continue
			}
			fields := Message{}
			for _, name := range sortedKeys(b.Body.Attributes) {
				a := b.Body.Attributes[name]
				if _, known := tl.cfg.Message[name]; !known {
					tl.errorf(a.NameRange, "Unknown message field", "The message block declares no field %q.%s",
						name, suggestText(name, tl.cfg.Message.Names()))
					continue
				}
				if v, ok := tl.value(a.Expr); ok {
					fields[name] = v
				}
			}
			e.Publish = append(e.Publish, ExpectPublish{Key: b.Labels[0], Fields: fields, Range: b.TypeRange})
		case "pipeline":
			if len(b.Labels) != 1 {
				tl.errorf(b.TypeRange, "Missing pipeline name", "Name one of %s.", quoteList(tl.pipelineNames()))
				continue
			}
			if tl.pipeline(b.Labels[0]) == nil {
				r := b.LabelRanges[0]
				tl.errorf(r, "Unknown pipeline", "No pipeline is named %q.%s", b.Labels[0],
					suggestOr(b.Labels[0], tl.pipelineNames()))
				continue
			}
			tl.only(b.Body, []string{"status", "errmsg"}, nil)
			ep := ExpectPipeline{Name: b.Labels[0], Range: b.TypeRange}
			ep.Status = tl.status(b.Body, []string{"ok", "failed", "refused", "skipped"})
			if a, ok := b.Body.Attributes["errmsg"]; ok {
				v, d := tl.dec.decodeAttr(AttrSpec{Name: "errmsg", Kind: AttrStrings}, a.AsHCLAttribute(), nil)
				tl.diags = append(tl.diags, d...)
				if !d.HasErrors() {
					ep.Errmsg = append([]string{}, v.([]string)...)
				}
			}
			e.Pipelines = append(e.Pipelines, ep)
		case "step":
			ref, ok := tl.stepRef(b)
			if !ok {
				continue
			}
			tl.only(b.Body, []string{"status", "note", "error"}, nil)
			es := ExpectStep{Ref: ref, Range: b.TypeRange}
			es.Status = tl.status(b.Body, []string{"ok", "failed", "skipped"})
			es.Note = tl.optString(b.Body, "note")
			es.Error = tl.optString(b.Body, "error")
			e.Steps = append(e.Steps, es)
		case "mail":
			tl.only(b.Body, []string{"to", "subject", "body"}, nil)
			em := ExpectMail{Range: b.TypeRange, Subject: tl.optString(b.Body, "subject"),
				Body: tl.optString(b.Body, "body")}
			if a, ok := b.Body.Attributes["to"]; ok {
				v, d := tl.dec.decodeAttr(AttrSpec{Name: "to", Kind: AttrStrings}, a.AsHCLAttribute(), nil)
				tl.diags = append(tl.diags, d...)
				if !d.HasErrors() {
					em.To = v.([]string)
				}
			}
			e.Mails = append(e.Mails, em)
		}
	}
	if len(blk.Body.Attributes) == 0 && len(blk.Body.Blocks) == 0 {
		tl.errorf(blk.TypeRange, "Empty expect", "An expect block with nothing in it checks nothing: "+
			"name what the test must see, such as publish \"completed.ana\" { success = true }, "+
			"a step's status, or mails = 0.")
	}
}

func (tl *testLoader) optString(body *hclsyntax.Body, name string) string {
	a, ok := body.Attributes[name]
	if !ok {
		return ""
	}
	s, d := tl.dec.str(a.Expr, name)
	tl.diags = append(tl.diags, d...)
	return s
}

func (tl *testLoader) status(body *hclsyntax.Body, allowed []string) string {
	s := tl.optString(body, "status")
	if s != "" && !contains(allowed, s) {
		tl.errorf(body.Attributes["status"].Expr.Range(), "Invalid status", "status is one of %s.%s",
			quoteList(allowed), suggestText(s, allowed))
	}
	return s
}

// TestOutcome is the result of one pipeline test.
type TestOutcome struct {
	Test     *PipelineTest
	Failures []string // each "file:line:col: what differs", in the file's order
	Duration time.Duration
	Trace    *Trace

	failedAt []hcl.Pos // where each failure is, to sort them
}

// RunTests runs each test in a sandbox of its own, under a temporary
// directory, and reports what differs from its expectations.
func RunTests(ctx context.Context, cfg *Config, tests []*PipelineTest) ([]*TestOutcome, error) {
	var out []*TestOutcome
	for _, t := range tests {
		o, err := runTest(ctx, cfg, t)
		if err != nil {
			return out, fmt.Errorf("test %q: %w", t.Name, err)
		}
		out = append(out, o)
	}
	return out, nil
}

func runTest(ctx context.Context, cfg *Config, t *PipelineTest) (*TestOutcome, error) {
	start := time.Now()
	dir, err := os.MkdirTemp("", "regflow-test-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	svc, err := Sandbox(cfg, dir, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	defer svc.Store.Close()
	sim := NewSimulator(cfg, svc)
	sim.Stub(t.Stubs)
	o := &TestOutcome{Test: t}
	for i, m := range t.Setup {
		if _, err := sim.Run(ctx, m.Key, m.Body, fmt.Sprintf("setup-%d", i+1)); err != nil {
			o.fail(t.Range, "setup message %d on %s: %v", i+1, m.Key, err)
		}
	}
	tr, err := sim.Run(ctx, t.Input.Key, t.Input.Body, "test")
	o.Trace = tr
	if err != nil {
		o.fail(t.Range, "%v", err)
	}
	o.check(tr)
	o.sortFailures()
	o.Duration = time.Since(start)
	return o, nil
}

func (o *TestOutcome) fail(r hcl.Range, format string, args ...any) {
	o.Failures = append(o.Failures, at(r)+": "+fmt.Sprintf(format, args...))
	o.failedAt = append(o.failedAt, r.Start)
}

// sortFailures puts the failures in the order of the expectations in the
// file.
func (o *TestOutcome) sortFailures() {
	idx := make([]int, len(o.Failures))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool {
		pa, pb := o.failedAt[idx[a]], o.failedAt[idx[b]]
		return pa.Line < pb.Line || pa.Line == pb.Line && pa.Column < pb.Column
	})
	sorted := make([]string, len(idx))
	for i, j := range idx {
		sorted[i] = o.Failures[j]
	}
	o.Failures = sorted
}

func (o *TestOutcome) check(tr *Trace) {
	e := o.Test.Expect
	published := map[string][]Message{}
	var keys []string
	for _, h := range tr.Hops[1:] {
		m, _ := DecodeMessage(h.Body)
		published[h.RoutingKey] = append(published[h.RoutingKey], m)
		keys = append(keys, h.RoutingKey)
	}
	for _, ep := range e.Publish {
		msgs := published[ep.Key]
		if len(msgs) == 0 {
			o.fail(ep.Range, "nothing was published on %s; published: %s", ep.Key, listOrNone(keys))
			continue
		}
		for _, name := range sortedKeys(ep.Fields) {
			got, want := msgs[0][name], ep.Fields[name]
			if !reflect.DeepEqual(got, want) {
				o.fail(ep.Range, "%s: field %s is %s, want %s", ep.Key, name, jsonText(got), jsonText(want))
			}
		}
	}
	for _, k := range e.NoPublish {
		if len(published[k]) > 0 {
			o.fail(e.Range, "%s was published, but no_publish names it", k)
		}
	}
	results := map[string]*Result{}
	steps := map[string]StepResult{}
	var mails []*Mail
	for _, h := range tr.Hops {
		for _, r := range h.Results {
			if _, seen := results[r.Pipeline]; !seen {
				results[r.Pipeline] = r
				for _, s := range r.Steps {
					steps[r.Pipeline+"/"+s.Step] = s
				}
			}
			for _, s := range r.Steps {
				mails = append(mails, s.Mails...)
			}
		}
	}
	for _, ep := range e.Pipelines {
		r := results[ep.Name]
		if r == nil {
			o.fail(ep.Range, "pipeline %s did not run", ep.Name)
			continue
		}
		if st := resultStatus(r); ep.Status != "" && st != ep.Status {
			o.fail(ep.Range, "pipeline %s: status %s, want %s%s", ep.Name, st, ep.Status, errmsgSuffix(r))
		}
		if ep.Errmsg != nil && !reflect.DeepEqual(r.Errmsg(), ep.Errmsg) {
			o.fail(ep.Range, "pipeline %s: errmsg %s, want %s", ep.Name, jsonText(r.Errmsg()), jsonText(ep.Errmsg))
		}
	}
	for _, es := range e.Steps {
		s, ok := steps[es.Ref]
		switch {
		case !ok:
			o.fail(es.Range, "step %s did not run", es.Ref)
		case es.Status != "" && s.Status != es.Status:
			what := ""
			if s.Note+s.Error != "" {
				what = " (" + s.Note + s.Error + ")"
			}
			o.fail(es.Range, "step %s: status %s, want %s%s", es.Ref, s.Status, es.Status, what)
		case es.Note != "" && !strings.Contains(s.Note, es.Note):
			o.fail(es.Range, "step %s: note %q does not contain %q", es.Ref, s.Note, es.Note)
		case es.Error != "" && !strings.Contains(s.Error, es.Error):
			o.fail(es.Range, "step %s: error %q does not contain %q", es.Ref, s.Error, es.Error)
		}
	}
	if e.MailCount != nil && len(mails) != *e.MailCount {
		o.fail(e.MailRange, "%d mails were sent, want %d: %s", len(mails), *e.MailCount, mailList(mails))
	}
	for _, em := range e.Mails {
		if !anyMailMatches(mails, em) {
			body := ""
			if em.Body != "" {
				body = fmt.Sprintf(" and a body containing %q", em.Body)
			}
			o.fail(em.Range, "no mail to %s with subject %q%s; sent: %s",
				strings.Join(em.To, ", "), em.Subject, body, mailList(mails))
		}
	}
}

func anyMailMatches(mails []*Mail, em ExpectMail) bool {
	for _, m := range mails {
		if (em.To == nil || reflect.DeepEqual(m.To, em.To)) &&
			(em.Subject == "" || m.Subject == em.Subject) &&
			strings.Contains(m.Text, em.Body) {
			return true
		}
	}
	return false
}

func mailList(mails []*Mail) string {
	var s []string
	for _, m := range mails {
		s = append(s, fmt.Sprintf("%s %q", strings.Join(m.To, ","), m.Subject))
	}
	return listOrNone(s)
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "(none)"
	}
	return strings.Join(s, "; ")
}

func resultStatus(r *Result) string {
	switch {
	case r.Refused != "":
		return "refused"
	case r.Skipped:
		return "skipped"
	case r.Failed:
		return "failed"
	}
	return "ok"
}

func errmsgSuffix(r *Result) string {
	if e := r.Errmsg(); len(e) > 0 {
		return " (errmsg " + jsonText(e) + ")"
	}
	return ""
}

func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// WriteTestReport prints outcomes for people and returns how many failed.
// A failing test, or every test when verbose, is followed by its trace.
func WriteTestReport(w io.Writer, outcomes []*TestOutcome, verbose bool) int {
	failed := 0
	for _, o := range outcomes {
		if len(o.Failures) == 0 {
			fmt.Fprintf(w, "ok    %s (%s)\n", o.Test.Name, o.Duration.Round(time.Millisecond))
		} else {
			failed++
			fmt.Fprintf(w, "FAIL  %s (%s)\n", o.Test.Name, o.Duration.Round(time.Millisecond))
			for _, f := range o.Failures {
				fmt.Fprintf(w, "      %s\n", f)
			}
		}
		if (verbose || len(o.Failures) > 0) && o.Trace != nil {
			var b strings.Builder
			WriteTrace(&b, o.Trace)
			for _, line := range strings.Split(strings.TrimRight(b.String(), "\n"), "\n") {
				fmt.Fprintf(w, "      | %s\n", line)
			}
		}
	}
	fmt.Fprintf(w, "%d passed, %d failed\n", len(outcomes)-failed, failed)
	return failed
}

package engine

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
)

// ConfigFiles expands paths into the .hcl files to load: a directory
// contributes its *.hcl files, a file itself; *_test.hcl files hold
// pipeline tests (see TestFiles) and are left out, also when named. The
// result is sorted so diagnostics come in a stable order.
func ConfigFiles(paths []string) ([]string, error) {
	var files []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			if os.IsNotExist(err) {
				return nil, fmt.Errorf("%s does not exist", p)
			}
			return nil, fmt.Errorf("cannot read %s: %w", p, err)
		}
		if !st.IsDir() {
			if !strings.HasSuffix(p, "_test.hcl") {
				files = append(files, p)
			}
			continue
		}
		matches, err := filepath.Glob(filepath.Join(p, "*.hcl"))
		if err != nil {
			return nil, err
		}
		for _, m := range matches {
			if !strings.HasSuffix(m, "_test.hcl") {
				files = append(files, m)
			}
		}
	}
	sort.Strings(files)
	if len(files) == 0 {
		if tests, _ := TestFiles(paths); len(tests) > 0 {
			verb := "holds"
			if len(paths) > 1 {
				verb = "hold"
			}
			return nil, fmt.Errorf("%s %s only pipeline tests; name the pipeline files they test too, "+
				"or their directory", strings.Join(paths, ", "), verb)
		}
		return nil, fmt.Errorf("no .hcl files in %s", strings.Join(paths, ", "))
	}
	return files, nil
}

// Sources are the parsed files of a configuration, by name, for printing
// diagnostics with their source lines.
type Sources = map[string]*hcl.File

// Load parses and checks the configuration in paths. It reports every
// problem it finds across all files; the Config is nil when there is any
// error, so nothing is ever half-loaded. Warnings come with a Config. The
// sources are returned either way.
func Load(paths []string, reg *Registry) (*Config, Sources, hcl.Diagnostics) {
	files, err := ConfigFiles(paths)
	if err != nil {
		return nil, nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Cannot read configuration",
			Detail: err.Error() + "."}}
	}
	l := &loader{reg: reg, parser: hclparse.NewParser()}
	cfg, diags := l.load(files)
	return cfg, l.parser.Files(), diags
}

type loader struct {
	reg    *Registry
	parser *hclparse.Parser
	cfg    *Config
	diags  hcl.Diagnostics

	firstBlock map[string]hcl.Range // singleton blocks seen, by type
	syntax     []hcl.Range          // where the files failed to parse
}

// cutShort reports whether a syntax error lies inside r: the parser then
// gave only the part of the block before it, and what seems to be missing
// from the block may well be in the part it could not read.
func (l *loader) cutShort(r hcl.Range) bool {
	for _, e := range l.syntax {
		if e.Filename == r.Filename && e.Start.Byte >= r.Start.Byte && e.Start.Byte <= r.End.Byte {
			return true
		}
	}
	return false
}

type fileBody struct {
	name string
	body *hclsyntax.Body
	dec  *decoder
}

func (l *loader) errorf(rng hcl.Range, summary, format string, args ...any) {
	l.diags = append(l.diags, diag(rng, summary, fmt.Sprintf(format, args...)))
}

var topBlocks = []string{"broker", "store", "mail", "message", "pipeline", "consumer", "track"}

func (l *loader) load(files []string) (*Config, hcl.Diagnostics) {
	l.cfg = &Config{
		Broker: BrokerConfig{URL: DefaultAMQPURL, Exchange: DefaultExchange, Prefetch: DefaultPrefetch,
			MaxBody: DefaultMaxBody, ConsumerTimeout: DefaultConsumerTimeout},
		Store:   StoreConfig{Path: DefaultStorePath},
		Mail:    MailConfig{Outbox: DefaultOutbox, From: DefaultFrom},
		Message: Schema{},
	}
	l.firstBlock = map[string]hcl.Range{}

	var bodies []fileBody
	for _, name := range files {
		f, diags := l.parser.ParseHCLFile(name)
		l.diags = append(l.diags, diags...)
		for _, d := range diags {
			if d.Severity == hcl.DiagError && d.Subject != nil {
				l.syntax = append(l.syntax, *d.Subject)
			}
		}
		if f == nil {
			continue
		}
		body, ok := f.Body.(*hclsyntax.Body)
		if !ok {
			continue
		}
		bodies = append(bodies, fileBody{name: name, body: body, dec: &decoder{ctx: evalContext(name), src: f.Bytes}})
	}

	// Phase 1: the configuration blocks, which pipelines depend on.
	for _, fb := range bodies {
		for name, a := range fb.body.Attributes {
			l.errorf(a.NameRange, "Unexpected argument",
				"The argument %q cannot stand at the top level; put it inside a block such as broker or pipeline.", name)
		}
		for _, b := range fb.body.Blocks {
			switch b.Type {
			case "broker", "store", "mail", "message":
				if !l.singleton(b) {
					continue
				}
				l.decodeConfigBlock(fb.dec, b)
			case "pipeline", "track":
			case "consumer":
				l.decodeConsumer(fb.dec, b)
			default:
				detail := fmt.Sprintf("Blocks of type %q are not expected here.", b.Type)
				if s := Suggest(b.Type, topBlocks); s != "" {
					detail += fmt.Sprintf(" Did you mean %q?", s)
				} else if _, ok := l.reg.Lookup(b.Type); ok {
					detail += " Steps belong inside a pipeline block."
				}
				l.errorf(b.TypeRange, "Unsupported block type", "%s", detail)
			}
		}
	}
	l.finishSchema()
	if l.cfg.Broker.DeadLetter == "" {
		l.cfg.Broker.DeadLetter = l.cfg.Broker.Exchange + ".dead"
	}

	// Phase 2: pipelines.
	seen := map[string]hcl.Range{}
	for _, fb := range bodies {
		for _, b := range fb.body.Blocks {
			if b.Type != "pipeline" {
				continue
			}
			if len(b.Labels) != 1 {
				l.errorf(b.TypeRange, "Missing pipeline name",
					"A pipeline block needs exactly one name, as in pipeline \"provision\" { … }.")
				continue
			}
			name := b.Labels[0]
			l.checkName("pipeline", name, b.LabelRanges[0])
			if first, dup := seen[name]; dup {
				l.errorf(b.LabelRanges[0], "Duplicate pipeline",
					"A pipeline named %q was already defined at %s. Pipeline names become queue names and must be unique.",
					name, at(first))
				// Decode it anyway, to report what else is wrong in it.
				l.decodePipeline(fb.dec, b)
				continue
			}
			seen[name] = b.LabelRanges[0]
			if p := l.decodePipeline(fb.dec, b); p != nil {
				l.cfg.Pipelines = append(l.cfg.Pipelines, p)
			}
		}
	}
	for _, fb := range bodies {
		for _, b := range fb.body.Blocks {
			if b.Type == "track" {
				l.decodeTrack(fb.dec, b)
			}
		}
	}
	l.checkQueues()
	if !l.diags.HasErrors() {
		l.lint()
	}
	sameStyle(l.diags)
	sortDiags(l.diags)

	if l.diags.HasErrors() {
		return nil, l.diags
	}
	return l.cfg, l.diags
}

func (l *loader) decodeTrack(dec *decoder, b *hclsyntax.Block) {
	if len(b.Labels) != 1 {
		l.errorf(b.TypeRange, "Missing tracker name", "A track block needs one name, as in track \"registration\" { … }.")
		return
	}
	l.checkName("track", b.Labels[0], b.LabelRanges[0])
	t := &Tracker{Name: b.Labels[0], Deadline: DefaultDeadline, Range: hcl.RangeBetween(b.TypeRange, b.LabelRanges[0])}
	for _, other := range l.cfg.Trackers {
		if other.Name == t.Name {
			l.errorf(b.LabelRanges[0], "Duplicate tracker", "A track block named %q was already defined at %s.",
				t.Name, at(other.Range))
			return
		}
	}
	before := len(l.diags)
	l.decodeAttrs(dec, b.Body, trackAttrs, []string{"on_timeout"}, l.cfg.Message, func(name string, a *hclsyntax.Attribute, v any) {
		switch name {
		case "id":
			t.ID = v.(*Template)
		case "start":
			t.Start = v.([]string)
			l.checkPatterns(a, t.Start)
		case "finish":
			t.Finish = v.([]string)
			l.checkPatterns(a, t.Finish)
		case "deadline":
			t.Deadline = v.(time.Duration)
		}
	})
	// on_timeout runs with the message that opened the registration.
	p := &Pipeline{Name: "track " + t.Name, CheckMessage: false, Range: t.Range}
	names := map[string]hcl.Range{}
	for _, blk := range b.Body.Blocks {
		if blk.Type != "on_timeout" {
			l.errorf(blk.TypeRange, "Unsupported block type", "A track block holds only an on_timeout block of steps.")
			continue
		}
		for _, sb := range blk.Body.Blocks {
			if spec := l.stepSpec(sb); spec != nil {
				if s := l.decodeStep(dec, p, sb, spec, l.cfg.Message, names); s != nil {
					t.OnTimeout = append(t.OnTimeout, s)
				}
			}
		}
	}
	if len(t.OnTimeout) == 0 {
		l.errorf(t.Range, "No on_timeout steps", "Say how a registration that times out is answered, e.g. "+
			"on_timeout { publish \"reply\" { routing_key = \"completed.{{ msg.queuename }}\" } }.")
	}
	if len(l.diags) > before && l.diags[before:].HasErrors() {
		return
	}
	p.Steps = t.OnTimeout
	t.pipeline = p
	l.cfg.Trackers = append(l.cfg.Trackers, t)
}

func (l *loader) decodeConsumer(dec *decoder, b *hclsyntax.Block) {
	if len(b.Labels) != 1 {
		l.errorf(b.TypeRange, "Missing consumer name",
			"A consumer block needs one name, as in consumer \"web_form\" { on = [\"completed.*\"] }.")
		return
	}
	l.checkName("consumer", b.Labels[0], b.LabelRanges[0])
	c := &Consumer{Name: b.Labels[0], Range: hcl.RangeBetween(b.TypeRange, b.LabelRanges[0])}
	for _, other := range l.cfg.Consumers {
		if other.Name == c.Name {
			l.errorf(b.LabelRanges[0], "Duplicate consumer",
				"A consumer named %q was already defined at %s.", c.Name, at(other.Range))
			return
		}
	}
	l.decodeAttrs(dec, b.Body, consumerAttrs, nil, nil, func(name string, a *hclsyntax.Attribute, v any) {
		switch name {
		case "on":
			c.On = v.([]string)
			l.checkPatterns(a, c.On)
		case "description":
			c.Description = v.(string)
		}
	})
	l.cfg.Consumers = append(l.cfg.Consumers, c)
}

// singleton reports whether b is the first block of its type, and reports
// a duplicate otherwise.
func (l *loader) singleton(b *hclsyntax.Block) bool {
	if first, dup := l.firstBlock[b.Type]; dup {
		l.errorf(b.TypeRange, "Duplicate "+b.Type+" block",
			"A %s block was already defined at %s. Merge the two; there can be only one.", b.Type, at(first))
		return false
	}
	l.firstBlock[b.Type] = b.TypeRange
	if len(b.Labels) > 0 {
		l.errorf(b.LabelRanges[0], "Unexpected label", "A %s block has no name; remove %q.", b.Type, b.Labels[0])
	}
	return true
}

// checkBody reports attributes and blocks of body that are not in attrs
// or blocks, with the nearest valid name, and returns the attributes.
func (l *loader) checkBody(body *hclsyntax.Body, attrs []AttrSpec, blocks []string) {
	names := make([]string, 0, len(attrs))
	for _, a := range attrs {
		names = append(names, a.Name)
	}
	for _, name := range sortedKeys(body.Attributes) {
		a := body.Attributes[name]
		if contains(names, name) {
			continue
		}
		detail := fmt.Sprintf("An argument named %q is not expected here.", name)
		if s := Suggest(name, names); s != "" {
			detail += fmt.Sprintf(" Did you mean %q?", s)
		} else if contains(blocks, name) {
			detail += fmt.Sprintf(" %q is a block: write %s { … } without the equals sign.", name, name)
		} else {
			detail += " Valid arguments are " + quoteList(names) + "."
		}
		l.errorf(a.NameRange, "Unsupported argument", "%s", detail)
	}
	for _, a := range attrs {
		if a.Required {
			if _, ok := body.Attributes[a.Name]; !ok && !l.cutShort(body.SrcRange) {
				r := body.SrcRange
				l.errorf(hcl.Range{Filename: r.Filename, Start: r.Start, End: r.Start}, "Missing required argument",
					"The argument %q is required here. %s", a.Name, a.Doc)
			}
		}
	}
}

func (l *loader) decodeConfigBlock(dec *decoder, b *hclsyntax.Block) {
	c := l.cfg
	var attrs []AttrSpec
	switch b.Type {
	case "broker":
		attrs = brokerAttrs
	case "store":
		attrs = storeAttrs
	case "mail":
		attrs = mailAttrs
	case "message":
		l.decodeMessage(dec, b)
		return
	}
	l.decodeAttrs(dec, b.Body, attrs, nil, nil, func(name string, a *hclsyntax.Attribute, v any) {
		switch b.Type + "." + name {
		case "broker.url":
			c.Broker.URL = v.(string)
			if err := CheckAMQPURL(c.Broker.URL); err != nil {
				l.errorf(a.Expr.Range(), "Invalid broker URL", "The URL cannot be used: %s.", err)
			}
		case "broker.exchange":
			c.Broker.Exchange = v.(string)
			if c.Broker.Exchange == "" {
				l.errorf(a.Expr.Range(), "Empty exchange", "Name the topic exchange, such as \"RegUsr\".")
			}
		case "broker.prefetch":
			c.Broker.Prefetch = v.(int)
			if c.Broker.Prefetch < 1 || c.Broker.Prefetch > 65535 {
				l.errorf(a.Expr.Range(), "Invalid prefetch", "prefetch must be between 1 and 65535.")
			}
		case "broker.queue_prefix":
			c.Broker.QueuePrefix = v.(string)
		case "broker.dead_letter":
			c.Broker.DeadLetter = v.(string)
		case "broker.max_body":
			c.Broker.MaxBody = v.(int)
			if c.Broker.MaxBody < 1024 {
				l.errorf(a.Expr.Range(), "Invalid max_body", "max_body is in bytes and must be at least 1024.")
			}
		case "broker.consumer_timeout":
			c.Broker.ConsumerTimeout = v.(time.Duration)
		case "store.path":
			c.Store.Path = v.(string)
		case "mail.smtp":
			c.Mail.SMTP = v.(string)
			if c.Mail.SMTP != "" {
				if sc, err := ParseSMTPURL(c.Mail.SMTP); err != nil {
					l.errorf(a.Expr.Range(), "Invalid SMTP URL", "The URL cannot be used: %s.",
						strings.TrimPrefix(err.Error(), "smtp url: "))
				} else if sc.CAFile != "" {
					if _, err := LoadCAFile(sc.CAFile); err != nil {
						l.errorf(a.Expr.Range(), "Invalid SMTP URL", "The URL cannot be used: ca: %s.", err)
					}
				}
			}
		case "mail.outbox":
			c.Mail.Outbox = v.(string)
		case "mail.from":
			c.Mail.From = v.(string)
		}
	})
}

// decodeMessage reads the message block: field = type.
func (l *loader) decodeMessage(dec *decoder, b *hclsyntax.Block) {
	for _, name := range sortedKeys(b.Body.Attributes) {
		a := b.Body.Attributes[name]
		t, diags := parseType(dec, a.Expr)
		l.diags = append(l.diags, diags...)
		if kept, ok := builtinFields[name]; ok && !diags.HasErrors() && !kept.AssignableTo(t) {
			l.errorf(a.SrcRange, "Conflicting field type",
				"The engine keeps %s as %s on every message; this line declares it %s. Remove the line.",
				name, kept, t)
		}
		// A field with a bad type is still declared, as any, so that its
		// uses do not each report it missing.
		l.cfg.Message[name] = t
	}
	for _, blk := range b.Body.Blocks {
		l.errorf(blk.TypeRange, "Unexpected block", "The message block holds only field = type lines, such as uid = integer.")
	}
}

var typeNames = []string{"string", "number", "integer", "bool", "any", "object", "list"}

// parseType reads a field type: string, number, integer, bool, any,
// object, list(T) or integer(LOW, HIGH).
func parseType(dec *decoder, e hclsyntax.Expression) (FieldType, hcl.Diagnostics) {
	bad := func(detail string) (FieldType, hcl.Diagnostics) {
		return TypeAny, hcl.Diagnostics{diag(e.Range(), "Invalid field type", detail+
			" Types are string, number, integer, integer(LOW, HIGH), bool, list(TYPE), object and any.")}
	}
	if kw := hcl.ExprAsKeyword(e); kw != "" {
		switch kw {
		case "string":
			return TypeString, nil
		case "number":
			return TypeNumber, nil
		case "integer":
			return TypeInteger, nil
		case "bool":
			return TypeBool, nil
		case "any":
			return TypeAny, nil
		case "object":
			return TypeObject, nil
		case "list":
			return ListOf(TypeAny), nil
		}
		if s := Suggest(kw, typeNames); s != "" {
			return bad(fmt.Sprintf("There is no type %q. Did you mean %q?", kw, s))
		}
		return bad(fmt.Sprintf("There is no type %q.", kw))
	}
	call, diags := hcl.ExprCall(e)
	if diags.HasErrors() {
		return bad("Write a type name without quotes.")
	}
	switch call.Name {
	case "list":
		if len(call.Arguments) != 1 {
			return bad("list takes one element type, as in list(string).")
		}
		inner, ok := call.Arguments[0].(hclsyntax.Expression)
		if !ok {
			return bad("list takes one element type, as in list(string).")
		}
		elem, diags := parseType(dec, inner)
		return ListOf(elem), diags
	case "integer":
		if len(call.Arguments) != 2 {
			return bad("integer(LOW, HIGH) takes two bounds.")
		}
		lo, d1 := dec.number(call.Arguments[0], "The low bound")
		hi, d2 := dec.number(call.Arguments[1], "The high bound")
		if d := append(d1, d2...); d.HasErrors() {
			return TypeAny, d
		}
		if lo > hi {
			return bad(fmt.Sprintf("The low bound %d is above the high bound %d.", lo, hi))
		}
		return IntegerIn(lo, hi), nil
	}
	return bad(fmt.Sprintf("There is no type constructor %q.", call.Name))
}

// builtinFields are the fields the engine keeps on every message.
var builtinFields = Schema{FieldErrmsg: TypeStringList, FieldSuccess: TypeBool}

// finishSchema adds the fields the engine keeps on every message.
func (l *loader) finishSchema() {
	for name, t := range builtinFields {
		l.cfg.Message[name] = t
	}
}

// checkQueues reports two pipelines sharing one queue.
func (l *loader) checkQueues() {
	b := l.cfg.Broker
	where := l.firstBlock["broker"]
	if where.Filename == "" && len(l.cfg.Pipelines) > 0 {
		where = l.cfg.Pipelines[0].Range
	}
	for _, n := range []struct{ what, name string }{{"exchange", b.Exchange}, {"dead_letter", b.DeadLetter},
		{"dead-letter queue", b.QueuePrefix + b.DeadLetter}} {
		if problem := brokerNameProblem(n.name); problem != "" {
			l.errorf(where, "Invalid broker name", "The %s name %q %s.", n.what, n.name, problem)
		}
	}
	if b.DeadLetter == b.Exchange {
		l.errorf(where, "Invalid dead_letter", "dead_letter names the pipelines' own exchange %q; "+
			"dead letters need an exchange of their own, such as %q.", b.Exchange, b.Exchange+".dead")
	}
	byQueue := map[string]*Pipeline{}
	for _, p := range l.cfg.Pipelines {
		if problem := brokerNameProblem(p.Queue); problem != "" && p.Name != "" {
			l.errorf(p.Range, "Invalid queue name", "The queue name %q %s.", p.Queue, problem)
		}
		if p.Queue == b.QueuePrefix+b.DeadLetter {
			l.errorf(p.Range, "Queue is the dead-letter queue",
				"Pipeline %q would consume the dead-letter queue %q, so that every message it gives up comes "+
					"back to it at once. Name its queue otherwise.", p.Name, p.Queue)
		}
		if first, dup := byQueue[p.Queue]; dup {
			l.errorf(p.Range, "Duplicate queue",
				"Pipelines %q and %q both use the queue %q (first at %s); each pipeline needs its own queue "+
					"so that each gets its own copy of a message.", first.Name, p.Name, p.Queue, at(first.Range))
			continue
		}
		byQueue[p.Queue] = p
	}
}

// brokerNameProblem says what keeps name from being an exchange or queue
// name that regflow can declare, "" when nothing does.
func brokerNameProblem(name string) string {
	switch {
	case strings.TrimSpace(name) == "":
		return "is empty"
	case strings.HasPrefix(name, "amq."):
		return "begins with \"amq.\", which the broker reserves for itself"
	case len(name) > 255:
		return fmt.Sprintf("is %d bytes long; the broker allows 255", len(name))
	case strings.TrimSpace(name) != name:
		return "has blanks around it"
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return "holds a control character"
	}
	return ""
}

func (l *loader) decodePipeline(dec *decoder, b *hclsyntax.Block) *Pipeline {
	p := &Pipeline{
		Name:         b.Labels[0],
		Prefetch:     l.cfg.Broker.Prefetch,
		CheckMessage: true,
		Range:        hcl.RangeBetween(b.TypeRange, b.LabelRanges[0]),
	}
	p.Queue = l.cfg.Broker.QueuePrefix + p.Name
	l.decodeAttrs(dec, b.Body, pipelineAttrs, nil, l.cfg.Message, func(name string, a *hclsyntax.Attribute, v any) {
		switch name {
		case "when":
			p.When = v.(*Program)
		case "on":
			p.On = v.([]string)
			l.checkPatterns(a, p.On)
		case "description":
			p.Description = v.(string)
		case "queue":
			p.Queue = l.cfg.Broker.QueuePrefix + v.(string)
		case "prefetch":
			p.Prefetch = v.(int)
			if p.Prefetch < 1 || p.Prefetch > 65535 {
				l.errorf(a.Expr.Range(), "Invalid prefetch", "prefetch must be between 1 and 65535.")
			}
		case "single_active_consumer":
			p.SingleActiveConsumer = v.(bool)
		case "check_message":
			p.CheckMessage = v.(bool)
		}
	})

	// Steps: every block except on_failure, in the order written.
	var main, fail []*hclsyntax.Block
	var failRange *hcl.Range
	for _, blk := range b.Body.Blocks {
		if blk.Type == "on_failure" {
			if failRange != nil {
				l.errorf(blk.TypeRange, "Duplicate on_failure block",
					"This pipeline already has an on_failure block at %s; put all its steps there.", at(*failRange))
				continue
			}
			if len(blk.Labels) > 0 {
				l.errorf(blk.LabelRanges[0], "Unexpected label", "on_failure takes no name; remove %q.", blk.Labels[0])
			}
			failRange = &blk.TypeRange
			for name, a := range blk.Body.Attributes {
				l.errorf(a.NameRange, "Unexpected argument",
					"on_failure holds steps only; %q belongs on a step inside it.", name)
			}
			fail = append(fail, blk.Body.Blocks...)
			continue
		}
		main = append(main, blk)
	}
	if len(main) == 0 && !l.cutShort(b.Range()) {
		l.errorf(p.Range, "Pipeline has no steps", "Add at least one step, such as log_event \"log\" { }.")
	}

	// Fields added by a step are visible only after it.
	adds := make([]Schema, len(main))
	stepNames := map[string]hcl.Range{}
	specs := make([]*ActionSpec, len(main))
	for i, blk := range main {
		specs[i] = l.stepSpec(blk)
	}
	// A first pass computes each step's adds from a schema with all fields,
	// since Adds depends only on the step's own attributes.
	all := l.cfg.Message.clone()
	for i, blk := range main {
		if specs[i] == nil || specs[i].Adds == nil {
			continue
		}
		sc := l.stepConfigOnly(dec, p, blk, specs[i], all)
		if sc != nil {
			adds[i] = specs[i].Adds(sc)
			for f, t := range adds[i] {
				all[f] = t
			}
		}
	}
	for i, blk := range main {
		if specs[i] == nil {
			continue
		}
		// A field that this or a later step adds is not there yet, even
		// when the message block declares it; fields added before are.
		env := l.cfg.Message.clone()
		for j := i; j < len(main); j++ {
			for f := range adds[j] {
				delete(env, f)
			}
		}
		for j := 0; j < i; j++ {
			for f, t := range adds[j] {
				env[f] = t
			}
		}
		mark := len(l.diags)
		if s := l.decodeStep(dec, p, blk, specs[i], env, stepNames); s != nil {
			p.Steps = append(p.Steps, s)
		}
		l.explainLaterFields(l.diags[mark:], main[i+1:], adds[i:])
		l.checkAdds(blk, specs[i], adds[i])
	}
	for _, blk := range fail {
		spec := l.stepSpec(blk)
		if spec == nil {
			continue
		}
		if s := l.decodeStep(dec, p, blk, spec, all, stepNames); s != nil {
			p.OnFailure = append(p.OnFailure, s)
		}
	}
	// A pipeline with errors is kept too, with the steps that decoded, so
	// that the checks across pipelines (queue names, trackers) still see
	// it; the configuration is not returned when there are errors.
	return p
}

var reNoField = regexp.MustCompile(`^The message has no field "([^"]+)" here\.`)

// explainLaterFields rewrites "Unknown message field" diagnostics about a
// field that a later step of the pipeline adds: the fix is to reorder.
// adds[0] belongs to the step itself, adds[k] to later[k-1].
func (l *loader) explainLaterFields(diags hcl.Diagnostics, later []*hclsyntax.Block, adds []Schema) {
	for _, d := range diags {
		m := reNoField.FindStringSubmatch(d.Detail)
		if d.Summary != "Unknown message field" || m == nil {
			continue
		}
		for k, a := range adds {
			if _, ok := a[m[1]]; !ok {
				continue
			}
			if k == 0 {
				d.Detail = fmt.Sprintf("The field %q is set by this very step, so it is not there yet "+
					"when the step's own attributes are evaluated.", m[1])
			} else {
				blk := later[k-1]
				d.Detail = fmt.Sprintf("The field %q is set by step %q (%s) at %s, which runs after this "+
					"one. Move this step below it.", m[1], stepName(blk), blk.Type, at(blk.TypeRange))
			}
			break
		}
	}
}

// checkAdds reports an action that sets a declared field to another type.
func (l *loader) checkAdds(blk *hclsyntax.Block, spec *ActionSpec, adds Schema) {
	for _, f := range sortedKeys(adds) {
		declared, ok := l.cfg.Message[f]
		if ok && !adds[f].AssignableTo(declared) {
			l.errorf(blk.TypeRange, "Conflicting field type",
				"%s sets %s to %s, but the message block declares it %s.", spec.Name, f, adds[f], declared)
		}
	}
}

func (l *loader) checkPatterns(a *hclsyntax.Attribute, pats []string) {
	if len(pats) == 0 {
		l.errorf(a.Expr.Range(), "No patterns", "on needs at least one routing-key pattern, such as \"request.*\".")
	}
	// Point at the element when the list is written out.
	elems, _ := hcl.ExprList(a.Expr)
	for i, p := range pats {
		rng := a.Expr.Range()
		if len(elems) == len(pats) {
			rng = elems[i].Range()
		}
		if len(p) > MaxRoutingKey {
			l.errorf(rng, "Pattern too long", "The pattern %q is longer than %d bytes.", p, MaxRoutingKey)
		}
		for _, w := range strings.Split(p, ".") {
			if w == "" && p != "" {
				l.errorf(rng, "Empty word in pattern",
					"The pattern %q has an empty word; regflow never binds a key it would have to "+
						"publish empty. Use \"*\" for any one word.", p)
				break
			}
			if w != "*" && w != "#" && strings.ContainsAny(w, "*#") {
				l.errorf(rng, "Wildcard inside a word",
					"In %q, * and # match whole words only; %q would match itself literally.", p, w)
				break
			}
		}
	}
}

// stepSpec finds the action of a step block.
func (l *loader) stepSpec(blk *hclsyntax.Block) *ActionSpec {
	spec, ok := l.reg.Lookup(blk.Type)
	if ok {
		return spec
	}
	names := append(l.reg.Names(), "on_failure")
	detail := fmt.Sprintf("There is no action %q.", blk.Type)
	if s := Suggest(blk.Type, names); s != "" {
		detail += fmt.Sprintf(" Did you mean %q?", s)
	} else {
		detail += " Actions are " + quoteList(l.reg.Names()) + "."
	}
	l.errorf(blk.TypeRange, "Unknown action", "%s", detail)
	return nil
}

// stepConfigOnly decodes a step's own attributes quietly, for Adds.
func (l *loader) stepConfigOnly(dec *decoder, p *Pipeline, blk *hclsyntax.Block, spec *ActionSpec, env Schema) *StepConfig {
	sc := &StepConfig{Pipeline: p.Name, Step: stepName(blk), Action: spec.Name, Config: l.cfg, Schema: env,
		Range: blk.TypeRange, values: map[string]any{}, ranges: map[string]hcl.Range{}}
	for _, as := range spec.Attrs {
		if a, ok := blk.Body.Attributes[as.Name]; ok {
			if v, diags := dec.decodeAttr(as, a.AsHCLAttribute(), env); !diags.HasErrors() {
				sc.values[as.Name] = v
			}
		}
	}
	return sc
}

// checkName refuses a pipeline, step, track or consumer name that is
// empty or holds "/", which joins pipeline and step names in references
// such as "provision/record", or blanks and control characters.
func (l *loader) checkName(kind, name string, rng hcl.Range) {
	if name == "" {
		l.errorf(rng, "Empty name", "A %s needs a name of at least one character.", kind)
		return
	}
	if i := strings.IndexFunc(name, func(r rune) bool {
		return r == '/' || unicode.IsSpace(r) || unicode.IsControl(r)
	}); i >= 0 {
		l.errorf(rng, "Invalid name", "The %s name %q holds %q; names may hold no \"/\" (it joins pipeline "+
			"and step names, as in \"provision/record\"), blanks or control characters.", kind, name, rune(name[i]))
	}
}

func stepName(blk *hclsyntax.Block) string {
	if len(blk.Labels) > 0 {
		return blk.Labels[0]
	}
	return blk.Type
}

func (l *loader) decodeStep(dec *decoder, p *Pipeline, blk *hclsyntax.Block, spec *ActionSpec,
	env Schema, names map[string]hcl.Range) *Step {
	before := len(l.diags)
	name := stepName(blk)
	nameRange := blk.TypeRange
	if len(blk.Labels) > 0 {
		nameRange = blk.LabelRanges[0]
	}
	if len(blk.Labels) > 1 {
		l.errorf(blk.LabelRanges[1], "Extra label", "A step has one name; remove %q.", blk.Labels[1])
	}
	l.checkName("step", name, nameRange)
	if first, dup := names[name]; dup {
		l.errorf(nameRange, "Duplicate step name",
			"A step named %q was already defined at %s. Step names identify results in the journal "+
				"and errmsg, so each must be unique within its pipeline.", name, at(first))
	} else {
		names[name] = nameRange
	}

	s := &Step{Name: name, Action: spec.Name, OnError: OnErrorFail, Timeout: DefaultStepTimeout,
		Retry: Retry{Attempts: 1, Backoff: time.Second, MaxBackoff: 30 * time.Second},
		Range: hcl.RangeBetween(blk.TypeRange, nameRange)}
	sc := &StepConfig{Pipeline: p.Name, Step: name, Action: spec.Name, Config: l.cfg, Schema: env,
		Range: s.Range, values: map[string]any{}, ranges: map[string]hcl.Range{}}
	s.Config = sc

	all := append(append([]AttrSpec{}, stepAttrs...), spec.Attrs...)
	l.decodeAttrs(dec, blk.Body, all, []string{"retry"}, env, func(name string, a *hclsyntax.Attribute, v any) {
		switch name {
		case "when":
			s.When = v.(*Program)
		case "on_error":
			s.OnError = v.(string)
		case "timeout":
			s.Timeout = v.(time.Duration)
		case "once":
			s.Once = v.(*Template)
		default:
			sc.values[name] = v
			sc.ranges[name] = a.Expr.Range()
		}
	})
	var retrySeen *hcl.Range
	for _, rb := range blk.Body.Blocks {
		if rb.Type != "retry" {
			detail := fmt.Sprintf("A step holds only arguments and a retry block, not %q.", rb.Type)
			if _, isAction := l.reg.Lookup(rb.Type); isAction {
				detail += " Steps cannot nest; close this step's brace first."
			} else if sug := Suggest(rb.Type, []string{"retry"}); sug != "" {
				detail += fmt.Sprintf(" Did you mean %q?", sug)
			}
			l.errorf(rb.TypeRange, "Unsupported block type", "%s", detail)
			continue
		}
		if retrySeen != nil {
			l.errorf(rb.TypeRange, "Duplicate retry block", "This step already has a retry block at %s.", at(*retrySeen))
			continue
		}
		retrySeen = &rb.TypeRange
		l.decodeRetry(dec, rb, &s.Retry)
	}
	// A step cut short by a syntax error may lack what New relies on, with no
	// error of its own saying so (see cutShort).
	broken := len(l.diags) > before && l.diags[before:].HasErrors() || l.cutShort(blk.Range())
	if broken {
		// New still checks the attributes that did decode, so that one run
		// reports them all; what it says about the others is dropped.
		sc.failed = map[string]bool{}
		for _, a := range spec.Attrs {
			if _, written := blk.Body.Attributes[a.Name]; written && !sc.Has(a.Name) {
				sc.failed[a.Name] = true
			}
		}
	}
	act, err := l.newAction(spec, sc, broken)
	if err != nil {
		if d, ok := err.(hcl.Diagnostics); ok {
			for _, d := range d {
				if _, drop := d.Extra.(followOn); !drop {
					l.diags = append(l.diags, d)
				}
			}
		} else if !broken {
			l.errorf(s.Range, "Invalid "+spec.Name+" step", "%s.", upperFirst(err.Error()))
		}
		return nil
	}
	if broken {
		return nil
	}
	s.Impl = act
	s.idempotent = spec.Idempotent
	return s
}

// newAction runs the action's constructor. For a step whose attributes had
// errors a panic is only a follow-on of them and is swallowed.
func (l *loader) newAction(spec *ActionSpec, sc *StepConfig, broken bool) (act Action, err error) {
	if broken {
		defer func() {
			if recover() != nil {
				act, err = nil, errors.New("incomplete step")
			}
		}()
	}
	return spec.New(sc)
}

func (l *loader) decodeRetry(dec *decoder, rb *hclsyntax.Block, r *Retry) {
	l.decodeAttrs(dec, rb.Body, retryAttrs, nil, nil, func(name string, a *hclsyntax.Attribute, v any) {
		switch name {
		case "attempts":
			r.Attempts = v.(int)
			if r.Attempts < 1 || r.Attempts > 100 {
				l.errorf(a.Expr.Range(), "Invalid attempts", "attempts counts every try, the first included; use 1 to 100.")
			}
		case "backoff":
			r.Backoff = v.(time.Duration)
		case "max_backoff":
			r.MaxBackoff = v.(time.Duration)
		}
	})
	if r.MaxBackoff < r.Backoff {
		l.errorf(rb.TypeRange, "Invalid retry", "max_backoff (%s) is shorter than backoff (%s).", r.MaxBackoff, r.Backoff)
	}
}

func (s Schema) clone() Schema {
	c := make(Schema, len(s))
	for k, v := range s {
		c[k] = v
	}
	return c
}

// evalContext provides env(NAME, DEFAULT) and file(PATH) to a file.
func evalContext(filename string) *hcl.EvalContext {
	dir := filepath.Dir(filename)
	envFn := function.New(&function.Spec{
		Params:   []function.Parameter{{Name: "name", Type: cty.String}},
		VarParam: &function.Parameter{Name: "default", Type: cty.String},
		Type:     function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			if len(args) > 2 {
				return cty.NilVal, fmt.Errorf("env takes a name and an optional default")
			}
			if v, ok := os.LookupEnv(args[0].AsString()); ok {
				return cty.StringVal(v), nil
			}
			if len(args) == 2 {
				return args[1], nil
			}
			return cty.NilVal, fmt.Errorf("environment variable %s is not set and no default was given; "+
				"write env(%q, \"default\")", args[0].AsString(), args[0].AsString())
		},
	})
	fileFn := function.New(&function.Spec{
		Params: []function.Parameter{{Name: "path", Type: cty.String}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			p := args[0].AsString()
			if !filepath.IsAbs(p) {
				p = filepath.Join(dir, p)
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return cty.NilVal, fmt.Errorf("cannot read %s: %w", p, err)
			}
			return cty.StringVal(string(b)), nil
		},
	})
	return &hcl.EvalContext{Functions: map[string]function.Function{"env": envFn, "file": fileFn}}
}

// hclRange matches HCL's own way of naming a place, file:line,col-col.
var hclRange = regexp.MustCompile(`(\S+):(\d+),(\d+)-\d+`)

// sameStyle rewrites places named in HCL's own diagnostics as
// file:line:col, the way regflow's name them.
func sameStyle(diags hcl.Diagnostics) {
	for _, d := range diags {
		d.Detail = hclRange.ReplaceAllString(d.Detail, "$1:$2:$3")
	}
}

// sortDiags orders diagnostics by file and position, so that a file reads
// from top to bottom whatever phase found each problem.
func sortDiags(diags hcl.Diagnostics) {
	sort.SliceStable(diags, func(i, j int) bool {
		a, b := diags[i].Subject, diags[j].Subject
		switch {
		case a == nil || b == nil:
			return a != nil
		case a.Filename != b.Filename:
			return a.Filename < b.Filename
		}
		return a.Start.Byte < b.Start.Byte
	})
}

// at formats where something stands as file:line:col.
func at(r hcl.Range) string {
	return fmt.Sprintf("%s:%d:%d", r.Filename, r.Start.Line, r.Start.Column)
}

// decodeAttrs reports what body holds beyond attrs and blocks, decodes
// each attribute of attrs that is set and hands it to set.
func (l *loader) decodeAttrs(dec *decoder, body *hclsyntax.Body, attrs []AttrSpec, blocks []string, env Schema,
	set func(name string, a *hclsyntax.Attribute, v any)) {
	l.checkBody(body, attrs, blocks)
	for _, spec := range attrs {
		a, ok := body.Attributes[spec.Name]
		if !ok {
			continue
		}
		v, diags := dec.decodeAttr(spec, a.AsHCLAttribute(), env)
		l.diags = append(l.diags, diags...)
		if !diags.HasErrors() {
			set(spec.Name, a, v)
		}
	}
}

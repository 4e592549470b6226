package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/types"
	"github.com/expr-lang/expr/vm"
	"github.com/hashicorp/hcl/v2"
)

// Program is an expr program compiled once at load and run per message.
type Program struct {
	Source string
	Range  hcl.Range    // where the source stands in its HCL file
	Type   reflect.Type // the result type the checker found; nil when unknown
	prog   *vm.Program
}

// Run evaluates the program against a message.
func (p *Program) Run(env map[string]any) (any, error) {
	out, err := expr.Run(p.prog, env)
	if err != nil {
		return nil, fmt.Errorf("%s: %s", p.Source, exprMessage(err))
	}
	return out, nil
}

// Bool runs a program compiled as a condition.
func (p *Program) Bool(env map[string]any) (bool, error) {
	out, err := p.Run(env)
	if err != nil {
		return false, err
	}
	b, ok := out.(bool)
	if !ok {
		return false, fmt.Errorf("%s: result is %s, not a boolean", p.Source, jsonKind(out))
	}
	return b, nil
}

// exprMessage is an expr error without its source snippet, on one line.
func exprMessage(err error) string {
	var fe *file.Error
	if errors.As(err, &fe) {
		return fe.Message
	}
	return err.Error()
}

// Template is a string with embedded {{ expr }} parts, compiled at load.
type Template struct {
	Source string
	Range  hcl.Range
	parts  []templatePart
}

type templatePart struct {
	text string
	prog *Program // nil for literal text
}

// ConstTemplate returns a template that always renders s.
func ConstTemplate(s string) *Template {
	return &Template{Source: s, parts: []templatePart{{text: s}}}
}

// IsConst reports whether the template has no expressions.
func (t *Template) IsConst() bool {
	for _, p := range t.parts {
		if p.prog != nil {
			return false
		}
	}
	return true
}

// Render evaluates each embedded expression and joins the parts. A nil
// (absent) value renders as the empty string, numbers in decimal, lists
// and objects as JSON.
func (t *Template) Render(env map[string]any) (string, error) {
	if len(t.parts) == 1 && t.parts[0].prog == nil {
		return t.parts[0].text, nil
	}
	var b strings.Builder
	for _, p := range t.parts {
		if p.prog == nil {
			b.WriteString(p.text)
			continue
		}
		v, err := p.prog.Run(env)
		if err != nil {
			return "", err
		}
		b.WriteString(FormatValue(v))
	}
	return b.String(), nil
}

// FormatValue renders a run-time value as template text.
func FormatValue(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case int:
		return strconv.Itoa(v)
	case int64:
		return strconv.FormatInt(v, 10)
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(v)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// exprOptions are the names every program sees besides msg.
func exprOptions(env types.Map) []expr.Option {
	return []expr.Option{
		expr.Env(env),
		expr.Function("queuename",
			func(args ...any) (any, error) {
				s, ok := args[0].(string)
				if !ok {
					return nil, fmt.Errorf("queuename: want a string, got %s", jsonKind(args[0]))
				}
				return QueueName(s), nil
			},
			QueueName,
		),
	}
}

// exprEnv is the compile-time environment for a message of schema s.
func exprEnv(s Schema) types.Map {
	return types.Map{
		"msg":         s.exprMap(),
		"routing_key": types.String,
	}
}

// looseEnv declares the same names as exprEnv with every field of type
// any. Programs are type-checked against exprEnv and compiled to run
// against looseEnv: a typed program uses operations specialised to its
// types, which fail on the nil of an absent field instead of comparing
// it. Compiled loosely, msg.reason != 'test' is true when reason is
// absent, and msg.uid > 10 fails the step with a clear error.
func looseEnv(s Schema) types.Map {
	m := make(types.Map, len(s))
	for name := range s {
		m[name] = types.Any
	}
	return types.Map{"msg": m, "routing_key": types.String}
}

// Env returns the run-time environment for msg arriving on key.
func Env(msg Message, key string) map[string]any {
	return map[string]any{"msg": msg, "routing_key": key}
}

// source maps text inside an HCL expression back to file positions.
type source struct {
	bytes []byte    // the whole file
	rng   hcl.Range // the expression
	next  int       // where to search for the next fragment
}

// locate returns the range of fragment in the file, searching forward from
// the previous fragment, or the whole expression when it cannot be found
// (the string had escapes that changed its text).
func (s *source) locate(fragment string) (hcl.Range, bool) {
	if s.bytes == nil || s.rng.End.Byte > len(s.bytes) {
		return s.rng, false
	}
	if s.next < s.rng.Start.Byte {
		s.next = s.rng.Start.Byte
	}
	i := strings.Index(string(s.bytes[s.next:s.rng.End.Byte]), fragment)
	if i < 0 {
		return s.rng, false
	}
	start := s.next + i
	s.next = start + len(fragment)
	return hcl.Range{
		Filename: s.rng.Filename,
		Start:    posAt(s.bytes, start),
		End:      posAt(s.bytes, start+len(fragment)),
	}, true
}

// posAt converts a byte offset in src into an HCL position. Columns count
// characters, as HCL's do.
func posAt(src []byte, off int) hcl.Pos {
	line, lineStart := 1, 0
	for i := 0; i < off && i < len(src); i++ {
		if src[i] == '\n' {
			line++
			lineStart = i + 1
		}
	}
	return hcl.Pos{Line: line, Column: utf8.RuneCount(src[lineStart:off]) + 1, Byte: off}
}

// subRange narrows r, the range of an expression's text, to the runes
// from..to of that text. expr counts runes; HCL counts bytes.
func subRange(src []byte, r hcl.Range, text string, from, to int) hcl.Range {
	if src == nil || r.End.Byte-r.Start.Byte != len(text) {
		return r
	}
	b0, b1 := runeToByte(text, from), runeToByte(text, to)
	if b1 <= b0 {
		b1 = b0 + 1
		if b1 > len(text) {
			b1 = len(text)
		}
	}
	return hcl.Range{
		Filename: r.Filename,
		Start:    posAt(src, r.Start.Byte+b0),
		End:      posAt(src, r.Start.Byte+b1),
	}
}

func runeToByte(s string, n int) int {
	for i := range s {
		if n == 0 {
			return i
		}
		n--
	}
	return len(s)
}

var (
	reUnknownField = regexp.MustCompile(`^unknown field ([A-Za-z_][A-Za-z0-9_]*)`)
	reUnknownName  = regexp.MustCompile(`^unknown name ([A-Za-z_][A-Za-z0-9_]*)`)
	reNotBool      = regexp.MustCompile(`^expected bool, but got (.+)$`)
)

// exprDiag turns an expr compile error into a diagnostic at the exact
// place in the HCL file. what names the kind of expression ("condition",
// "template expression").
func exprDiag(err error, what, text string, rng hcl.Range, src []byte, env Schema) *hcl.Diagnostic {
	msg := exprMessage(err)
	subject := rng
	var fe *file.Error
	if errors.As(err, &fe) {
		to := fe.To
		if to <= fe.From {
			to = fe.From + 1
		}
		subject = subRange(src, rng, text, fe.From, to)
	}
	d := &hcl.Diagnostic{Severity: hcl.DiagError, Subject: &subject}
	switch {
	case reUnknownField.MatchString(msg):
		name := reUnknownField.FindStringSubmatch(msg)[1]
		d.Summary = "Unknown message field"
		d.Detail = fmt.Sprintf("The message has no field %q here.", name)
		if s := Suggest(name, env.Names()); s != "" {
			d.Detail += fmt.Sprintf(" Did you mean %q?", s)
		}
		d.Detail += " Fields known at this step: " + quoteList(env.Names()) +
			". Declare new fields in the message block."
		// expr points after the dot; underline the name itself.
		if i := strings.Index(text, "."+name); i >= 0 {
			from := utf8.RuneCountInString(text[:i+1])
			sub := subRange(src, rng, text, from, from+utf8.RuneCountInString(name))
			d.Subject = &sub
		}
	case reUnknownName.MatchString(msg):
		name := reUnknownName.FindStringSubmatch(msg)[1]
		d.Summary = "Unknown name"
		d.Detail = fmt.Sprintf("There is no variable %q. Expressions see msg (the message) "+
			"and routing_key.", name)
		if _, ok := env[name]; ok {
			d.Detail += fmt.Sprintf(" Did you mean \"msg.%s\"?", name)
		}
	case reNotBool.MatchString(msg):
		got := friendlyType(reNotBool.FindStringSubmatch(msg)[1])
		d.Summary = "Condition is not a boolean"
		d.Detail = fmt.Sprintf("This %s yields %s, but it must be true or false. "+
			"Compare the value, for example %s != nil.", what, got, strings.TrimSpace(text))
		d.Subject = &rng
	default:
		d.Summary = "Invalid " + what
		d.Detail = fmt.Sprintf("%s in %q.", upperFirst(msg), strings.TrimSpace(text))
	}
	return d
}

// friendlyType names an expr type as a user thinks of it.
func friendlyType(t string) string {
	switch {
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"), strings.HasPrefix(t, "float"):
		return "a number"
	case t == "string":
		return "a string"
	case strings.HasPrefix(t, "[]"):
		return "a list"
	case strings.HasPrefix(t, "map"):
		return "an object"
	case t == "<nil>", t == "nil":
		return "nil"
	}
	return t
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	r, n := utf8.DecodeRuneInString(s)
	return strings.ToUpper(string(r)) + s[n:]
}

// compileCondition compiles text, found at rng, as a boolean expression
// over messages of schema env.
func compileCondition(text string, rng hcl.Range, src []byte, env Schema) (*Program, *hcl.Diagnostic) {
	opts := append(exprOptions(exprEnv(env)), expr.AsBool())
	if _, err := expr.Compile(text, opts...); err != nil {
		return nil, exprDiag(err, "condition", text, rng, src, env)
	}
	p, err := expr.Compile(text, exprOptions(looseEnv(env))...)
	if err != nil {
		return nil, exprDiag(err, "condition", text, rng, src, env)
	}
	return &Program{Source: text, Range: rng, prog: p}, nil
}

// compileValue compiles text as an expression of any type.
func compileValue(text string, rng hcl.Range, src []byte, env Schema) (*Program, *hcl.Diagnostic) {
	typed, err := expr.Compile(text, exprOptions(exprEnv(env))...)
	if err != nil {
		return nil, exprDiag(err, "expression", text, rng, src, env)
	}
	p, err := expr.Compile(text, exprOptions(looseEnv(env))...)
	if err != nil {
		return nil, exprDiag(err, "expression", text, rng, src, env)
	}
	return &Program{Source: text, Range: rng, Type: typed.Node().Type(), prog: p}, nil
}

// compileTemplate splits text into literal parts and {{ expr }} parts and
// compiles each expression.
func compileTemplate(text string, rng hcl.Range, src []byte, env Schema) (*Template, hcl.Diagnostics) {
	t := &Template{Source: text, Range: rng}
	var diags hcl.Diagnostics
	loc := &source{bytes: src, rng: rng}
	rest := text
	for rest != "" {
		open := strings.Index(rest, "{{")
		if open < 0 {
			t.parts = append(t.parts, templatePart{text: rest})
			break
		}
		if open > 0 {
			t.parts = append(t.parts, templatePart{text: rest[:open]})
		}
		closing := strings.Index(rest[open+2:], "}}")
		if closing < 0 {
			r, _ := loc.locate(rest[open:])
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Unclosed template expression",
				Detail:   "A \"{{\" in this string has no matching \"}}\". Close it, or write a literal {{ as {{ \"{{\" }}.",
				Subject:  &r,
			})
			break
		}
		inner := rest[open+2 : open+2+closing]
		if strings.Contains(inner, "{{") {
			r, _ := loc.locate(rest[open:])
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Unclosed template expression",
				Detail: fmt.Sprintf("The {{ that begins %q is not closed by }} before the next {{.",
					truncate(rest[open:], 30)),
				Subject: &r,
			})
			break
		}
		r, found := loc.locate(inner)
		code := strings.TrimSpace(inner)
		if code == "" {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Empty template expression",
				Detail:   "Put an expression between {{ and }}, for example {{ msg.username }}.",
				Subject:  &r,
			})
		} else {
			// Narrow the range to the trimmed code so carets land on it.
			lead := len(inner) - len(strings.TrimLeft(inner, " \t\r\n"))
			if found {
				r = subRange(src, r, inner, utf8.RuneCountInString(inner[:lead]),
					utf8.RuneCountInString(inner[:lead])+utf8.RuneCountInString(code))
			}
			p, d := compileValue(code, r, src, env)
			if d != nil {
				d.Summary = strings.Replace(d.Summary, "expression", "template expression", 1)
				diags = append(diags, d)
			} else {
				t.parts = append(t.parts, templatePart{prog: p})
			}
		}
		rest = rest[open+2+closing+2:]
	}
	if len(t.parts) == 0 {
		t.parts = []templatePart{{text: ""}}
	}
	return t, diags
}

// CompileTemplate compiles a template that does not come from a file, such
// as an action's default.
func CompileTemplate(text string, env Schema) (*Template, hcl.Diagnostics) {
	return compileTemplate(text, hcl.Range{}, nil, env)
}

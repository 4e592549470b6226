package engine

import (
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// AttrKind is how an attribute's value is written and decoded.
type AttrKind int

// Attribute kinds.
const (
	AttrString      AttrKind = iota // a plain string
	AttrTemplate                    // a string that may embed {{ expr }}
	AttrTemplates                   // a list of templates
	AttrStrings                     // a list of plain strings
	AttrInt                         // a whole number
	AttrBool                        // true or false
	AttrDuration                    // a Go duration such as "30s"
	AttrCondition                   // an expr program that yields a bool
	AttrExprMap                     // { field = "expr" }: values computed per message
	AttrStringMap                   // { name = "text" }
	AttrTemplateMap                 // { name = "text with {{ expr }}" }
	AttrRules                       // { "expr condition" = "message when false" }
	AttrIntRange                    // [low, high]
)

// String names the kind as the reference shows it.
func (k AttrKind) String() string {
	return [...]string{
		"string", "template", "list(template)", "list(string)", "number", "bool",
		"duration", "condition", "map(expression)", "map(string)", "map(template)",
		"map(condition → message)", "[low, high]",
	}[k]
}

// AttrSpec declares one attribute of a block.
type AttrSpec struct {
	Name     string
	Kind     AttrKind
	Required bool
	Default  string   // as the reference shows it; "" when there is none
	Enum     []string // allowed values of an AttrString
	Doc      string
	Example  string // one line of HCL for the reference
}

// NamedProgram is one entry of an AttrExprMap.
type NamedProgram struct {
	Name    string
	Program *Program
}

// NamedTemplate is one entry of an AttrTemplateMap.
type NamedTemplate struct {
	Name     string
	Template *Template
}

// Pair is one entry of an AttrStringMap.
type Pair struct {
	Key, Value string
	Range      hcl.Range
}

// Rule is one entry of an AttrRules map.
type Rule struct {
	Check   *Program
	Message string
}

// StepConfig is a step's decoded attributes, handed to ActionSpec.New and
// ActionSpec.Adds. Getters return the zero value for an absent attribute.
type StepConfig struct {
	Pipeline string
	Step     string
	Action   string
	Config   *Config // the whole configuration, for defaults from broker and mail
	Schema   Schema  // message fields this step may use
	Range    hcl.Range

	values map[string]any
	ranges map[string]hcl.Range
	failed map[string]bool // attributes written but reported already, as they did not decode
}

// followOn marks a diagnostic about an attribute that did not decode: the
// loader drops it, as the attribute's own error says what is wrong.
type followOn struct{}

// Has reports whether the attribute was set.
func (c *StepConfig) Has(name string) bool { _, ok := c.values[name]; return ok }

// AttrRange returns where the attribute was set, or the block.
func (c *StepConfig) AttrRange(name string) hcl.Range {
	if r, ok := c.ranges[name]; ok {
		return r
	}
	return c.Range
}

// String returns an AttrString, or def when it is absent.
func (c *StepConfig) String(name, def string) string {
	if v, ok := c.values[name].(string); ok {
		return v
	}
	return def
}

// Template returns an AttrTemplate, or nil.
func (c *StepConfig) Template(name string) *Template {
	t, _ := c.values[name].(*Template)
	return t
}

// Templates returns an AttrTemplates list.
func (c *StepConfig) Templates(name string) []*Template {
	t, _ := c.values[name].([]*Template)
	return t
}

// Strings returns an AttrStrings list.
func (c *StepConfig) Strings(name string) []string {
	s, _ := c.values[name].([]string)
	return s
}

// Int returns an AttrInt, or def.
func (c *StepConfig) Int(name string, def int) int {
	if v, ok := c.values[name].(int); ok {
		return v
	}
	return def
}

// Bool returns an AttrBool, or def.
func (c *StepConfig) Bool(name string, def bool) bool {
	if v, ok := c.values[name].(bool); ok {
		return v
	}
	return def
}

// Duration returns an AttrDuration, or def.
func (c *StepConfig) Duration(name string, def time.Duration) time.Duration {
	if v, ok := c.values[name].(time.Duration); ok {
		return v
	}
	return def
}

// Condition returns an AttrCondition, or nil.
func (c *StepConfig) Condition(name string) *Program {
	p, _ := c.values[name].(*Program)
	return p
}

// ExprMap returns an AttrExprMap in the order written.
func (c *StepConfig) ExprMap(name string) []NamedProgram {
	m, _ := c.values[name].([]NamedProgram)
	return m
}

// StringMap returns an AttrStringMap in the order written.
func (c *StepConfig) StringMap(name string) []Pair {
	m, _ := c.values[name].([]Pair)
	return m
}

// TemplateMap returns an AttrTemplateMap in the order written.
func (c *StepConfig) TemplateMap(name string) []NamedTemplate {
	m, _ := c.values[name].([]NamedTemplate)
	return m
}

// Rules returns an AttrRules map in the order written.
func (c *StepConfig) Rules(name string) []Rule {
	r, _ := c.values[name].([]Rule)
	return r
}

// IntRange returns an AttrIntRange.
func (c *StepConfig) IntRange(name string) (lo, hi int64, ok bool) {
	r, ok := c.values[name].([2]int64)
	return r[0], r[1], ok
}

// Errorf returns a diagnostic, as an error, against the named attribute.
// ActionSpec.New returns it to report a value that is well-formed but
// wrong, such as a range whose low end is above its high end.
func (c *StepConfig) Errorf(attr, summary, format string, args ...any) error {
	r := c.AttrRange(attr)
	d := &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   fmt.Sprintf(format, args...),
		Subject:  &r,
	}
	if c.failed[attr] {
		d.Extra = followOn{}
	}
	return hcl.Diagnostics{d}
}

// JoinErrors merges errors from Errorf and ErrorAt into one, so that a
// step reports every problem at once; nil when there are none.
func JoinErrors(errs []error) error {
	var all hcl.Diagnostics
	for _, err := range errs {
		if d, ok := err.(hcl.Diagnostics); ok {
			all = append(all, d...)
		} else if err != nil {
			all = append(all, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid step", Detail: err.Error()})
		}
	}
	if len(all) == 0 {
		return nil
	}
	return all
}

// ErrorAt returns a diagnostic, as an error, at rng: a part of an
// attribute such as one entry of a map.
func (c *StepConfig) ErrorAt(rng hcl.Range, summary, format string, args ...any) error {
	if rng.Filename == "" {
		rng = c.Range
	}
	return hcl.Diagnostics{diag(rng, summary, fmt.Sprintf(format, args...))}
}

// decoder decodes attribute values of one file.
type decoder struct {
	ctx *hcl.EvalContext
	src []byte
}

func diag(rng hcl.Range, summary, detail string) *hcl.Diagnostic {
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail, Subject: rng.Ptr()}
}

// eval evaluates a load-time expression: literals and the env() and file()
// functions. A reference to msg gets a diagnostic that explains {{ }}.
func (d *decoder) eval(e hcl.Expression) (cty.Value, hcl.Diagnostics) {
	// Report the first variable: one is enough to say what to do.
	if vars := e.Variables(); len(vars) > 0 {
		tr := vars[0]
		root := tr.RootName()
		rng := tr.SourceRange()
		if root == "msg" || root == "routing_key" {
			return cty.NilVal, hcl.Diagnostics{diag(rng, "Message fields are not known at load time",
				fmt.Sprintf("HCL's ${ } is evaluated once, when the file loads. To use the message "+
					"write {{ %s }} inside a string instead.", string(d.src[rng.Start.Byte:rng.End.Byte])))}
		}
		return cty.NilVal, hcl.Diagnostics{diag(rng, "Variables not allowed",
			fmt.Sprintf("There is no variable %q. Values are literals or calls of env() and file(); "+
				"message fields are written {{ msg.field }} inside strings.", root))}
	}
	v, diags := e.Value(d.ctx)
	if diags.HasErrors() {
		return cty.NilVal, diags
	}
	if v.IsNull() {
		return cty.NilVal, hcl.Diagnostics{diag(e.Range(), "Null value", "This argument needs a value.")}
	}
	if !v.IsWhollyKnown() {
		// What the parser salvaged from a syntax error, such as "-" alone.
		return cty.NilVal, hcl.Diagnostics{diag(e.Range(), "Incomplete value",
			"This argument's value cannot be worked out; look for a syntax error in it.")}
	}
	return v, nil
}

func (d *decoder) str(e hcl.Expression, what string) (string, hcl.Diagnostics) {
	v, diags := d.eval(e)
	if diags.HasErrors() {
		return "", diags
	}
	switch v.Type() {
	case cty.String:
		return v.AsString(), nil
	case cty.Number, cty.Bool:
		return "", hcl.Diagnostics{diag(e.Range(), "Expected a string",
			fmt.Sprintf("%s must be a string; put the value in quotes.", what))}
	}
	return "", hcl.Diagnostics{diag(e.Range(), "Expected a string",
		fmt.Sprintf("%s must be a string, not %s.", what, v.Type().FriendlyName()))}
}

func (d *decoder) list(e hcl.Expression, what string) ([]hcl.Expression, hcl.Diagnostics) {
	items, diags := hcl.ExprList(e)
	if diags.HasErrors() {
		return nil, hcl.Diagnostics{diag(e.Range(), "Expected a list",
			fmt.Sprintf("%s must be a list in brackets, such as [\"a\", \"b\"].", what))}
	}
	return items, nil
}

func (d *decoder) pairs(e hcl.Expression, what string) ([]hcl.KeyValuePair, hcl.Diagnostics) {
	kvs, diags := hcl.ExprMap(e)
	if diags.HasErrors() {
		return nil, hcl.Diagnostics{diag(e.Range(), "Expected a map",
			fmt.Sprintf("%s must be a map in braces, such as { name = \"value\" }.", what))}
	}
	return kvs, nil
}

func (d *decoder) number(e hcl.Expression, what string) (int64, hcl.Diagnostics) {
	v, diags := d.eval(e)
	if diags.HasErrors() {
		return 0, diags
	}
	if v.Type() == cty.String {
		// Accept "10" from env(), which only yields strings.
		if n, ok := new(big.Int).SetString(strings.TrimSpace(v.AsString()), 10); ok && n.IsInt64() {
			return n.Int64(), nil
		}
	}
	if v.Type() != cty.Number {
		return 0, hcl.Diagnostics{diag(e.Range(), "Expected a number",
			fmt.Sprintf("%s must be a whole number.", what))}
	}
	bf := v.AsBigFloat()
	n, acc := bf.Int64()
	if acc != big.Exact {
		return 0, hcl.Diagnostics{diag(e.Range(), "Expected a whole number",
			fmt.Sprintf("%s must be a whole number that fits in 64 bits.", what))}
	}
	return n, nil
}

func (d *decoder) boolean(e hcl.Expression, what string) (bool, hcl.Diagnostics) {
	v, diags := d.eval(e)
	if diags.HasErrors() {
		return false, diags
	}
	if v.Type() == cty.String {
		switch v.AsString() {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
	}
	if v.Type() != cty.Bool {
		return false, hcl.Diagnostics{diag(e.Range(), "Expected true or false",
			fmt.Sprintf("%s must be true or false, without quotes.", what))}
	}
	return v.True(), nil
}

// decodeAttr decodes one attribute of a step according to spec, compiling
// conditions and templates against schema.
func (d *decoder) decodeAttr(spec AttrSpec, a *hcl.Attribute, schema Schema) (any, hcl.Diagnostics) {
	what := fmt.Sprintf("The argument %q", spec.Name)
	switch spec.Kind {
	case AttrString:
		s, diags := d.str(a.Expr, what)
		if diags.HasErrors() {
			return nil, diags
		}
		if len(spec.Enum) > 0 && !contains(spec.Enum, s) {
			detail := fmt.Sprintf("%s must be one of %s.", what, quoteList(spec.Enum))
			if sug := Suggest(s, spec.Enum); sug != "" {
				detail += fmt.Sprintf(" Did you mean %q?", sug)
			}
			return nil, hcl.Diagnostics{diag(a.Expr.Range(), "Invalid value", detail)}
		}
		return s, nil
	case AttrTemplate:
		return d.template(a.Expr, what, schema)
	case AttrCondition:
		s, diags := d.str(a.Expr, what)
		if diags.HasErrors() {
			return nil, diags
		}
		p, dg := compileCondition(s, d.textRange(a.Expr, s), d.src, schema)
		if dg != nil {
			return nil, hcl.Diagnostics{dg}
		}
		return p, nil
	case AttrTemplates, AttrStrings:
		items, diags := d.list(a.Expr, what)
		if diags.HasErrors() {
			return nil, diags
		}
		var ts []*Template
		var ss []string
		for _, it := range items {
			if spec.Kind == AttrStrings {
				s, dg := d.str(it, "Each element")
				diags = append(diags, dg...)
				ss = append(ss, s)
				continue
			}
			t, dg := d.template(it, "Each element", schema)
			diags = append(diags, dg...)
			ts = append(ts, t)
		}
		if spec.Kind == AttrStrings {
			return ss, diags
		}
		return ts, diags
	case AttrInt:
		n, diags := d.number(a.Expr, what)
		return int(n), diags
	case AttrBool:
		return d.boolean(a.Expr, what)
	case AttrDuration:
		s, diags := d.str(a.Expr, what)
		if diags.HasErrors() {
			return nil, diags
		}
		dur, err := time.ParseDuration(s)
		if err != nil || dur <= 0 {
			return nil, hcl.Diagnostics{diag(a.Expr.Range(), "Invalid duration",
				fmt.Sprintf("%s must be a positive duration such as \"500ms\", \"30s\" or \"2m\", not %q.", what, s))}
		}
		return dur, nil
	case AttrIntRange:
		items, diags := d.list(a.Expr, what)
		if diags.HasErrors() {
			return nil, diags
		}
		if len(items) != 2 {
			return nil, hcl.Diagnostics{diag(a.Expr.Range(), "Invalid range",
				fmt.Sprintf("%s must be [low, high], two numbers.", what))}
		}
		lo, d1 := d.number(items[0], "The low end")
		hi, d2 := d.number(items[1], "The high end")
		diags = append(d1, d2...)
		if diags.HasErrors() {
			return nil, diags
		}
		if lo > hi {
			return nil, hcl.Diagnostics{diag(a.Expr.Range(), "Invalid range",
				fmt.Sprintf("The low end %d is above the high end %d; write [%d, %d].", lo, hi, hi, lo))}
		}
		return [2]int64{lo, hi}, nil
	case AttrExprMap, AttrStringMap, AttrTemplateMap, AttrRules:
		return d.decodeMap(spec, a, schema)
	}
	panic("engine: unknown attribute kind")
}

func (d *decoder) decodeMap(spec AttrSpec, a *hcl.Attribute, schema Schema) (any, hcl.Diagnostics) {
	what := fmt.Sprintf("The argument %q", spec.Name)
	kvs, diags := d.pairs(a.Expr, what)
	if diags.HasErrors() {
		return nil, diags
	}
	var (
		progs []NamedProgram
		pairs []Pair
		tmpls []NamedTemplate
		rules []Rule
		seen  = map[string]hcl.Range{}
	)
	for _, kv := range kvs {
		key, dg := d.str(kv.Key, "A key")
		if dg.HasErrors() {
			diags = append(diags, dg...)
			continue
		}
		if first, dup := seen[key]; dup {
			diags = append(diags, diag(kv.Key.Range(), "Duplicate key",
				fmt.Sprintf("The key %q was already set at %s.", key, at(first))))
			continue
		}
		seen[key] = kv.Key.Range()
		switch spec.Kind {
		case AttrExprMap:
			s, dg := d.str(kv.Value, fmt.Sprintf("The value of %q", key))
			if dg.HasErrors() {
				diags = append(diags, dg...)
				continue
			}
			p, dd := compileValue(s, d.textRange(kv.Value, s), d.src, schema)
			if dd != nil {
				diags = append(diags, dd)
				continue
			}
			progs = append(progs, NamedProgram{Name: key, Program: p})
		case AttrStringMap:
			s, dg := d.str(kv.Value, fmt.Sprintf("The value of %q", key))
			diags = append(diags, dg...)
			pairs = append(pairs, Pair{Key: key, Value: s, Range: kv.Key.Range()})
		case AttrTemplateMap:
			t, dg := d.template(kv.Value, fmt.Sprintf("The value of %q", key), schema)
			diags = append(diags, dg...)
			tmpls = append(tmpls, NamedTemplate{Name: key, Template: t})
		case AttrRules:
			p, dd := compileCondition(key, d.textRange(kv.Key, key), d.src, schema)
			if dd != nil {
				diags = append(diags, dd)
				continue
			}
			msg, dg := d.str(kv.Value, "The message of a rule")
			diags = append(diags, dg...)
			rules = append(rules, Rule{Check: p, Message: msg})
		}
	}
	switch spec.Kind {
	case AttrExprMap:
		return progs, diags
	case AttrStringMap:
		return pairs, diags
	case AttrTemplateMap:
		return tmpls, diags
	}
	return rules, diags
}

func (d *decoder) template(e hcl.Expression, what string, schema Schema) (*Template, hcl.Diagnostics) {
	s, diags := d.str(e, what)
	if diags.HasErrors() {
		return nil, diags
	}
	return compileTemplate(s, d.textRange(e, s), d.src, schema)
}

// textRange returns the range of the string's text inside its quotes when
// the source spells the value out unchanged, so that expr positions can be
// mapped onto it; otherwise the whole expression.
func (d *decoder) textRange(e hcl.Expression, value string) hcl.Range {
	r := e.Range()
	if tw, ok := e.(*hclsyntax.TemplateWrapExpr); ok {
		r = tw.Wrapped.Range()
	}
	if te, ok := e.(*hclsyntax.TemplateExpr); ok && len(te.Parts) == 1 {
		r = te.Parts[0].Range()
	}
	if ok, isKey := e.(*hclsyntax.ObjectConsKeyExpr); isKey {
		return d.textRange(ok.Wrapped, value)
	}
	if d.src != nil && r.End.Byte <= len(d.src) && r.Start.Byte <= r.End.Byte {
		if string(d.src[r.Start.Byte:r.End.Byte]) == value {
			return r
		}
		// A quoted literal's range includes the quotes.
		if r.End.Byte-r.Start.Byte == len(value)+2 &&
			string(d.src[r.Start.Byte+1:r.End.Byte-1]) == value {
			return hcl.Range{Filename: r.Filename, Start: posAt(d.src, r.Start.Byte+1), End: posAt(d.src, r.End.Byte-1)}
		}
	}
	return e.Range()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

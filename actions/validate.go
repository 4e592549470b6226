package actions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"

	"regflow/engine"
)

// DefaultReserved are user names validate refuses unless reserved is set:
// accounts every Unix system has, and names that would confuse people.
var DefaultReserved = []string{
	"root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp",
	"proxy", "www-data", "backup", "list", "irc", "gnats", "nobody", "systemd-network",
	"systemd-resolve", "messagebus", "sshd", "admin", "administrator", "operator", "postmaster",
	"abuse", "hostmaster", "webmaster", "support", "staff", "wheel", "adm", "tty", "disk",
}

// Validate checks a message before anything changes: required fields, no
// control characters, POSIX user names, bare email addresses, routing-key
// words, expr rules, and finally values that must be unique in the store.
var Validate = &engine.ActionSpec{
	Name:    "validate",
	Summary: "Refuse a message that is incomplete or malformed, naming the field and the rule it breaks.",
	Attrs: []engine.AttrSpec{
		{Name: "required", Kind: engine.AttrStrings, Doc: "Fields that must be present and not blank.",
			Example: `required = ["username", "email"]`},
		{Name: "absent", Kind: engine.AttrStrings,
			Doc: "Fields the message must not carry, such as those a later step adds: a request that " +
				"arrives with its own uid or errmsg is refused. An empty errmsg counts as absent; " +
				"success is set on every message and cannot be listed.",
			Example: `absent = ["uid", "gid", "errmsg", "notified"]`},
		{Name: "usernames", Kind: engine.AttrStrings,
			Doc: "Fields that must be portable POSIX user names: a lowercase letter or _ first, then " +
				"a-z, 0-9, _, - or ., at most 32 characters, not reserved."},
		{Name: "reserved", Kind: engine.AttrStrings, Default: "root, daemon, bin, … (see DefaultReserved)",
			Doc: "User names that are refused."},
		{Name: "emails", Kind: engine.AttrStrings,
			Doc: "Fields that must be one bare address (ana@example.org, not \"Ana <ana@example.org>\"). " +
				"An internationalized domain is rewritten in its ASCII (punycode) form."},
		{Name: "routing_words", Kind: engine.AttrStrings,
			Doc: "Fields that must be usable as one routing-key word: non-empty, no dots or wildcards."},
		{Name: "multiline", Kind: engine.AttrStrings,
			Doc: "String fields that may hold line breaks and tabs; every other string field refuses control characters."},
		{Name: "max_length", Kind: engine.AttrInt, Default: "256",
			Doc: "Longest a string field may be, in characters; multiline fields excepted."},
		{Name: "max_multiline", Kind: engine.AttrInt, Default: "4096",
			Doc: "Longest a multiline field may be, in characters."},
		{Name: "rules", Kind: engine.AttrRules,
			Doc:     "expr conditions that must hold, each with the message given when it does not.",
			Example: `rules = { "msg.queuename == queuename(msg.username)" = "queuename must be the encoded username" }`},
		{Name: "unique", Kind: engine.AttrStringMap,
			Doc: "Fields whose value may belong to one owner only, with the message when another owner " +
				"holds it. Checked last, and claimed for the owner when everything else passed.",
			Example: `unique = { email = "Email already exists" }`},
		{Name: "owner", Kind: engine.AttrStrings, Default: `["username"]`,
			Doc: "Fields naming who a unique value belongs to; the same owner may send it again. " +
				"With several fields the owner is all of their values together, so " +
				"`unique = { username = …, email = … }` with `owner = [\"username\", \"email\"]` " +
				"keeps a username and an address paired: neither can be registered again with another partner.",
			Example: `owner = ["username", "email"]`},
	},
	Idempotent: true,
	New:        newValidate,
}

type validate struct {
	required  []string
	absent    []string
	usernames []string
	reserved  map[string]bool
	emails    []string
	words     []string
	multiline map[string]bool
	rules     []engine.Rule
	unique    []engine.Pair
	owner     []string
	maxLen    int
	maxMulti  int
}

func newValidate(c *engine.StepConfig) (engine.Action, error) {
	v := &validate{
		required:  c.Strings("required"),
		absent:    c.Strings("absent"),
		usernames: c.Strings("usernames"),
		emails:    c.Strings("emails"),
		words:     c.Strings("routing_words"),
		rules:     c.Rules("rules"),
		unique:    c.StringMap("unique"),
		owner:     c.Strings("owner"),
		maxLen:    c.Int("max_length", 256),
		maxMulti:  c.Int("max_multiline", 4096),
		reserved:  map[string]bool{},
		multiline: map[string]bool{},
	}
	reserved := DefaultReserved
	if c.Has("reserved") {
		reserved = c.Strings("reserved")
	}
	for _, r := range reserved {
		v.reserved[r] = true
	}
	for _, m := range c.Strings("multiline") {
		v.multiline[m] = true
	}
	var errs []error
	for _, f := range v.absent {
		if f == "success" {
			errs = append(errs, c.Errorf("absent", "Field set on every message",
				"absent names success, which every pipeline sets on the message it runs; it cannot be absent."))
			continue
		}
		// Any declared field, also one that only a later step adds.
		if _, ok := c.Config.Message[f]; !ok {
			errs = append(errs, c.Errorf("absent", "Unknown message field",
				"absent names the field %q, which the message block does not declare.%s",
				f, didYouMean(f, c.Config.Message.Names())))
		}
	}
	for _, attr := range []string{"required", "usernames", "emails", "routing_words", "multiline"} {
		for _, f := range c.Strings(attr) {
			if _, ok := c.Schema[f]; !ok {
				errs = append(errs, c.Errorf(attr, "Unknown message field",
					"%s names the field %q, which the message block does not declare.%s",
					attr, f, didYouMean(f, c.Schema.Names())))
			}
		}
	}
	// What checks text must be given text.
	for _, attr := range []string{"usernames", "emails", "routing_words", "multiline"} {
		for _, f := range c.Strings(attr) {
			if t, ok := c.Schema[f]; ok && t.Kind != engine.KindString && t.Kind != engine.KindAny {
				errs = append(errs, c.Errorf(attr, "Field is not a string",
					"%s names the field %q, which the message block declares as %s; it checks strings only.",
					attr, f, t))
			}
		}
	}
	for _, attr := range []string{"max_length", "max_multiline"} {
		if c.Has(attr) && c.Int(attr, 1) < 1 {
			errs = append(errs, c.Errorf(attr, "Invalid length", "%s is a number of characters and must be at least 1.", attr))
		}
	}
	for _, p := range v.unique {
		if _, ok := c.Schema[p.Key]; !ok {
			errs = append(errs, c.Errorf("unique", "Unknown message field",
				"unique names the field %q, which the message block does not declare.%s",
				p.Key, didYouMean(p.Key, c.Schema.Names())))
		}
	}
	if !c.Has("owner") {
		v.owner = []string{"username"}
	}
	if len(v.owner) == 0 {
		errs = append(errs, c.Errorf("owner", "Empty owner", "owner must name at least one message field."))
	}
	if len(v.unique) > 0 {
		for _, f := range v.owner {
			if _, ok := c.Schema[f]; !ok {
				errs = append(errs, c.Errorf("owner", "Unknown message field",
					"owner names the field %q, which the message block does not declare.%s",
					f, didYouMean(f, c.Schema.Names())))
			}
		}
	}
	if len(errs) > 0 {
		return nil, engine.JoinErrors(errs)
	}
	return v, nil
}

func (v *validate) Run(ctx context.Context, c *engine.Call) error {
	var problems []string
	reported := map[string]bool{}
	bad := func(field, format string, args ...any) {
		// One problem per field, the first rule it breaks: an empty
		// queuename is not also an empty routing word.
		if reported[field] {
			return
		}
		reported[field] = true
		problems = append(problems, field+": "+fmt.Sprintf(format, args...))
	}
	for _, f := range v.required {
		switch val := c.Msg[f].(type) {
		case nil:
			bad(f, "is required")
		case string:
			if strings.TrimSpace(val) == "" {
				bad(f, "must be non-empty")
			}
		}
	}
	for _, f := range v.absent {
		switch val := c.Msg[f].(type) {
		case nil:
		case []any: // errmsg is always there, empty unless someone sent one
			if len(val) > 0 || f != engine.FieldErrmsg {
				bad(f, "must not be set in this message")
			}
		default:
			bad(f, "must not be set in this message")
		}
	}
	for _, f := range sortedFields(c.Msg) {
		s, ok := c.Msg[f].(string)
		if !ok {
			continue
		}
		if r, ok := controlChar(s, v.multiline[f]); ok {
			bad(f, "control character %U is not allowed", r)
			continue
		}
		if r, ok := formatChar(s); ok {
			bad(f, "invisible format character %U is not allowed", r)
			continue
		}
		limit := v.maxLen
		if v.multiline[f] {
			limit = v.maxMulti
		}
		if n := utf8.RuneCountInString(s); n > limit {
			bad(f, "is %d characters long; at most %d are allowed", n, limit)
		}
	}
	for _, f := range v.usernames {
		if s, ok := c.Msg[f].(string); ok && s != "" {
			if err := CheckUsername(s, v.reserved); err != nil {
				bad(f, "%v", err)
			}
		}
	}
	for _, f := range v.emails {
		if s, ok := c.Msg[f].(string); ok && s != "" {
			addr, err := BareAddress(s)
			if err != nil {
				bad(f, "%v", err)
			} else if addr != s {
				c.Set(f, addr)
			}
		}
	}
	for _, f := range v.words {
		if s, ok := c.Msg[f].(string); ok {
			if err := engine.CheckWord(s); err != nil {
				bad(f, "%v", err)
			}
		}
	}
	if len(problems) == 0 {
		for _, r := range v.rules {
			ok, err := r.Check.Bool(c.Env())
			switch {
			case err != nil:
				problems = append(problems, "rule "+err.Error())
			case !ok:
				problems = append(problems, r.Message)
			}
		}
	}
	if len(problems) > 0 {
		return engine.Permanent(errors.New(strings.Join(problems, "; ")))
	}
	if err := v.claim(ctx, c); err != nil {
		return err
	}
	c.Notef("passed")
	return nil
}

// claim claims the unique values for the owner, all or none.
func (v *validate) claim(ctx context.Context, c *engine.Call) error {
	if len(v.unique) == 0 {
		return nil
	}
	parts := make([]string, len(v.owner))
	for i, f := range v.owner {
		parts[i] = claimValue(f, c.Msg[f])
		if parts[i] == "" {
			return engine.Permanent(fmt.Errorf("%s: is required to check unique values", f))
		}
	}
	owner := parts[0]
	if len(parts) > 1 {
		b, _ := json.Marshal(parts) // unambiguous whatever the values hold
		owner = string(b)
	}
	claims := make([]engine.Claim, 0, len(v.unique))
	for _, p := range v.unique {
		val := claimValue(p.Key, c.Msg[p.Key])
		if val == "" {
			continue
		}
		claims = append(claims, engine.Claim{Field: p.Key, Value: val, Message: p.Value})
	}
	conflict, err := c.Svc.Store.ClaimUnique(ctx, owner, claims)
	if err != nil {
		return err
	}
	if conflict != nil {
		return engine.Permanent(errors.New(conflict.Message))
	}
	return nil
}

// claimValue is the value of a field as claims compare it: addresses
// ignore case.
func claimValue(field string, v any) string {
	s := engine.FormatValue(v)
	if field == "email" || strings.Contains(s, "@") {
		s = strings.ToLower(s)
	}
	return s
}

// CheckUsername reports why name is not a portable POSIX user name, or is
// reserved.
func CheckUsername(name string, reserved map[string]bool) error {
	if n := utf8.RuneCountInString(name); n > 32 {
		return fmt.Errorf("must be at most 32 characters (has %d)", n)
	}
	for i, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r == '_':
		case i > 0 && (r >= '0' && r <= '9' || r == '-' || r == '.'):
		case i == 0 && (r >= '0' && r <= '9' || r == '-' || r == '.'):
			return fmt.Errorf("must begin with a lowercase letter or underscore, not %q", r)
		case r >= 'A' && r <= 'Z':
			return fmt.Errorf("must be lowercase (found %q)", r)
		default:
			return fmt.Errorf("character %q is not allowed; use a-z, 0-9, '_', '-' and '.'", r)
		}
	}
	if name == "" {
		return errors.New("must be non-empty")
	}
	if reserved[name] {
		return fmt.Errorf("%q is reserved", name)
	}
	return nil
}

// BareAddress checks that s is one email address without a display name
// and returns it with an internationalized domain in ASCII form.
func BareAddress(s string) (string, error) {
	if strings.TrimSpace(s) != s {
		return "", errors.New("must not have leading or trailing spaces")
	}
	// Checked before the domain, which would otherwise be blamed for the
	// ">" of "Ana <ana@example.org>".
	if strings.ContainsAny(s, "<>") {
		return "", errors.New("must be a bare address, without a name or angle brackets")
	}
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 {
		return "", errors.New("must be a bare address such as ana@example.org")
	}
	local, domain := s[:at], s[at+1:]
	if len(local) > 64 {
		return "", fmt.Errorf("the part before the @ is %d characters long; at most 64 are allowed", len(local))
	}
	if len(s) > 254 {
		return "", fmt.Errorf("is %d characters long; an address has at most 254", len(s))
	}
	if strings.HasPrefix(local, `"`) {
		return "", errors.New("a quoted local part is not supported; write the address without quotes")
	}
	ascii, err := idna.Lookup.ToASCII(domain)
	if err != nil {
		return "", fmt.Errorf("domain %q is not a valid internationalized domain name", domain)
	}
	for _, r := range local {
		if r > 0x7e {
			return "", errors.New("non-ASCII characters before the @ are not supported")
		}
	}
	candidate := local + "@" + ascii
	a, err := mail.ParseAddress(candidate)
	if err != nil || a.Name != "" {
		return "", errors.New("must be a bare address such as ana@example.org")
	}
	if a.Address != candidate {
		return "", fmt.Errorf("must be written as %s", a.Address)
	}
	return candidate, nil
}

// controlChar returns the first control character in s. With multiline,
// line breaks and tabs are allowed.
// formatChar returns the first Unicode format character of s: invisible
// marks such as U+202E, which reverses how the text after it is shown,
// and zero-width spaces, which make two names look alike. ZWNJ and ZWJ
// are allowed, since names in several scripts need them.
func formatChar(s string) (rune, bool) {
	for _, r := range s {
		if unicode.Is(unicode.Cf, r) && r != 0x200c && r != 0x200d {
			return r, true
		}
	}
	return 0, false
}

func controlChar(s string, multiline bool) (rune, bool) {
	for _, r := range s {
		if multiline && (r == '\n' || r == '\r' || r == '\t') {
			continue
		}
		if r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 || r == 0x2028 || r == 0x2029 {
			return r, true
		}
	}
	return 0, false
}

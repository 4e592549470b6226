package engine

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// DecodeMessage parses a message body, which must be one JSON object.
// Numbers are normalized (see Normalize). The error says what is wrong in
// words an operator can act on.
func DecodeMessage(body []byte) (Message, error) {
	var msg Message
	if err := decodeObject(body, &msg); err != nil {
		return nil, err
	}
	return msg, nil
}

func decodeObject(body []byte, msg *Message) error {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return errors.New("body is empty; expected a JSON object")
	}
	if !utf8.Valid(trimmed) {
		return fmt.Errorf("body is not valid UTF-8")
	}
	if trimmed[0] != '{' {
		return fmt.Errorf("body is not a JSON object (starts with %q)", truncate(string(trimmed), 20))
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return fmt.Errorf("body is not valid JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("body has data after the JSON object")
	}
	// encoding/json keeps the last of two equal keys; a check that read
	// the first would then approve what a step acts on differently.
	var problem error
	var problems []string     // for errmsg: "field: what is wrong"
	drop := map[string]bool{} // top-level fields that cannot be trusted
	if dup := duplicateKey(trimmed); dup != "" {
		problem = fmt.Errorf("body has the field %q twice", dup)
		top, _, nested := strings.Cut(dup, ".")
		// The same value given twice leaves no doubt which one counts:
		// the message is still refused, but its answer can use it.
		if nested || !sameValues(trimmed, top) {
			drop[top] = true
		}
		problems = append(problems, dup+": given twice in the body")
	}
	for _, k := range sortedKeys(m) {
		if err := checkNumbers(m[k], k); err != nil {
			problem = cmp.Or(problem, err)
			drop[k] = true
			if n, ok := err.(*numberOutOfRange); ok {
				problems = append(problems, n.path+": "+n.problem())
			}
		}
	}
	for k, v := range m {
		if drop[k] {
			delete(m, k)
			continue
		}
		m[k] = Normalize(v)
	}
	if problem != nil {
		return &RefusedBody{Err: problem, Problems: problems, Salvaged: m}
	}
	*msg = m
	return nil
}

// sameValues reports whether every top-level occurrence of key in the JSON
// object data has the same value.
func sameValues(data []byte, key string) bool {
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil {
		return false
	}
	var first []byte
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return false
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return false
		}
		if k != key {
			continue
		}
		var b bytes.Buffer
		if err := json.Compact(&b, raw); err != nil {
			return false
		}
		if first == nil {
			first = b.Bytes()
		} else if !bytes.Equal(first, b.Bytes()) {
			return false
		}
	}
	return true
}

// RefusedBody is the error for a body that is a JSON object but breaks a
// rule of the decoder, such as a field given twice. Problems say what is
// wrong field by field, for errmsg; Salvaged holds the fields that could
// be read without doubt, so that the sender can still be answered.
type RefusedBody struct {
	Err      error
	Problems []string
	Salvaged Message
}

func (e *RefusedBody) Error() string { return e.Err.Error() }
func (e *RefusedBody) Unwrap() error { return e.Err }

// checkNumbers refuses a number no float64 holds, such as 1e400: it would
// become infinity, which JSON cannot carry on. path names the field.
func checkNumbers(v any, path string) error {
	switch v := v.(type) {
	case json.Number:
		if _, err := strconv.ParseFloat(string(v), 64); err != nil {
			return &numberOutOfRange{path: path, number: truncate(string(v), 40)}
		}
	case []any:
		for _, e := range v {
			if err := checkNumbers(e, path); err != nil {
				return err
			}
		}
	case map[string]any:
		for _, k := range sortedKeys(v) {
			if err := checkNumbers(v[k], path+"."+k); err != nil {
				return err
			}
		}
	}
	return nil
}

// numberOutOfRange is checkNumbers' error.
type numberOutOfRange struct{ path, number string }

func (e *numberOutOfRange) Error() string {
	return fmt.Sprintf("field %q: %s", e.path, e.problem())
}

func (e *numberOutOfRange) problem() string { return "the number " + e.number + " is out of range" }

// duplicateKey returns the path of the first key that appears twice in
// one object of valid JSON data, "" when there is none.
func duplicateKey(data []byte) string {
	type level struct {
		keys    map[string]bool // nil for an array
		key     string          // the key whose value is being read
		wantKey bool
	}
	var stack []*level
	path := func(key string) string {
		var b strings.Builder
		for _, l := range stack[:len(stack)-1] {
			if l.keys != nil {
				b.WriteString(l.key)
				b.WriteByte('.')
			}
		}
		return b.String() + key
	}
	valueDone := func() {
		if n := len(stack); n > 0 && stack[n-1].keys != nil {
			stack[n-1].wantKey = true
		}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	for {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				stack = append(stack, &level{keys: map[string]bool{}, wantKey: true})
			case '[':
				stack = append(stack, &level{})
			default:
				stack = stack[:len(stack)-1]
				valueDone()
			}
		case string:
			if n := len(stack); n > 0 && stack[n-1].keys != nil && stack[n-1].wantKey {
				top := stack[n-1]
				if top.keys[t] {
					return path(t)
				}
				top.keys[t], top.key, top.wantKey = true, t, false
				continue
			}
			valueDone()
		default:
			valueDone()
		}
	}
}

// MessageIdentity is the identity of a delivery for the journal, the same
// for the same message delivered twice. It is the AMQP message id, when the
// producer set one, followed by a short digest of routing key and body, so
// that a producer reusing an id for another message does not replay the
// first one's results; without an id, the digest alone (which the runner
// extends per submission, see Runner.submission).
func MessageIdentity(messageID, key string, body []byte) string {
	h := sha256.New()
	h.Write([]byte(key))
	h.Write([]byte{0})
	h.Write(body)
	sum := hex.EncodeToString(h.Sum(nil))
	digest := "sha256:" + sum[:40]
	switch {
	case messageID == "":
		return digest
	case messageID == digest || strings.HasPrefix(messageID, digest+"@"):
		// A dead letter of a message without an id is replayed with its
		// identity as id (see Runner.submission): the same identity, so
		// its journal still counts.
		return messageID
	}
	return messageID + "#" + sum[:12]
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}

package engine

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/expr-lang/expr/types"
)

// Kind is the kind of value a message field holds.
type Kind int

// The kinds a message field can have. Their names in HCL are the lowercase
// words returned by Kind.String.
const (
	KindAny Kind = iota
	KindString
	KindNumber
	KindInteger
	KindBool
	KindList
	KindObject
)

// String returns the kind's name in HCL.
func (k Kind) String() string {
	switch k {
	case KindString:
		return "string"
	case KindNumber:
		return "number"
	case KindInteger:
		return "integer"
	case KindBool:
		return "bool"
	case KindList:
		return "list"
	case KindObject:
		return "object"
	}
	return "any"
}

// FieldType is the declared type of a message field: a kind, the element
// type of a list, and the inclusive bounds of a bounded integer.
type FieldType struct {
	Kind     Kind
	Elem     *FieldType // element type when Kind is KindList
	Bounded  bool       // Min and Max apply; only for KindInteger
	Min, Max int64
}

// Types used throughout the engine.
var (
	TypeAny        = FieldType{Kind: KindAny}
	TypeString     = FieldType{Kind: KindString}
	TypeNumber     = FieldType{Kind: KindNumber}
	TypeInteger    = FieldType{Kind: KindInteger}
	TypeBool       = FieldType{Kind: KindBool}
	TypeObject     = FieldType{Kind: KindObject}
	TypeStringList = ListOf(TypeString)
)

// ListOf returns the type of a list whose elements have type elem.
func ListOf(elem FieldType) FieldType {
	return FieldType{Kind: KindList, Elem: &elem}
}

// IntegerIn returns the type of an integer between lo and hi inclusive.
func IntegerIn(lo, hi int64) FieldType {
	return FieldType{Kind: KindInteger, Bounded: true, Min: lo, Max: hi}
}

// String returns the type as it is written in a message block.
func (t FieldType) String() string {
	switch {
	case t.Kind == KindList && t.Elem != nil:
		return "list(" + t.Elem.String() + ")"
	case t.Kind == KindInteger && t.Bounded:
		return fmt.Sprintf("integer(%d, %d)", t.Min, t.Max)
	}
	return t.Kind.String()
}

// AssignableTo reports whether every value of t is also a value of u.
func (t FieldType) AssignableTo(u FieldType) bool {
	switch {
	case u.Kind == KindAny:
		return true
	case t.Kind == KindInteger && u.Kind == KindNumber:
		return true
	case t.Kind != u.Kind:
		return false
	case t.Kind == KindList:
		return t.Elem == nil || u.Elem == nil || t.Elem.AssignableTo(*u.Elem)
	case t.Kind == KindInteger && u.Bounded:
		return t.Bounded && t.Min >= u.Min && t.Max <= u.Max
	}
	return true
}

// Accepts reports whether an expression whose checked result type is rt
// can yield a value of t; an unknown or interface type may.
func (t FieldType) Accepts(rt reflect.Type) bool {
	if rt == nil || rt.Kind() == reflect.Interface || t.Kind == KindAny {
		return true
	}
	switch t.Kind {
	case KindString:
		return rt.Kind() == reflect.String
	case KindBool:
		return rt.Kind() == reflect.Bool
	case KindInteger:
		return rt.Kind() >= reflect.Int && rt.Kind() <= reflect.Uint64
	case KindNumber:
		return rt.Kind() >= reflect.Int && rt.Kind() <= reflect.Float64
	case KindList:
		return rt.Kind() == reflect.Slice || rt.Kind() == reflect.Array
	case KindObject:
		return rt.Kind() == reflect.Map
	}
	return true
}

// exprType is the type the expr checker sees for a field of type t.
func (t FieldType) exprType() types.Type {
	switch t.Kind {
	case KindString:
		return types.String
	case KindNumber:
		return types.Float64
	case KindInteger:
		return types.Int
	case KindBool:
		return types.Bool
	case KindList:
		if t.Elem != nil {
			return types.Array(t.Elem.exprType())
		}
		return types.Array(types.Any)
	case KindObject:
		return types.TypeOf(map[string]any{})
	}
	return types.Any
}

// Normalize converts a value decoded from JSON (with json.Number for
// numbers) into its run-time form: integral numbers become int, others
// float64, and lists and objects are converted element by element.
func Normalize(v any) any {
	switch v := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			return int(i)
		}
		f, _ := v.Float64()
		if f == math.Trunc(f) && math.Abs(f) < 1<<53 {
			return int(f)
		}
		return f
	case float64:
		if v == math.Trunc(v) && math.Abs(v) < 1<<53 {
			return int(v)
		}
		return v
	case []any:
		for i := range v {
			v[i] = Normalize(v[i])
		}
		return v
	case map[string]any:
		for k := range v {
			v[k] = Normalize(v[k])
		}
		return v
	}
	return v
}

// Check reports whether the normalized value v is a value of t. The error
// says what was expected and what was found, as in
// "expected integer, got string".
func (t FieldType) Check(v any) error {
	if v == nil || t.Kind == KindAny {
		return nil
	}
	got := jsonKind(v)
	switch t.Kind {
	case KindString:
		if _, ok := v.(string); ok {
			return nil
		}
	case KindBool:
		if _, ok := v.(bool); ok {
			return nil
		}
	case KindNumber:
		switch v.(type) {
		case int, int64, float64:
			return nil
		}
	case KindInteger:
		var n int64
		switch v := v.(type) {
		case int:
			n = int64(v)
		case int64:
			n = v
		case float64:
			if v == math.Trunc(v) {
				return fmt.Errorf("%v is out of range for an integer", v)
			}
			return fmt.Errorf("expected integer, got fractional number %v", v)
		default:
			return fmt.Errorf("expected integer, got %s", got)
		}
		if t.Bounded && (n < t.Min || n > t.Max) {
			return fmt.Errorf("%d is out of range %d to %d", n, t.Min, t.Max)
		}
		return nil
	case KindList:
		list, ok := v.([]any)
		if !ok {
			break
		}
		if t.Elem == nil {
			return nil
		}
		for i, e := range list {
			if err := t.Elem.Check(e); err != nil {
				return fmt.Errorf("element %d: %w", i, err)
			}
		}
		return nil
	case KindObject:
		if _, ok := v.(map[string]any); ok {
			return nil
		}
	}
	return fmt.Errorf("expected %s, got %s", t, got)
}

// jsonKind names the JSON kind of a normalized value.
func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "bool"
	case int, int64, float64, json.Number:
		return "number"
	case []any:
		return "list"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// Schema is the set of declared message fields.
type Schema map[string]FieldType

// Check returns one error per field of msg whose value does not match its
// declared type, in field order, each as "field: reason". Fields the schema
// does not declare are not checked.
func (s Schema) Check(msg Message) []string {
	var errs []string
	for _, name := range sortedKeys(msg) {
		t, ok := s[name]
		if !ok {
			continue
		}
		if err := t.Check(msg[name]); err != nil {
			errs = append(errs, name+": "+err.Error())
		}
	}
	return errs
}

// Names returns the declared field names in order.
func (s Schema) Names() []string {
	return sortedKeys(s)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// exprMap is the expr checker's view of the schema.
func (s Schema) exprMap() types.Map {
	m := make(types.Map, len(s))
	for name, t := range s {
		m[name] = t.exprType()
	}
	return m
}

// quoteList renders names as "a", "b" and "c" for diagnostics.
func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	switch len(q) {
	case 0:
		return "(none)"
	case 1:
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " and " + q[len(q)-1]
}

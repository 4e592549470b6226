package engine

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

func TestDecodeMessage(t *testing.T) {
	cases := []struct {
		name, body string
		want       Message
		err        string
	}{
		{"object", `{"username":"ana.lima","uid":10042,"ratio":0.5,"ok":true,"lists":["a"]}`,
			Message{"username": "ana.lima", "uid": 10042, "ratio": 0.5, "ok": true, "lists": []any{"a"}}, ""},
		{"integral float", `{"uid":10042.0}`, Message{"uid": 10042}, ""},
		{"big number stays exact", `{"uid":4294967296}`, Message{"uid": 4294967296}, ""},
		{"not an object", `["a"]`, nil, "not a JSON object"},
		{"string", `"x"`, nil, "not a JSON object"},
		{"empty", `  `, nil, "body is empty"},
		{"broken", `{"a":`, nil, "not valid JSON"},
		{"trailing data", `{"a":1} {"b":2}`, nil, "data after the JSON object"},
		{"duplicate field", `{"username":"ana","uid":1,"username":"root"}`, nil,
			`body has the field "username" twice`},
		{"duplicate nested field", `{"a":{"b":1,"c":[{"d":1},{"d":2,"d":3}]}}`, nil,
			`body has the field "a.c.d" twice`},
		{"same key in sibling objects", `{"a":{"k":1},"b":{"k":2},"l":[{"k":1},{"k":2}]}`,
			Message{"a": map[string]any{"k": 1}, "b": map[string]any{"k": 2},
				"l": []any{map[string]any{"k": 1}, map[string]any{"k": 2}}}, ""},
		{"key equal to a value", `{"a":"b","b":"a"}`, Message{"a": "b", "b": "a"}, ""},
		{"keys differing in case", `{"uid":1,"UID":2}`, Message{"uid": 1, "UID": 2}, ""},
		{"number past float64", `{"username":"ana","extra":1e700}`, nil,
			`field "extra": the number 1e700 is out of range`},
		{"nested number past float64", `{"a":[{"b":-1e400}]}`, nil, `field "a.b": the number -1e400 is out of range`},
		{"tiny number", `{"a":1e-400}`, Message{"a": 0}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := DecodeMessage([]byte(c.body))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error = %v, want one containing %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %#v, want %#v", got, c.want)
			}
		})
	}
}

// TestSchemaCheck covers C6 and C7: a uid sent as a string is refused
// naming the field and both types; a uid past 2^32-2 is out of range.
func TestSchemaCheck(t *testing.T) {
	s := Schema{
		"uid":      TypeNumber,
		"gid":      IntegerIn(0, 4294967294),
		"username": TypeString,
		"lists":    TypeStringList,
		"ok":       TypeBool,
	}
	cases := []struct {
		name, body string
		want       []string
	}{
		{"C6 uid as string", `{"uid":"10042"}`, []string{"uid: expected number, got string"}},
		{"C7 gid out of range", `{"gid":4294967296}`, []string{"gid: 4294967296 is out of range 0 to 4294967294"}},
		{"gid fractional", `{"gid":1.5}`, []string{"gid: expected integer, got fractional number 1.5"}},
		{"gid as string", `{"gid":"5"}`, []string{"gid: expected integer, got string"}},
		{"list element", `{"lists":["a",3]}`, []string{"lists: element 1: expected string, got number"}},
		{"bool", `{"ok":"yes"}`, []string{"ok: expected bool, got string"}},
		{"several, in field order", `{"username":5,"uid":"x"}`,
			[]string{"uid: expected number, got string", "username: expected string, got number"}},
		{"null is absent", `{"uid":null}`, nil},
		{"undeclared fields pass", `{"color":"red"}`, nil},
		{"valid", `{"uid":10042,"gid":10042,"username":"ana","lists":["a"],"ok":true}`, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			msg, err := DecodeMessage([]byte(c.body))
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Check(msg); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("Check = %q, want %q", got, c.want)
			}
		})
	}
}

// TestNumbersInConditions covers C6 and C7: integers from JSON compare
// equal to integer literals, also with in.
func TestNumbersInConditions(t *testing.T) {
	env := Schema{"uid": TypeNumber, "gid": TypeInteger}
	for _, src := range []string{"msg.uid == 10042", "msg.uid in [10042]", "msg.uid > 10000",
		"msg.gid == 10042", "msg.gid in [10042]"} {
		p, d := compileCondition(src, hcl.Range{}, nil, env)
		if d != nil {
			t.Fatalf("%s: %s: %s", src, d.Summary, d.Detail)
		}
		msg, _ := DecodeMessage([]byte(`{"uid":10042,"gid":10042}`))
		ok, err := p.Bool(Env(msg, "k"))
		if err != nil || !ok {
			t.Errorf("%s = %v, %v; want true", src, ok, err)
		}
	}
}

func TestAssignable(t *testing.T) {
	cases := []struct {
		a, b FieldType
		want bool
	}{
		{TypeInteger, TypeNumber, true},
		{TypeNumber, TypeInteger, false},
		{IntegerIn(10001, 19999), IntegerIn(0, 4294967294), true},
		{TypeInteger, IntegerIn(0, 10), false},
		{TypeStringList, ListOf(TypeAny), true},
		{TypeString, TypeAny, true},
		{TypeString, TypeBool, false},
	}
	for _, c := range cases {
		if got := c.a.AssignableTo(c.b); got != c.want {
			t.Errorf("%s assignable to %s = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

func TestDecodeInvalidUTF8(t *testing.T) {
	_, err := DecodeMessage([]byte("{\"fullname\":\"\xff\xfe\"}"))
	if err == nil || err.Error() != "body is not valid UTF-8" {
		t.Fatalf("err = %v", err)
	}
}

// A broker URL that cannot work is refused before any connection, and the
// reason never repeats the password.
func TestCheckAMQPURL(t *testing.T) {
	for raw, want := range map[string]string{
		"amqp://guest:S3cret%zzPW@localhost:5672/":                                     "a % not followed by two hex digits",
		" amqp://guest:S3cret@localhost/":                                              "spaces around it",
		"amqp://guest:S3cret@localhost:99999/":                                         "port 99999 is out of range",
		"amqps://guest:S3cret@localhost/?cacertfile=/nonexistent/ca.pem":               "cacertfile: open /nonexistent/ca.pem",
		"amqp://guest:S3cret@localhost/?cacertfile=/etc/hostname":                      "only an amqps:// URL uses TLS",
		"http://guest:S3cret@localhost/":                                               "scheme",
		"amqps://guest:S3cret@localhost/?cacertfile=/etc":                              "cacertfile: read /etc: is a directory",
		"amqps://guest:S3cret@localhost/?cacertfile=/etc/hostname":                     "/etc/hostname holds no PEM certificate",
		"amqps://guest:S3cret@localhost/?certfile=/etc/hostname&keyfile=/etc/hostname": "certfile and keyfile:",
		"amqps://guest:S3cret@localhost/?certfile=/etc/hostname":                       "needs both certfile and keyfile",
		"amqp://guest:guest@localhost:5672/":                                           "",
		"amqps://guest:guest@mq.example.edu/accounts":                                  "",
	} {
		err := CheckAMQPURL(raw)
		switch {
		case want == "" && err != nil:
			t.Errorf("%q: %v, want no error", raw, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("%q: %v, want an error with %q", raw, err, want)
		case err != nil && (strings.Contains(err.Error(), "S3cret") || strings.Contains(err.Error(), "zz")):
			t.Errorf("%q: the error shows the password: %v", raw, err)
		}
	}
	_, err := Dial("amqp://guest:S3cret%zzPW@localhost:5672/", "test")
	if !errors.Is(err, ErrPermanent) || strings.Contains(err.Error(), "S3cret") {
		t.Fatalf("Dial: %v; want a permanent error without the password", err)
	}
}

// A hop count from a producer can only start the count, never loosen the
// loop guard.
func TestHeaderInt(t *testing.T) {
	for v, want := range map[any]int{int32(-5): 0, "abc": 0, int64(7): 7, uint8(3): 3, nil: 0} {
		if got := headerInt(v); got != want {
			t.Errorf("headerInt(%#v) = %d, want %d", v, got, want)
		}
	}
}

func TestMaskPasswords(t *testing.T) {
	for in, want := range map[string]string{
		`  url = "amqp://guest:S3cret%zz@localhost:5672/"`:     `  url = "amqp://guest:xxxxxxxxx@localhost:5672/"`,
		`  smtp = "smtp://rc:pä55@mail.example.edu:587"`:       `  smtp = "smtp://rc:xxxx@mail.example.edu:587"`,
		`  url = env("REGFLOW_AMQP_URL", "amqp://localhost/")`: `  url = env("REGFLOW_AMQP_URL", "amqp://localhost/")`,
	} {
		if got := maskPasswords(in); got != want {
			t.Errorf("maskPasswords(%q) = %q, want %q", in, got, want)
		}
	}
}

package main

import (
	"bytes"
	"testing"
)

func TestTerminalSafe(t *testing.T) {
	for in, want := range map[string]string{
		"ana.lima\tok\n":                      "ana.lima\tok\n",
		"esc\x1b[31mRED\x1b[0m\x1b]0;pwned\a": `esc\x1b[31mRED\x1b[0m\x1b]0;pwned\x07`,
		"del\x7f c1\u009b2J é ü":              `del\x7f c1\u009b2J é ü`,
		"bad \xff byte":                       "bad \xff byte",
	} {
		var b bytes.Buffer
		n, err := terminalSafe{&b}.Write([]byte(in))
		if err != nil || n != len(in) || b.String() != want {
			t.Errorf("%q: wrote %q (%d, %v), want %q", in, b.String(), n, err, want)
		}
	}
}

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"ana.lima":                        "ana.lima",
		"request.fake\nget_next/FORGED\t": `request.fake\x0aget_next/FORGED\x09`,
		"a\r\nb\x1b[31m\u009b":            `a\x0d\x0ab\x1b[31m\u009b`,
		"é ü ✓":                           "é ü ✓",
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
}

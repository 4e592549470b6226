package main

import (
	"testing"
)

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"ana.lima":                            "ana.lima",
		"request.fake\nget_next/FORGED\t":     `request.fake\x0aget_next/FORGED\x09`,
		"a\r\nb\x1b[31m\u009b":                `a\x0d\x0ab\x1b[31m\u009b`,
		"esc\x1b[31mRED\x1b[0m\x1b]0;pwned\a": `esc\x1b[31mRED\x1b[0m\x1b]0;pwned\x07`,
		"del\x7f":                             `del\x7f`,
		"é ü ✓":                               "é ü ✓",
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
}

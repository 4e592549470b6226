package main

import (
	"fmt"
	"strings"
)

// printable returns s with every control character, line feed and tab
// included, shown as an escape such as \x1b. Every value status and dead
// list print from a message (a username, a routing key, a reason) goes
// through it: it cannot move the cursor, recolour or retitle the
// operator's terminal, and fills one cell of a table without starting a
// row of its own.
func printable(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r >= 0x7f && r <= 0x9f }) < 0 {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r >= 0x80 && r <= 0x9f:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

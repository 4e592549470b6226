package engine

import (
	"fmt"
	"io"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
)

// DiagJSON is one diagnostic in the form `regflow validate --json` prints.
type DiagJSON struct {
	Severity string   `json:"severity"` // "error" or "warning"
	Summary  string   `json:"summary"`
	Detail   string   `json:"detail"`
	File     string   `json:"file,omitempty"`
	Start    *PosJSON `json:"start,omitempty"`
	End      *PosJSON `json:"end,omitempty"`
}

// PosJSON is a position in a file; line and column count from 1.
type PosJSON struct {
	Line   int `json:"line"`
	Column int `json:"column"`
	Byte   int `json:"byte"`
}

// DiagsJSON converts diagnostics for machines.
func DiagsJSON(diags hcl.Diagnostics) []DiagJSON {
	out := make([]DiagJSON, 0, len(diags))
	for _, d := range diags {
		j := DiagJSON{Severity: "error", Summary: d.Summary, Detail: d.Detail}
		if d.Severity == hcl.DiagWarning {
			j.Severity = "warning"
		}
		if r := d.Subject; r != nil {
			j.File = r.Filename
			j.Start = &PosJSON{r.Start.Line, r.Start.Column, r.Start.Byte}
			j.End = &PosJSON{r.End.Line, r.End.Column, r.End.Byte}
		}
		out = append(out, j)
	}
	return out
}

// WriteDiags prints diagnostics for people: file:line:col, severity and
// summary on one line, then the source line with the range underlined,
// then the detail that says the fix.
//
//	pipeline.hcl:14:5: error: Unsupported argument
//	   14 |     condtion = "msg.reason != 'test'"
//	      |     ^^^^^^^^
//	  An argument named "condtion" is not expected here. Did you mean "when"?
func WriteDiags(w io.Writer, files Sources, diags hcl.Diagnostics) error {
	var b strings.Builder
	for _, d := range diags {
		sev := "error"
		if d.Severity == hcl.DiagWarning {
			sev = "warning"
		}
		r := d.Subject
		if r == nil {
			fmt.Fprintf(&b, "%s: %s\n", sev, d.Summary)
		} else {
			fmt.Fprintf(&b, "%s:%d:%d: %s: %s\n", r.Filename, r.Start.Line, r.Start.Column, sev, d.Summary)
			if f := files[r.Filename]; f != nil {
				writeSnippet(&b, f.Bytes, *r)
			}
		}
		for _, line := range wrap(d.Detail, 96) {
			fmt.Fprintf(&b, "  %s\n", line)
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeSnippet prints the first line of r with carets under the range.
func writeSnippet(b *strings.Builder, src []byte, r hcl.Range) {
	lines := strings.Split(string(src), "\n")
	if r.Start.Line < 1 || r.Start.Line > len(lines) {
		return
	}
	line := strings.ReplaceAll(strings.TrimRight(lines[r.Start.Line-1], "\r"), "\t", " ")
	line = maskPasswords(line)
	width := utf8.RuneCountInString(line)
	from := r.Start.Column - 1
	to := r.End.Column - 1
	if r.End.Line != r.Start.Line {
		to = width
	}
	if from > width {
		from = width
	}
	if to <= from {
		to = from + 1
	}
	fmt.Fprintf(b, "%5d | %s\n", r.Start.Line, line)
	fmt.Fprintf(b, "      | %s%s\n", strings.Repeat(" ", from), strings.Repeat("^", to-from))
}

// wrap breaks text into lines of at most width characters at spaces.
func wrap(text string, width int) []string {
	var lines []string
	for _, para := range strings.Split(text, "\n") {
		line := ""
		for _, word := range strings.Fields(para) {
			if line != "" && utf8.RuneCountInString(line)+1+utf8.RuneCountInString(word) > width {
				lines = append(lines, line)
				line = ""
			}
			if line != "" {
				line += " "
			}
			line += word
		}
		lines = append(lines, line)
	}
	return lines
}

// urlPassword finds the password of a URL written in a source line.
var urlPassword = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s"]*:)([^@\s"/]+)@`)

// maskPasswords hides the passwords of URLs in a source line shown under a
// diagnostic, keeping the line's length so the carets stay in place.
func maskPasswords(line string) string {
	return urlPassword.ReplaceAllStringFunc(line, func(m string) string {
		sub := urlPassword.FindStringSubmatch(m)
		return sub[1] + strings.Repeat("x", utf8.RuneCountInString(sub[2])) + "@"
	})
}

package engine

import (
	"io"

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

// WriteDiags prints diagnostics for people: file:line:col, summary, the
// source line with the range underlined, and the detail.
func WriteDiags(w io.Writer, files Sources, diags hcl.Diagnostics) error {
	return hcl.NewDiagnosticTextWriter(w, files, 100, false).WriteDiagnostics(diags)
}

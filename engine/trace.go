package engine

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// WriteTrace prints a simulation trace for people: each hop, the pipelines
// it reached, and each step with its outcome.
func WriteTrace(w io.Writer, t *Trace) {
	t.write(w)
}

func (t *Trace) write(w io.Writer) {
	for i, h := range t.Hops {
		from := "input"
		if h.From != "" {
			from = "from " + h.From
		}
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "→ %s  (%s)\n", h.RoutingKey, from)
		for _, c := range h.Readers {
			fmt.Fprintf(w, "  read by %s (outside regflow)\n", c)
		}
		if !h.Acted && len(h.Readers) == 0 {
			what := "no pipeline acts"
			if len(h.Results) > 0 {
				what = "only catch-all pipelines (#) act"
			}
			fmt.Fprintf(w, "  %s on this key on %s%s\n", what, h.Exchange, dotHint(h.RoutingKey, t.near))
		}
		for _, r := range h.Results {
			writeResult(w, r)
		}
	}
}

func writeResult(w io.Writer, r *Result) {
	status := "ok"
	switch {
	case r.Refused != "":
		status = "REFUSED: " + r.Refused
	case r.Skipped:
		status = "skipped (when is false)"
	case r.Failed:
		status = "FAILED"
	}
	fmt.Fprintf(w, "  %s: %s\n", r.Pipeline, status)
	for _, s := range r.Steps {
		mark := map[string]string{StepOK: "ok", StepFailed: "FAIL", StepSkipped: "skip"}[s.Status]
		name := s.Step
		if s.OnFailure {
			name = "on_failure/" + s.Step
		}
		detail := s.Note
		switch s.Status {
		case StepFailed:
			detail = s.Error
		case StepSkipped:
			detail = "when is false"
		}
		if s.Replayed {
			detail = strings.TrimSpace(detail + " (replayed from the journal)")
		}
		if s.Attempts > 1 {
			detail = strings.TrimSpace(fmt.Sprintf("%s (%d attempts)", detail, s.Attempts))
		}
		fmt.Fprintf(w, "    %-4s %-22s %-14s %s\n", mark, name, s.Action, detail)
	}
	if r.DeadLetter != "" {
		fmt.Fprintf(w, "    dead letter: %s\n", r.DeadLetter)
	}
}

// traceJSON is the machine-readable form of a trace.
type traceJSON struct {
	Hops []hopJSON `json:"hops"`
}

type hopJSON struct {
	Exchange   string       `json:"exchange"`
	RoutingKey string       `json:"routing_key"`
	From       string       `json:"from,omitempty"`
	Pipelines  []resultJSON `json:"pipelines"`
}

type resultJSON struct {
	Pipeline   string     `json:"pipeline"`
	MessageID  string     `json:"message_id"`
	Status     string     `json:"status"` // ok, failed, refused, skipped
	Refused    string     `json:"refused,omitempty"`
	DeadLetter string     `json:"dead_letter,omitempty"`
	Message    Message    `json:"message"`
	Steps      []stepJSON `json:"steps"`
}

type stepJSON struct {
	Step       string        `json:"step"`
	Action     string        `json:"action"`
	OnFailure  bool          `json:"on_failure,omitempty"`
	Status     string        `json:"status"`
	Replayed   bool          `json:"replayed,omitempty"`
	Note       string        `json:"note,omitempty"`
	Error      string        `json:"error,omitempty"`
	Attempts   int           `json:"attempts,omitempty"`
	DurationMS float64       `json:"duration_ms"`
	Published  []publishJSON `json:"published,omitempty"`
	Mails      []mailJSON    `json:"mails,omitempty"`
}

type publishJSON struct {
	Exchange   string `json:"exchange"`
	RoutingKey string `json:"routing_key"`
	MessageID  string `json:"message_id"`
}

type mailJSON struct {
	From    string   `json:"from"`
	To      []string `json:"to"`
	Cc      []string `json:"cc,omitempty"`
	Subject string   `json:"subject"`
	Body    string   `json:"body"`
}

// MarshalJSON renders the trace for machines.
func (t *Trace) MarshalJSON() ([]byte, error) {
	out := traceJSON{Hops: []hopJSON{}}
	for _, h := range t.Hops {
		hj := hopJSON{Exchange: h.Exchange, RoutingKey: h.RoutingKey, From: h.From, Pipelines: []resultJSON{}}
		for _, r := range h.Results {
			rj := resultJSON{Pipeline: r.Pipeline, MessageID: r.MessageID, Status: "ok", Refused: r.Refused,
				DeadLetter: r.DeadLetter, Message: r.Msg, Steps: []stepJSON{}}
			switch {
			case r.Refused != "":
				rj.Status = "refused"
			case r.Skipped:
				rj.Status = "skipped"
			case r.Failed:
				rj.Status = "failed"
			}
			for _, s := range r.Steps {
				sj := stepJSON{Step: s.Step, Action: s.Action, OnFailure: s.OnFailure, Status: s.Status,
					Replayed: s.Replayed, Note: s.Note, Error: s.Error, Attempts: s.Attempts,
					DurationMS: float64(s.Duration) / float64(time.Millisecond)}
				for _, p := range s.Published {
					sj.Published = append(sj.Published, publishJSON{p.Exchange, p.RoutingKey, p.MessageID})
				}
				for _, m := range s.Mails {
					sj.Mails = append(sj.Mails, mailJSON{From: m.From, To: m.To, Cc: m.Cc, Subject: m.Subject, Body: m.Text})
				}
				rj.Steps = append(rj.Steps, sj)
			}
			hj.Pipelines = append(hj.Pipelines, rj)
		}
		out.Hops = append(out.Hops, hj)
	}
	return json.Marshal(out)
}

// dotHint explains a key that reached nothing but looks meant for a
// pattern with the same first word: a name whose dot was not encoded.
func dotHint(key string, near func(string) []string) string {
	if near == nil {
		return ""
	}
	if n := near(key); len(n) > 0 {
		return fmt.Sprintf("; %s (a dot in a name must be sent as %%2E)", strings.Join(n, ", "))
	}
	return ""
}

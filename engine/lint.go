package engine

import (
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// AlwaysFailing is implemented by actions that can tell at load time that
// they will fail for every message, such as exec naming a program that is
// not installed. The reason completes "this step always fails: …".
type AlwaysFailing interface {
	AlwaysFails() string
}

func (l *loader) warnf(rng hcl.Range, summary, format string, args ...any) {
	l.diags = append(l.diags, &hcl.Diagnostic{Severity: hcl.DiagWarning, Summary: summary,
		Detail: fmt.Sprintf(format, args...), Subject: rng.Ptr()})
}

// lint reports what is legal but probably wrong: a routing key nothing
// binds, a pipeline that feeds itself, steps that can never run.
func (l *loader) lint() {
	for _, p := range l.cfg.Pipelines {
		for _, chain := range [][]*Step{p.Steps, p.OnFailure} {
			for i, s := range chain {
				l.lintPublish(p, s)
				if worst := s.Retry.worst(s.Timeout); s.Retry.Attempts > 1 && worst > l.cfg.Broker.ConsumerTimeout/2 {
					l.warnf(s.Range, "Retries may outlast the consumer timeout",
						"Step %q may take up to %s with its retries (%d attempts of up to %s, with backoff), "+
							"more than half the broker's consumer_timeout of %s; the engine stops retrying in time, "+
							"so the last attempts would never run. Lower attempts, timeout or max_backoff.",
						s.Name, worst.Round(time.Second), s.Retry.Attempts, s.Timeout, l.cfg.Broker.ConsumerTimeout)
				}
				if s.When != nil && strings.TrimSpace(s.When.Source) == "false" {
					l.warnf(s.When.Range, "Step never runs", "The condition is always false, so step %q never "+
						"runs. Remove the step, or the condition.", s.Name)
				}
				af, ok := s.Impl.(AlwaysFailing)
				if !ok || s.OnError == OnErrorContinue || i == len(chain)-1 {
					continue
				}
				if reason := af.AlwaysFails(); reason != "" {
					next := chain[i+1]
					l.warnf(next.Range, "Step never runs",
						"Step %q before this one always fails (%s) and stops the chain, so %q and the "+
							"steps after it never run.", s.Name, reason, next.Name)
				}
			}
		}
	}
}

func (l *loader) lintPublish(p *Pipeline, s *Step) {
	pa, ok := s.Impl.(PublishingAction)
	if !ok || pa.Exchange() != l.cfg.Broker.Exchange {
		return
	}
	key := pa.RoutingKey()
	shape := shapeOf(key)
	if !l.bound(shape) {
		hint := ""
		if pat := Suggest(shape.pattern(), l.patterns()); pat != "" {
			hint = fmt.Sprintf(" Did you mean a key that %q binds?", pat)
		}
		l.warnf(key.Range, "Nothing binds this routing key",
			"No pipeline (besides catch-all ones) and no consumer block binds %q, so nothing acts on what "+
				"step %q publishes.%s Fix the key, or add a consumer block for the program that reads it.",
			key.Source, s.Name, hint)
	}
	if p.When != nil || s.When != nil {
		return
	}
	for _, pat := range p.On {
		if shape.mayMatch(pat) {
			l.warnf(key.Range, "Pipeline may feed itself",
				"Pipeline %q binds %q, which matches %q that its step %q publishes, and neither has a when "+
					"condition: a message could go round forever. Narrow the pattern or add a when guard.",
				p.Name, pat, key.Source, s.Name)
			return
		}
	}
}

// patterns lists every binding pattern but "#".
func (l *loader) patterns() []string {
	var out []string
	for _, p := range l.cfg.Pipelines {
		for _, pat := range p.On {
			if pat != "#" && !contains(out, pat) {
				out = append(out, pat)
			}
		}
	}
	for _, c := range l.cfg.Consumers {
		for _, pat := range c.On {
			if pat != "#" && !contains(out, pat) {
				out = append(out, pat)
			}
		}
	}
	return out
}

// bound reports whether some pipeline or consumer may receive the shape.
// A pipeline bound to "#" alone, such as an audit log, does not count: it
// records messages, it does not act on them.
func (l *loader) bound(shape keyShape) bool {
	for _, q := range l.cfg.Pipelines {
		if q.catchAll() {
			continue
		}
		for _, pat := range q.On {
			if shape.mayMatch(pat) {
				return true
			}
		}
	}
	for _, c := range l.cfg.Consumers {
		for _, pat := range c.On {
			if shape.mayMatch(pat) {
				return true
			}
		}
	}
	return false
}

// worst is the longest a step with this retry policy can take.
func (r Retry) worst(timeout time.Duration) time.Duration {
	total := time.Duration(r.Attempts) * timeout
	for n := 1; n < r.Attempts; n++ {
		total += r.cap(n)
	}
	return total
}

package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
)

// Message is the JSON object a pipeline works on. Values are in their
// normalized form (see Normalize): string, int, float64, bool, nil, []any
// and map[string]any.
type Message = map[string]any

// Fields every message carries once a pipeline has seen it: the engine
// keeps them, actions never set them.
const (
	FieldErrmsg  = "errmsg"
	FieldSuccess = "success"
)

// An Action is the configured behaviour of one step. Run is called once
// per message that reaches the step, from many goroutines at once, so an
// Action must not keep per-message state outside the Call.
//
// Run returns nil when the step succeeded. An error tells the engine
// whether a retry can help: wrap it with Permanent or Transient. An
// unmarked error counts as permanent. Run must honour ctx: it carries the
// step's timeout and the engine's shutdown.
type Action interface {
	Run(ctx context.Context, c *Call) error
}

// ActionFunc adapts a function to the Action interface.
type ActionFunc func(ctx context.Context, c *Call) error

// Run calls f.
func (f ActionFunc) Run(ctx context.Context, c *Call) error { return f(ctx, c) }

// ActionSpec describes a built-in action: its HCL block name, its
// attributes and how to build a configured Action from them. The same
// spec drives the loader, the reference documentation and validate.
type ActionSpec struct {
	Name    string
	Summary string // one sentence for the reference
	Attrs   []AttrSpec

	// Adds returns the fields the action adds to the message, so that
	// later steps may use them. It may be nil.
	Adds func(c *StepConfig) Schema

	// AddsDoc describes the added fields for the reference, such as
	// "uid and gid (integer)".
	AddsDoc string

	// Idempotent says that running the action again for the same message
	// does nothing new and sets the same fields (allocate_uid gives the
	// same ids, git_commit finds the file committed). Its results are not
	// journaled per message: a redelivery runs it again instead.
	Idempotent bool

	// New builds the action from its decoded attributes. Problems found
	// here are reported as diagnostics against c's ranges.
	New func(c *StepConfig) (Action, error)
}

// Registry holds the action specs the loader accepts.
type Registry struct {
	specs map[string]*ActionSpec
}

// NewRegistry returns a registry of specs. A name registered twice is a
// programming error and panics.
func NewRegistry(specs ...*ActionSpec) *Registry {
	r := &Registry{specs: make(map[string]*ActionSpec)}
	for _, s := range specs {
		if _, dup := r.specs[s.Name]; dup {
			panic("engine: action " + s.Name + " registered twice")
		}
		r.specs[s.Name] = s
	}
	return r
}

// Lookup returns the spec of the named action.
func (r *Registry) Lookup(name string) (*ActionSpec, bool) {
	s, ok := r.specs[name]
	return s, ok
}

// Names returns the registered action names in order.
func (r *Registry) Names() []string {
	names := make([]string, 0, len(r.specs))
	for n := range r.specs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Call is one run of one step for one message. The action reads the
// message through it, adds its results with Set, and describes what it did
// with Notef for the trace.
type Call struct {
	Msg         Message
	RoutingKey  string
	MessageID   string // identity of the message being handled
	Correlation string // AMQP correlation id of the delivery, passed on when publishing
	Hops        int    // pipelines the message passed through before this one
	Pipeline    string
	Step        string
	Attempt     int // 1 for the first attempt
	Svc         *Services
	Log         *slog.Logger

	env        map[string]any
	maxBody    int    // broker.max_body: what publishing may not exceed
	origin     string // the request the delivery descends from (HeaderOrigin)
	mayPublish func(ctx context.Context, key, id string) (bool, error)

	hadErrmsg, hadSuccess bool // the delivered message carried them
	added                 map[string]any
	note                  string
	publish               []Published // what the step published, for the trace
	mails                 []*Mail     // what the step mailed, for the trace
}

// Delivered is the message as it arrived, with what the steps added:
// without the errmsg and success every pipeline sets, unless the delivery
// carried them or a step failed. The event log records it, so that a
// request does not read as already successful.
func (c *Call) Delivered() Message {
	errs, _ := c.Msg[FieldErrmsg].([]any)
	dropErrmsg := !c.hadErrmsg && len(errs) == 0
	dropSuccess := !c.hadSuccess && c.Msg[FieldSuccess] == true
	if !dropErrmsg && !dropSuccess {
		return c.Msg
	}
	m := make(Message, len(c.Msg))
	for k, v := range c.Msg {
		if k == FieldErrmsg && dropErrmsg || k == FieldSuccess && dropSuccess {
			continue
		}
		m[k] = v
	}
	return m
}

// Env returns the expr environment for the call's message.
func (c *Call) Env() map[string]any {
	if c.env == nil {
		c.env = Env(c.Msg, c.RoutingKey)
	}
	return c.env
}

// Render renders a template against the message.
func (c *Call) Render(t *Template) (string, error) {
	if t == nil {
		return "", nil
	}
	s, err := t.Render(c.Env())
	if err != nil {
		return "", Permanent(fmt.Errorf("render: %w", err))
	}
	return s, nil
}

// RenderAll renders a list of templates.
func (c *Call) RenderAll(ts []*Template) ([]string, error) {
	out := make([]string, 0, len(ts))
	for _, t := range ts {
		s, err := c.Render(t)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// Set adds a result field to the message. Later steps see it, and it is
// recorded in the journal so that a redelivered message gets the same
// value without running the step again.
func (c *Call) Set(field string, v any) {
	c.Msg[field] = v
	if c.added == nil {
		c.added = make(map[string]any)
	}
	c.added[field] = v
}

// Notef records a short description of what the step did, such as
// "uid 10001, gid 10001" or "already committed".
func (c *Call) Notef(format string, args ...any) {
	c.note = fmt.Sprintf(format, args...)
}

// Note returns the description recorded by Notef.
func (c *Call) Note() string { return c.note }

// Published is one message a step published, as the trace shows it.
type Published struct {
	Exchange   string
	RoutingKey string
	MessageID  string
	Body       Message
}

// Errors that tell the engine what to do with a failed step.
var (
	// ErrTransient marks an error that a later attempt may not meet: a
	// timeout, an SMTP 4xx reply, a busy database, a push race.
	ErrTransient = errors.New("transient")

	// ErrPermanent marks an error that no retry can mend: bad input, an
	// SMTP 5xx reply, failed authentication, an exhausted id range.
	ErrPermanent = errors.New("permanent")

	// ErrUnavailable marks a failure of the engine's own infrastructure
	// (the broker connection, the store) that leaves the delivery
	// unfinished. The delivery is not acked, so the broker hands it out
	// again, and the journal replays what was already done.
	ErrUnavailable = errors.New("unavailable")
)

type markedError struct {
	err  error
	mark error
}

func (e *markedError) Error() string   { return e.err.Error() }
func (e *markedError) Unwrap() []error { return []error{e.err, e.mark} }
func mark(err, m error) error {
	if err == nil {
		return nil
	}
	return &markedError{err: err, mark: m}
}

// Transient marks err as one a retry may mend.
func Transient(err error) error { return mark(err, ErrTransient) }

// Permanent marks err as one no retry can mend.
func Permanent(err error) error { return mark(err, ErrPermanent) }

// Unavailable marks err as an infrastructure failure that must leave the
// delivery unacknowledged.
func Unavailable(err error) error { return mark(err, ErrUnavailable) }

// IsTransient reports whether a retry can help with err.
func IsTransient(err error) bool {
	return errors.Is(err, ErrTransient) && !errors.Is(err, ErrPermanent)
}

package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"strings"
	"sync"
	"time"
)

// Runner runs pipeline chains. It knows nothing of the broker: the
// consumer hands it deliveries, and simulate and the pipeline tests call
// it directly with an in-process publisher.
type Runner struct {
	Config *Config
	Svc    *Services

	// Stubs replace steps, by "pipeline/step", with canned results; the
	// pipeline tests use them for exec and other outside effects.
	Stubs map[string]*Stub

	// onOpen and onClose tell the deadline watcher about registrations.
	onOpen  func(*Tracker, Registration)
	onClose func(t *Tracker, id string)

	// keyLocks make the holders of one key take turns: deliveries of one
	// message, and steps with one once key.
	keysMu   sync.Mutex
	keyLocks map[string]*keyLock
}

type keyLock struct {
	mu   sync.Mutex
	refs int
}

// NewRunner returns a runner for cfg acting on svc.
func NewRunner(cfg *Config, svc *Services) *Runner {
	if svc.Logger == nil {
		svc.Logger = slog.Default()
	}
	if svc.Commands == nil {
		svc.Commands = OSCommands{}
	}
	return &Runner{Config: cfg, Svc: svc, keyLocks: map[string]*keyLock{}}
}

// Delivery is one message handed to a pipeline.
type Delivery struct {
	RoutingKey  string
	MessageID   string // as the producer set it; may be empty
	Correlation string // AMQP correlation id, passed on to what the chain publishes
	Body        []byte
	Redelivered bool
	Hops        int // pipelines the message passed through before (HeaderHops)

	// Origin is the identity of the request a chain of messages began
	// with (HeaderOrigin), so that an answer finds its registration.
	Origin string
}

// MaxHops is how many pipelines a message may pass through, one publishing
// to the next: a loop of pipelines that feed each other stops there.
const MaxHops = 100

// Step statuses in a Result. Replayed steps keep the status they were
// recorded with and have Replayed set.
const (
	StepOK      = StatusOK
	StepFailed  = StatusFailed
	StepSkipped = StatusSkipped
)

// StepResult is what one step did for one message.
type StepResult struct {
	Step      string
	Action    string
	OnFailure bool // the step belongs to on_failure
	Status    string
	Replayed  bool // the result came from the journal
	Note      string
	Error     string
	Attempts  int
	Duration  time.Duration
	Published []Published
	Mails     []*Mail
}

// Result is what a pipeline did with one message.
type Result struct {
	Pipeline   string
	RoutingKey string
	MessageID  string
	Msg        Message // the message after the chain; nil when it could not be decoded
	Steps      []StepResult
	Skipped    bool   // the pipeline's when was false; no step ran
	Failed     bool   // a step stopped the chain
	Refused    string // why the message was refused before any step ran
	DeadLetter string // non-empty: the message can never succeed, for this reason
}

// Published returns everything the chain published, in order.
func (r *Result) Published() []Published {
	var out []Published
	for _, s := range r.Steps {
		out = append(out, s.Published...)
	}
	return out
}

// Errmsg returns the message's errmsg entries.
func (r *Result) Errmsg() []string { return errmsgOf(r.Msg) }

// Handle runs pipeline p on delivery d. It returns an error only when the
// delivery must be left unacknowledged (ErrUnavailable): the journal lets
// a later delivery pick up where this one stopped. Every other outcome,
// failures and refusals included, is in the Result and the delivery is
// finished.
func (r *Runner) Handle(ctx context.Context, p *Pipeline, d *Delivery) (*Result, error) {
	res, err := r.handle(ctx, p, d)
	if err != nil && errors.Is(err, ErrPermanent) && !errors.Is(err, ErrUnavailable) {
		// Delivered again, the message would fail the same way for ever.
		res.Failed = true
		res.Refused = err.Error()
		res.DeadLetter = "cannot be handled: " + err.Error()
		return res, nil
	}
	return res, err
}

func (r *Runner) handle(ctx context.Context, p *Pipeline, d *Delivery) (*Result, error) {
	id := MessageIdentity(d.MessageID, d.RoutingKey, d.Body)
	res := &Result{Pipeline: p.Name, RoutingKey: d.RoutingKey, MessageID: id}
	if d.MessageID == "" {
		var err error
		if id, err = r.submission(ctx, p, id, d.Redelivered); err != nil {
			return res, err
		}
		res.MessageID = id
	}

	// Two deliveries of the same message at once (a redelivery overtaking
	// the original, or identical submissions) take turns: the second then
	// replays what the first journaled instead of repeating it.
	unlock := r.lockKey("message:" + p.Name + "/" + id)
	defer unlock()

	if max := r.Config.Broker.MaxBody; max > 0 && len(d.Body) > max {
		res.Refused = fmt.Sprintf("body is %d bytes; the limit is %d (broker.max_body)", len(d.Body), max)
		res.DeadLetter = res.Refused
		return res, nil
	}
	if d.Hops >= MaxHops {
		res.Refused = fmt.Sprintf("the message has passed through %d pipelines (%s); "+
			"do pipelines publish to each other's keys in a loop?", d.Hops, HeaderHops)
		res.DeadLetter = res.Refused
		return res, nil
	}
	msg, err := DecodeMessage(d.Body)
	var refused *RefusedBody
	switch {
	case errors.As(err, &refused) && p.CheckMessage:
		// Readable enough to answer: the problem joins those of the
		// message block below.
		msg = refused.Salvaged
	case err != nil:
		res.Refused = err.Error()
		res.DeadLetter = res.Refused
		return res, nil
	}
	res.Msg = msg
	f := &frame{p: p, id: id, key: d.RoutingKey, corr: d.Correlation, hops: d.Hops, msg: msg,
		origin: r.originOf(d, id),
		budget: time.Now().Add(r.Config.Broker.ConsumerTimeout * 9 / 10)}
	if r.Svc.Store != nil {
		if f.journal, err = r.Svc.Store.JournalScope(ctx, p.Name+"/"+id); err != nil {
			return res, err
		}
	}

	// A pipeline that does not want the message does not judge it: the
	// notify pipeline skips a failed registration's answer, however wrong
	// the request that caused it.
	if p.When != nil {
		view := cloneMessage(msg)
		setErrmsg(view, errmsgOf(view))
		ok, err := p.When.Bool(Env(view, d.RoutingKey))
		if err != nil {
			res.Refused = "when: " + err.Error()
			res.DeadLetter = res.Refused
			return res, nil
		}
		if !ok {
			res.Skipped = true
			return res, nil
		}
	}

	if p.CheckMessage {
		problems := r.Config.Message.Check(msg)
		if refused != nil {
			problems = append(refused.Problems, problems...)
		}
		if len(problems) > 0 {
			setErrmsg(msg, errmsgOf(msg))
			res.Refused = strings.Join(problems, "; ")
			res.DeadLetter = "message does not match the message block: " + res.Refused
			if refused != nil {
				res.DeadLetter = "body refused: " + res.Refused
			}
			res.Failed = true
			for _, pr := range problems {
				addErrmsg(msg, pr)
			}
			return res, r.runFailure(ctx, f, res)
		}
	}

	_, f.hadErrmsg = msg[FieldErrmsg]
	_, f.hadSuccess = msg[FieldSuccess]
	setErrmsg(msg, errmsgOf(msg))
	if err := r.trackOpen(ctx, f); err != nil {
		return res, err
	}
	for _, s := range p.Steps {
		sr, err := r.runStep(ctx, f, s)
		res.Steps = append(res.Steps, sr)
		if err != nil {
			return res, err
		}
		if sr.Status == StepFailed && s.OnError != OnErrorContinue {
			res.Failed = true
			break
		}
	}
	if res.Failed {
		if len(p.OnFailure) == 0 {
			last := res.Steps[len(res.Steps)-1]
			res.DeadLetter = fmt.Sprintf("step %s failed and the pipeline has no on_failure: %s", last.Step, last.Error)
			return res, nil
		}
		return res, r.runFailure(ctx, f, res)
	}
	return res, nil
}

// submission gives a message without a message id an identity per
// submission: the same request sent again later is a new request that
// gets its own answer (its effects still happen once, by the actions'
// own idempotence and once keys), while the broker's redelivery of one
// submission resumes it. A redelivered message takes the latest
// submission of the same routing key and body journaled in this
// pipeline; a first delivery, a new one, ordered by time and recorded at
// once.
func (r *Runner) submission(ctx context.Context, p *Pipeline, digest string, redelivered bool) (string, error) {
	if r.Svc.Store == nil {
		return digest, nil
	}
	prefix := p.Name + "/" + digest + "@"
	if redelivered {
		scope, err := r.Svc.Store.LatestScope(ctx, prefix)
		if err != nil {
			return "", err
		}
		if scope != "" {
			return strings.TrimPrefix(scope, p.Name+"/"), nil
		}
	}
	id := fmt.Sprintf("%s@%016x%04x", digest, time.Now().UnixNano(), rand.Uint32N(1<<16))
	// Recorded before any step runs, so that a redelivery after a crash
	// finds this submission even when no step of it was journaled yet. A
	// step name never holds "/", so the mark is no step's result.
	err := r.Svc.Store.JournalPut(ctx, p.Name+"/"+id, "/submitted", &JournalEntry{Status: StatusOK})
	return id, err
}

// originOf is the request a delivery descends from: itself when its key
// opens a tracked registration, else the origin it carried.
func (r *Runner) originOf(d *Delivery, id string) string {
	for _, t := range r.Config.Trackers {
		if matchesAny(t.Start, d.RoutingKey) {
			return id
		}
	}
	return d.Origin
}

// frame is what every step of one delivery shares.
type frame struct {
	p    *Pipeline
	id   string // message identity
	key  string
	corr string
	// origin is the request this message descends from: its own identity
	// when it opens registrations, else what it carried; "" when unknown.
	origin string
	hops   int
	msg    Message

	// whether the delivered message carried errmsg and success, which
	// every pipeline sets
	hadErrmsg, hadSuccess bool
	timeout               bool // the on_timeout steps of a tracker

	// budget is when the delivery must be finished to be acknowledged
	// before the broker's consumer_timeout; retries stop before it.
	budget time.Time

	// journal holds what an earlier delivery of the message recorded,
	// read once; nil when it was not read.
	journal map[string]*JournalEntry

	// record collects what the current step leaves in the store, written
	// in one go when it ends.
	record StepRecord

	// unlockOnce releases the current step's once key, after record is
	// written.
	unlockOnce func()
}

// runFailure runs the on_failure steps. Each runs even when an earlier
// one failed; if any fails, the message is dead-lettered, since its sender
// may never hear of it.
func (r *Runner) runFailure(ctx context.Context, f *frame, res *Result) error {
	why := strings.Join(errmsgOf(f.msg), "; ")
	for _, s := range f.p.OnFailure {
		sr, err := r.runStep(ctx, f, s)
		sr.OnFailure = true
		res.Steps = append(res.Steps, sr)
		if err != nil {
			return err
		}
		switch {
		case sr.Status != StepFailed:
		case res.DeadLetter == "":
			res.DeadLetter = fmt.Sprintf("on_failure step %s could not answer (%s) a chain that failed with: %s",
				s.Name, sr.Error, why)
		default:
			res.DeadLetter += fmt.Sprintf("; and on_failure step %s could not answer: %s", s.Name, sr.Error)
		}
	}
	return nil
}

// runStep runs one step and records it for tracked registrations.
func (r *Runner) runStep(ctx context.Context, f *frame, s *Step) (StepResult, error) {
	start := time.Now()
	f.record = StepRecord{}
	// A once step's lock is held until its result is in the store, so
	// that the next message with the same key replays it.
	defer func() {
		if f.unlockOnce != nil {
			f.unlockOnce()
			f.unlockOnce = nil
		}
	}()
	sr, err := r.step(ctx, f, s)
	sr.Duration = time.Since(start)
	if err != nil {
		return sr, err
	}
	r.trackStep(f, sr)
	if store := r.Svc.Store; store != nil && !f.record.empty() {
		return sr, store.RecordStep(ctx, &f.record)
	}
	return sr, nil
}

// step runs one step: its condition, the journal, the attempts.
func (r *Runner) step(ctx context.Context, f *frame, s *Step) (StepResult, error) {
	sr := StepResult{Step: s.Name, Action: s.Action}
	msg := f.msg
	env := Env(msg, f.key)

	fail := func(err error) (StepResult, error) {
		sr.Status, sr.Error = StepFailed, err.Error()
		addErrmsg(msg, s.Name+": "+sr.Error)
		return sr, nil
	}

	if s.When != nil {
		ok, err := s.When.Bool(env)
		if err != nil {
			return fail(fmt.Errorf("when: %w", err))
		}
		if !ok {
			sr.Status = StepSkipped
			return sr, nil
		}
	}

	scope := f.p.Name + "/" + f.id
	if s.Once != nil {
		k, err := s.Once.Render(env)
		if err != nil {
			return fail(fmt.Errorf("once: %w", err))
		}
		if k == "" {
			return fail(errors.New("once: the key rendered empty"))
		}
		scope = "once:" + k
		f.unlockOnce = r.lockKey(scope)
	}

	store := r.Svc.Store
	if store != nil {
		var je *JournalEntry
		var err error
		if s.Once != nil || f.journal == nil {
			je, err = store.JournalGet(ctx, scope, s.Name)
		} else {
			je = f.journal[s.Name]
		}
		if err != nil {
			return sr, err
		}
		if je != nil {
			for k, v := range je.Added {
				msg[k] = v
			}
			sr.Status, sr.Replayed, sr.Note, sr.Attempts = je.Status, true, je.Note, je.Attempts
			if je.Status == StatusFailed {
				sr.Error = je.Error
				addErrmsg(msg, s.Name+": "+je.Error)
			}
			return sr, nil
		}
	}

	call := &Call{Msg: msg, RoutingKey: f.key, MessageID: f.id, Correlation: f.corr, Hops: f.hops, origin: f.origin,
		maxBody:  r.Config.Broker.MaxBody,
		Pipeline: f.p.Name, hadErrmsg: f.hadErrmsg || f.timeout, hadSuccess: f.hadSuccess || f.timeout,
		Step: s.Name, Svc: r.Svc, Log: r.Svc.Logger.With("pipeline", f.p.Name, "step", s.Name, "message_id", f.id)}
	call.mayPublish = func(ctx context.Context, key, id string) (bool, error) {
		return r.trackPublish(ctx, f, s.Name, key, id)
	}
	var err error
	for call.Attempt = 1; ; call.Attempt++ {
		err = r.attempt(ctx, s, call)
		if err == nil || !IsTransient(err) || call.Attempt >= s.Retry.Attempts || errors.Is(err, ErrUnavailable) {
			break
		}
		wait := backoff(s.Retry, call.Attempt)
		if !f.budget.IsZero() && time.Until(f.budget) < wait+s.Timeout {
			err = fmt.Errorf("%w (gave up after %d attempts: another could outlast the broker's consumer_timeout)",
				err, call.Attempt)
			break
		}
		call.Log.Warn("step failed, retrying", "action", s.Action, "attempt", call.Attempt,
			"retry_in", wait.Round(time.Millisecond).String(), "error", err.Error())
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return sr, Unavailable(fmt.Errorf("%s: %w", s.Name, ctx.Err()))
		}
	}
	sr.Attempts = call.Attempt
	sr.Published, sr.Mails, sr.Note = call.publish, call.mails, call.note
	if errors.Is(err, ErrUnavailable) {
		return sr, err
	}

	entry := &JournalEntry{Status: StatusOK, Added: call.added, Note: call.note, Attempts: call.Attempt}
	if err != nil {
		entry.Status, entry.Error = StatusFailed, err.Error()
	}
	// A failure is journaled per message, so that a redelivery does not
	// repeat a failed side effect; never under a once key, so that a later
	// message may try again. An idempotent action is not journaled under
	// the message: running it again does nothing new.
	journal := err == nil || s.Once == nil
	if s.idempotent && s.Once == nil {
		journal = false
	}
	if store != nil && journal {
		f.record.Scope, f.record.Step, f.record.Journal = scope, s.Name, entry
	}
	if err != nil {
		return fail(err)
	}
	sr.Status = StepOK
	return sr, nil
}

// attempt runs the action once under the step's timeout. A panic in an
// action fails the step; it never takes the engine down.
func (r *Runner) attempt(ctx context.Context, s *Step, call *Call) (err error) {
	actx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	defer func() {
		if v := recover(); v != nil {
			call.Log.Error("action panicked", "action", s.Action, "panic", fmt.Sprint(v),
				"stack", string(debug.Stack()))
			err = Permanent(fmt.Errorf("internal error in %s: %v", s.Action, v))
		}
	}()
	call.env = nil
	act := s.Impl
	if stub := r.Stubs[call.Pipeline+"/"+s.Name]; stub != nil {
		act = stub
	}
	err = act.Run(actx, call)
	switch {
	case err != nil && ctx.Err() != nil:
		// Cut off by a shutdown or a lost connection, not failed: nothing
		// is journaled, and the redelivery runs the step again.
		err = Unavailable(fmt.Errorf("interrupted: %w", err))
	case err != nil && errors.Is(actx.Err(), context.DeadlineExceeded):
		err = Transient(fmt.Errorf("timed out after %s: %w", s.Timeout, err))
	}
	return err
}

// Stub is a canned result for a step: the fields it sets and, when Error
// is not empty, the error it fails with.
type Stub struct {
	Set       Message
	Error     string
	Transient bool // the error is one a retry may mend
}

// Run implements Action.
func (s *Stub) Run(ctx context.Context, c *Call) error {
	for k, v := range s.Set {
		c.Set(k, v)
	}
	if s.Error != "" {
		if s.Transient {
			return Transient(errors.New(s.Error))
		}
		return Permanent(errors.New(s.Error))
	}
	c.Notef("stubbed")
	return nil
}

// cap is the wait before attempt n+1 without jitter: exponential from
// Backoff, capped at MaxBackoff.
func (r Retry) cap(n int) time.Duration {
	d := r.Backoff
	for i := 1; i < n && d < r.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, r.MaxBackoff)
}

// backoff is the wait before attempt n+1, with up to 25% jitter so that
// retries of many messages spread out.
func backoff(r Retry, n int) time.Duration {
	d := r.cap(n)
	return d - time.Duration(rand.Int64N(int64(d)/4+1))
}

// lockKey waits for the key and returns its release.
func (r *Runner) lockKey(scope string) func() {
	r.keysMu.Lock()
	l := r.keyLocks[scope]
	if l == nil {
		l = &keyLock{}
		r.keyLocks[scope] = l
	}
	l.refs++
	r.keysMu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		r.keysMu.Lock()
		if l.refs--; l.refs == 0 {
			delete(r.keyLocks, scope)
		}
		r.keysMu.Unlock()
	}
}

// errmsgOf returns the errmsg list of msg, ignoring entries that are not
// strings.
func errmsgOf(msg Message) []string {
	list, _ := msg[FieldErrmsg].([]any)
	out := make([]string, 0, len(list))
	for _, e := range list {
		if s, ok := e.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func setErrmsg(msg Message, errs []string) {
	list := make([]any, len(errs))
	for i, e := range errs {
		list[i] = e
	}
	msg[FieldErrmsg] = list
	msg[FieldSuccess] = len(errs) == 0
}

func addErrmsg(msg Message, e string) {
	setErrmsg(msg, append(errmsgOf(msg), e))
}

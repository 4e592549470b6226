package engine

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// matchesAny reports whether key matches one of the patterns.
func matchesAny(patterns []string, key string) bool {
	for _, p := range patterns {
		if TopicMatch(p, key) {
			return true
		}
	}
	return false
}

// waitingFor describes who acts next on a message published on key.
func (r *Runner) waitingFor(key string) string {
	var names []string
	for _, p := range r.Config.Pipelines {
		if !p.catchAll() && p.Matches(key) {
			names = append(names, p.Name)
		}
	}
	if len(names) == 0 {
		return "a reader of " + key
	}
	return strings.Join(names, ", ") + " (" + key + ")"
}

// trackOpen opens a registration for every tracker whose start patterns
// match the delivery. Catch-all pipelines, such as the event log, never
// open one: they record messages, they do not act on them.
func (r *Runner) trackOpen(ctx context.Context, f *frame) error {
	store := r.Svc.Store
	if store == nil || f.p.catchAll() || f.timeout {
		return nil
	}
	for _, t := range r.Config.Trackers {
		if !matchesAny(t.Start, f.key) {
			continue
		}
		id, err := t.ID.Render(Env(f.msg, f.key))
		if err != nil || id == "" {
			continue
		}
		now := time.Now()
		reg := &Registration{Tracker: t.Name, ID: id, State: RegOpen, StartMessage: f.id, Correlation: f.corr, OpenedAt: now,
			DeadlineAt: now.Add(t.Deadline), WaitingFor: r.waitingFor(f.key), Msg: cloneMessage(f.msg)}
		opened, err := store.OpenRegistration(ctx, reg)
		if err != nil {
			return err
		}
		if opened && r.onOpen != nil {
			r.onOpen(t, *reg)
		}
	}
	return nil
}

// trackStep notes a step that ran for a tracked registration; runStep
// writes it with the step's journal entry.
func (r *Runner) trackStep(f *frame, sr StepResult) {
	if r.Svc.Store == nil || f.p.catchAll() || len(r.Config.Trackers) == 0 {
		return
	}
	note := sr.Note
	if sr.Replayed { // done before, by this message or, with once, another
		note = "replayed: " + note
	}
	for _, t := range r.Config.Trackers {
		id, err := t.ID.Render(Env(f.msg, f.key))
		if err != nil || id == "" {
			continue
		}
		f.record.Steps = append(f.record.Steps, TrackedStep{Tracker: t.Name, ID: id, Step: RegistrationStep{
			At: time.Now(), Pipeline: f.p.Name, Step: sr.Step, Status: sr.Status, Attempts: sr.Attempts,
			Note: note, Error: sr.Error}})
	}
}

// trackPublish decides whether a message on key may be published. An
// answer (a finish key) closes the registration; an answer to one that
// already timed out, or was already answered, is recorded and dropped, so
// that the sender hears exactly once. Other keys note what the
// registration waits for next.
func (r *Runner) trackPublish(ctx context.Context, f *frame, step, key, msgID string) (bool, error) {
	store := r.Svc.Store
	if store == nil || f.timeout || len(r.Config.Trackers) == 0 {
		return true, nil
	}
	for _, t := range r.Config.Trackers {
		id, err := t.ID.Render(Env(f.msg, key))
		if err != nil || id == "" {
			continue
		}
		if !matchesAny(t.Finish, key) {
			f.record.Waiting = append(f.record.Waiting, Waiting{Tracker: t.Name, ID: id, For: r.waitingFor(key)})
			continue
		}
		state, ok, closed, err := store.CloseRegistration(ctx, t.Name, id, msgID, f.origin)
		if err != nil {
			return false, err
		}
		if !ok {
			late := fmt.Sprintf("%s/%s answered on %s at %s", f.p.Name, step, key, time.Now().UTC().Format(time.RFC3339))
			if err := store.NoteLate(ctx, t.Name, id, late); err != nil {
				return false, err
			}
			r.Svc.Logger.Info("late answer recorded, not published: the registration was already answered",
				"pipeline", f.p.Name, "step", step, "routing_key", key, "registration", id, "state", state)
			return false, nil
		}
		if closed && r.onClose != nil {
			r.onClose(t, id)
		}
	}
	return true, nil
}

// TimeOut answers a registration whose deadline passed: it marks it timed
// out, unless it was answered meanwhile, and runs the tracker's on_timeout
// steps on the message that opened it, with an errmsg entry naming what it
// was waiting for. An error means the answer did not go out and TimeOut
// must be called again.
func (r *Runner) TimeOut(ctx context.Context, t *Tracker, reg Registration) error {
	store := r.Svc.Store
	if reg.State == RegOpen {
		won, err := store.TimeOutRegistration(ctx, t.Name, reg.ID, reg.StartMessage)
		if err != nil || !won {
			return err
		}
	}
	// What it waits for has moved on since the timer was set.
	if cur, err := store.Registration(ctx, t.Name, reg.ID); err != nil {
		return err
	} else if cur != nil && cur.StartMessage == reg.StartMessage {
		reg = *cur
	}
	msg := cloneMessage(reg.Msg)
	setErrmsg(msg, append(errmsgOf(msg),
		fmt.Sprintf("timeout: no answer within %s; waiting for %s", t.Deadline, reg.WaitingFor)))
	f := &frame{p: t.pipeline, id: "timeout:" + reg.StartMessage, corr: reg.Correlation, msg: msg, timeout: true}
	for _, s := range t.OnTimeout {
		sr, err := r.runStep(ctx, f, s)
		if err != nil {
			return err
		}
		if sr.Status == StepFailed {
			r.Svc.Logger.Error("could not answer a timed-out registration", "registration", reg.ID,
				"step", s.Name, "error", sr.Error)
		}
	}
	r.Svc.Logger.Warn("registration timed out", "registration", reg.ID, "waiting_for", reg.WaitingFor,
		"deadline", t.Deadline.String())
	return store.MarkAnswered(ctx, t.Name, reg.ID)
}

func cloneMessage(m Message) Message {
	c := make(Message, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// deadlines watches the deadlines of open registrations with timers, which
// run on the monotonic clock; wall-clock times in the store only carry a
// deadline across a restart or to another process.
type deadlines struct {
	runner *Runner
	ctx    context.Context

	mu     sync.Mutex
	timers map[string]*time.Timer // by tracker/id; guarded by mu
}

func newDeadlines(ctx context.Context, r *Runner) *deadlines {
	d := &deadlines{runner: r, ctx: ctx, timers: map[string]*time.Timer{}}
	r.onOpen = func(t *Tracker, reg Registration) { d.schedule(t, reg, t.Deadline) }
	r.onClose = func(t *Tracker, id string) { d.cancel(t.Name + "/" + id) }
	return d
}

func (d *deadlines) schedule(t *Tracker, reg Registration, after time.Duration) {
	key := t.Name + "/" + reg.ID
	d.mu.Lock()
	defer d.mu.Unlock()
	if old := d.timers[key]; old != nil {
		old.Stop()
	}
	d.timers[key] = time.AfterFunc(after, func() { d.fire(t, reg, key) })
}

func (d *deadlines) cancel(key string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if t := d.timers[key]; t != nil {
		t.Stop()
		delete(d.timers, key)
	}
}

func (d *deadlines) fire(t *Tracker, reg Registration, key string) {
	if d.ctx.Err() != nil {
		return
	}
	if err := d.runner.TimeOut(d.ctx, t, reg); err != nil {
		d.runner.Svc.Logger.Warn("answering a timed-out registration failed; trying again in 5s",
			"registration", reg.ID, "error", err.Error())
		reg.State = RegTimedOut // it is marked; only the answer is missing
		d.schedule(t, reg, 5*time.Second)
		return
	}
	d.mu.Lock()
	delete(d.timers, key)
	d.mu.Unlock()
}

// rescan schedules the pending registrations this process does not watch
// yet: those from before a restart, or opened by another process. One
// that is overdue already fires after grace.
func (d *deadlines) rescan(grace time.Duration) error {
	regs, err := d.runner.Svc.Store.PendingRegistrations(d.ctx)
	if err != nil {
		return err
	}
	sort.Slice(regs, func(i, j int) bool { return regs[i].DeadlineAt.Before(regs[j].DeadlineAt) })
	for _, reg := range regs {
		t := d.runner.tracker(reg.Tracker)
		if t == nil {
			continue
		}
		d.mu.Lock()
		_, watched := d.timers[t.Name+"/"+reg.ID]
		d.mu.Unlock()
		if watched {
			continue
		}
		after := time.Until(reg.DeadlineAt)
		switch {
		case reg.State == RegTimedOut: // marked already; only its answer is missing
			after = 0
		case after < grace:
			after = grace
		}
		d.schedule(t, reg, after)
	}
	return nil
}

func (d *deadlines) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, t := range d.timers {
		t.Stop()
		delete(d.timers, k)
	}
}

func (r *Runner) tracker(name string) *Tracker {
	for _, t := range r.Config.Trackers {
		if t.Name == name {
			return t
		}
	}
	return nil
}

package actions

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"regflow/engine"
)

// LogEvent appends the message as one JSON line to the event log and
// records it in the store.
var LogEvent = &engine.ActionSpec{
	Name:    "log_event",
	Summary: "Append the message as a JSON line to the event log and record it in the store.",
	Attrs: []engine.AttrSpec{
		{Name: "path", Kind: engine.AttrString, Default: `"var/log/user_reg.log"`,
			Doc:     "Event log file; relative paths resolve against the working directory.",
			Example: `path = env("REGFLOW_EVENT_LOG", "var/log/user_reg.log")`},
		{Name: "fields", Kind: engine.AttrStrings, Default: "every field",
			Doc: "Record only these fields of the message."},
	},
	New: func(c *engine.StepConfig) (engine.Action, error) {
		var errs []error
		for _, f := range c.Strings("fields") {
			// Any declared field: the event log also sees messages that
			// another pipeline added fields to.
			if _, ok := c.Config.Message[f]; !ok {
				errs = append(errs, c.Errorf("fields", "Unknown message field",
					"fields names %q, which the message block does not declare.%s",
					f, didYouMean(f, c.Config.Message.Names())))
			}
		}
		if len(errs) > 0 {
			return nil, engine.JoinErrors(errs)
		}
		return &logEvent{path: c.String("path", "var/log/user_reg.log"), fields: c.Strings("fields")}, nil
	},
}

type logEvent struct {
	path   string
	fields []string
}

// eventLogs keeps one open file per event log, so that lines from many
// handlers are appended whole and in one write each.
var eventLogs = struct {
	sync.Mutex
	files map[string]*os.File
}{files: map[string]*os.File{}}

func appendLine(path string, line []byte) error {
	eventLogs.Lock()
	defer eventLogs.Unlock()
	f := eventLogs.files[path]
	if f != nil && !stillAt(f, path) {
		// Rotated away (renamed or removed): go on in a new file at path.
		f.Close()
		delete(eventLogs.files, path)
		f = nil
	}
	if f == nil {
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			return err
		}
		var err error
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return err
		}
		eventLogs.files[path] = f
	}
	if _, err := f.Write(line); err != nil {
		// The file may have been rotated away; reopen next time.
		f.Close()
		delete(eventLogs.files, path)
		return err
	}
	return nil
}

// stillAt reports whether f is still the file found at path.
func stillAt(f *os.File, path string) bool {
	open, err := f.Stat()
	if err != nil {
		return false
	}
	now, err := os.Stat(path)
	return err == nil && os.SameFile(open, now)
}

func (l *logEvent) Run(ctx context.Context, c *engine.Call) error {
	body := c.Delivered()
	if l.fields != nil {
		all := body
		body = make(engine.Message, len(l.fields))
		for _, f := range l.fields {
			if v, ok := all[f]; ok {
				body[f] = v
			}
		}
	}
	ev := &engine.Event{Time: time.Now().UTC(), Pipeline: c.Pipeline, RoutingKey: c.RoutingKey,
		MessageID: c.MessageID, Body: body}
	line, err := json.Marshal(ev)
	if err != nil {
		return engine.Permanent(fmt.Errorf("encode event: %w", err))
	}
	path := c.Svc.Path(l.path)
	if err := appendLine(path, append(line, '\n')); err != nil {
		return engine.Transient(fmt.Errorf("event log: %w", err))
	}
	if c.Svc.Store != nil {
		if err := c.Svc.Store.AddEvent(ctx, ev); err != nil {
			return err
		}
	}
	c.Notef("logged to %s", l.path)
	return nil
}

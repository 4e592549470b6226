package actions

import (
	"context"
	"fmt"

	"regflow/engine"
)

// Publish publishes the message, or a shaped copy, to a routing key and
// waits for the broker's confirmation.
var Publish = &engine.ActionSpec{
	Name:    "publish",
	Summary: "Publish the message (or a shaped copy) to a routing key, persistent and confirmed.",
	Attrs: []engine.AttrSpec{
		{Name: "routing_key", Kind: engine.AttrTemplate, Required: true,
			Doc:     "Where to publish. Every word must be non-empty once rendered.",
			Example: `routing_key = "completed.{{ msg.queuename }}"`},
		{Name: "exchange", Kind: engine.AttrString, Default: "broker.exchange",
			Doc: "Exchange to publish on; checked at startup with a passive declare."},
		{Name: "fields", Kind: engine.AttrStrings, Default: "every field",
			Doc: "Publish only these fields."},
		{Name: "omit", Kind: engine.AttrStrings, Doc: "Leave these fields out."},
		{Name: "set", Kind: engine.AttrExprMap,
			Doc:     "Fields to add or replace in the published copy, each an expr expression.",
			Example: `set = { notified = "true" }`},
	},
	New: newPublish,
}

type publish struct {
	key      *engine.Template
	exchange string
	fields   []string
	omit     map[string]bool
	set      []engine.NamedProgram
}

func newPublish(c *engine.StepConfig) (engine.Action, error) {
	p := &publish{
		key:      c.Template("routing_key"),
		exchange: c.String("exchange", c.Config.Broker.Exchange),
		fields:   c.Strings("fields"),
		omit:     map[string]bool{},
		set:      c.ExprMap("set"),
	}
	if p.exchange == "" {
		return nil, c.Errorf("exchange", "Empty exchange", "Name an exchange or leave exchange out.")
	}
	if p.key.IsConst() {
		if err := engine.CheckRoutingKey(p.key.Source); err != nil {
			return nil, c.Errorf("routing_key", "Invalid routing key", "%s.", err)
		}
	}
	var errs []error
	for _, attr := range []string{"fields", "omit"} {
		for _, f := range c.Strings(attr) {
			if _, ok := c.Schema[f]; !ok {
				errs = append(errs, c.Errorf(attr, "Unknown message field",
					"The field %q is not declared in the message block.%s", f, didYouMean(f, c.Schema.Names())))
			}
		}
	}
	if len(errs) > 0 {
		return nil, engine.JoinErrors(errs)
	}
	for _, f := range c.Strings("omit") {
		p.omit[f] = true
	}
	for _, s := range p.set {
		if t, ok := c.Schema[s.Name]; ok && !t.Accepts(s.Program.Type) {
			return nil, c.ErrorAt(s.Program.Range, "Wrong type for "+s.Name,
				"set gives %s the value of %q, of type %s, but the message block declares %s as %s; "+
					"the published message would be refused.", s.Name, s.Program.Source, s.Program.Type, s.Name, t)
		}
	}
	return p, nil
}

// Exchange is the exchange the step publishes on, for the startup check.
func (p *publish) Exchange() string { return p.exchange }

// RoutingKey is the step's routing-key template, for the routing graph.
func (p *publish) RoutingKey() *engine.Template { return p.key }

func (p *publish) Run(ctx context.Context, c *engine.Call) error {
	key, err := c.Render(p.key)
	if err != nil {
		return err
	}
	body := make(engine.Message, len(c.Msg))
	if p.fields != nil {
		for _, f := range p.fields {
			if v, ok := c.Msg[f]; ok {
				body[f] = v
			}
		}
	} else {
		for f, v := range c.Msg {
			body[f] = v
		}
	}
	for f := range p.omit {
		delete(body, f)
	}
	for _, s := range p.set {
		v, err := s.Program.Run(c.Env())
		if err != nil {
			return engine.Permanent(fmt.Errorf("set %s: %w", s.Name, err))
		}
		body[s.Name] = v
	}
	if err := c.Publish(ctx, p.exchange, key, body); err != nil {
		return err
	}
	if c.Note() == "" {
		c.Notef("published %s", key)
	}
	return nil
}

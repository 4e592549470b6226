package actions

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"strings"

	"regflow/engine"
)

// SendEmail sends a templated plain-text mail through the mail block's
// SMTP server, or into its outbox directory.
var SendEmail = &engine.ActionSpec{
	Name:    "send_email",
	Summary: "Send a templated plain-text mail over SMTP, or into the outbox when no SMTP server is set.",
	Attrs: []engine.AttrSpec{
		{Name: "to", Kind: engine.AttrTemplates, Required: true, Doc: "Recipients.",
			Example: `to = ["{{ msg.email }}"]`},
		{Name: "cc", Kind: engine.AttrTemplates, Doc: "Copy recipients."},
		{Name: "bcc", Kind: engine.AttrTemplates, Doc: "Blind copy recipients: in the SMTP envelope only; an outbox file keeps them in a Bcc header for its delivery agent (sendmail -t removes it)."},
		{Name: "from", Kind: engine.AttrTemplate, Default: "mail.from", Doc: "Sender."},
		{Name: "reply_to", Kind: engine.AttrTemplate, Doc: "Reply-To address."},
		{Name: "subject", Kind: engine.AttrTemplate, Required: true, Doc: "Subject line; one line."},
		{Name: "body", Kind: engine.AttrTemplate, Required: true,
			Doc:     "Plain-text body; a <<-EOT heredoc drops its indentation.",
			Example: `body = file("mail/welcome.txt")`},
	},
	New: newSendEmail,
}

type sendEmail struct {
	to, cc, bcc   []*engine.Template
	from, replyTo *engine.Template
	subject, body *engine.Template
}

func newSendEmail(c *engine.StepConfig) (engine.Action, error) {
	s := &sendEmail{
		to: c.Templates("to"), cc: c.Templates("cc"), bcc: c.Templates("bcc"),
		from: c.Template("from"), replyTo: c.Template("reply_to"),
		subject: c.Template("subject"), body: c.Template("body"),
	}
	if s.from == nil {
		s.from = engine.ConstTemplate(c.Config.Mail.From)
	}
	if len(s.to) == 0 {
		return nil, c.Errorf("to", "No recipients", "to needs at least one address.")
	}
	return s, nil
}

// renderAddresses renders recipient templates; each must be one address.
func renderAddresses(c *engine.Call, what string, ts []*engine.Template) ([]string, error) {
	out := make([]string, 0, len(ts))
	for _, t := range ts {
		a, err := c.Render(t)
		if err != nil {
			return nil, err
		}
		if strings.TrimSpace(a) == "" {
			return nil, engine.Permanent(fmt.Errorf("%s: %q rendered empty", what, t.Source))
		}
		if _, err := mail.ParseAddress(a); err != nil {
			return nil, engine.Permanent(fmt.Errorf("%s: %q is not an address", what, a))
		}
		out = append(out, a)
	}
	return out, nil
}

func (s *sendEmail) Run(ctx context.Context, c *engine.Call) error {
	m := &engine.Mail{}
	var err error
	if m.To, err = renderAddresses(c, "to", s.to); err != nil {
		return err
	}
	if m.Cc, err = renderAddresses(c, "cc", s.cc); err != nil {
		return err
	}
	if m.Bcc, err = renderAddresses(c, "bcc", s.bcc); err != nil {
		return err
	}
	if m.From, err = c.Render(s.from); err != nil {
		return err
	}
	if m.ReplyTo, err = c.Render(s.replyTo); err != nil {
		return err
	}
	if m.Subject, err = c.Render(s.subject); err != nil {
		return err
	}
	if strings.ContainsAny(m.Subject, "\r\n") {
		return engine.Permanent(errors.New("subject: must be one line"))
	}
	if m.Text, err = c.Render(s.body); err != nil {
		return err
	}
	if err := c.SendMail(ctx, m); err != nil {
		return err
	}
	c.Notef("mailed %s: %s", strings.Join(m.To, ", "), m.Subject)
	return nil
}

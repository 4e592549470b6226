package actions

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"regflow/engine"
)

// SubscribeList asks a LISTSERV-style list server, by mail, to subscribe
// the user: one "QUIET ADD <list> <address> <name>" command line per list.
// Every value is checked first, so a name can never smuggle in a second
// command line.
var SubscribeList = &engine.ActionSpec{
	Name:    "subscribe_list",
	Summary: "Mail the list server one subscribe command per list (LISTSERV: QUIET ADD list address name).",
	Attrs: []engine.AttrSpec{
		{Name: "lists", Kind: engine.AttrStrings, Required: true, Doc: "Lists to subscribe to.",
			Example: `lists = ["hpc-announce", "hpc-users"]`},
		{Name: "server", Kind: engine.AttrTemplate, Required: true,
			Doc: "Address of the list server's command mailbox.", Example: `server = "listserv@lists.example.edu"`},
		{Name: "email", Kind: engine.AttrTemplate, Default: `"{{ msg.email }}"`, Doc: "Address to subscribe."},
		{Name: "name", Kind: engine.AttrTemplate, Default: `"{{ msg.fullname }}"`, Doc: "Subscriber's name."},
		{Name: "from", Kind: engine.AttrTemplate, Default: "mail.from",
			Doc: "Sender; the list server must accept commands from it."},
		{Name: "quiet", Kind: engine.AttrBool, Default: "true",
			Doc: "Prefix QUIET so the list server does not notify the subscriber."},
	},
	New: newSubscribeList,
}

var listName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

type subscribeList struct {
	lists        []string
	server, from *engine.Template
	email, name  *engine.Template
	quiet        bool
}

func newSubscribeList(c *engine.StepConfig) (engine.Action, error) {
	s := &subscribeList{lists: c.Strings("lists"), server: c.Template("server"), from: c.Template("from"),
		email: c.Template("email"), name: c.Template("name"), quiet: c.Bool("quiet", true)}
	if len(s.lists) == 0 {
		return nil, c.Errorf("lists", "No lists", "lists needs at least one list name.")
	}
	for _, l := range s.lists {
		if !listName.MatchString(l) {
			return nil, c.Errorf("lists", "Invalid list name",
				"%q is not a list name; use letters, digits, _, - and .", l)
		}
	}
	if s.from == nil {
		s.from = engine.ConstTemplate(c.Config.Mail.From)
	}
	var diags error
	if s.email == nil {
		s.email, diags = defaultTemplate(c, "email", "{{ msg.email }}")
	}
	if s.name == nil && diags == nil {
		s.name, diags = defaultTemplate(c, "name", "{{ msg.fullname }}")
	}
	if diags != nil {
		return nil, diags
	}
	return s, nil
}

// defaultTemplate compiles an attribute's default, which needs the field
// it names to be declared.
func defaultTemplate(c *engine.StepConfig, attr, text string) (*engine.Template, error) {
	t, diags := engine.CompileTemplate(text, c.Schema)
	if diags.HasErrors() {
		return nil, c.Errorf(attr, "Cannot use the default of "+attr,
			"The default %s needs a field the message block does not declare; set %s explicitly.", text, attr)
	}
	return t, nil
}

// Commands returns the command lines for one subscriber.
func (s *subscribeList) Commands(email, name string) []string {
	prefix := "ADD"
	if s.quiet {
		prefix = "QUIET ADD"
	}
	lines := make([]string, len(s.lists))
	for i, l := range s.lists {
		lines[i] = strings.TrimSpace(fmt.Sprintf("%s %s %s %s", prefix, l, email, name))
	}
	return lines
}

func (s *subscribeList) Run(ctx context.Context, c *engine.Call) error {
	email, err := c.Render(s.email)
	if err != nil {
		return err
	}
	if email, err = BareAddress(email); err != nil {
		return engine.Permanent(fmt.Errorf("email: %w", err))
	}
	name, err := c.Render(s.name)
	if err != nil {
		return err
	}
	if r, bad := controlChar(name, false); bad {
		return engine.Permanent(fmt.Errorf("name: control character %U is not allowed", r))
	}
	name = strings.Join(strings.Fields(name), " ")
	server, err := c.Render(s.server)
	if err != nil {
		return err
	}
	from, err := c.Render(s.from)
	if err != nil {
		return err
	}
	if server == "" {
		return engine.Permanent(errors.New("server rendered empty"))
	}
	m := &engine.Mail{
		From:    from,
		To:      []string{server},
		Subject: "subscribe " + email,
		Text:    strings.Join(s.Commands(email, name), "\n") + "\n",
		// One command per line, as the list server reads them.
		Commands: true,
	}
	if err := c.SendMail(ctx, m); err != nil {
		return err
	}
	c.Notef("asked %s to add %s to %s", server, email, strings.Join(s.lists, ", "))
	return nil
}

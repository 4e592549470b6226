package actions

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"

	"regflow/engine"
)

// Exec runs a site command from an argument list, never through a shell,
// under the step's timeout. Each rendered argument is one argument, so a
// value from a message can never become a second word or an option of
// its own choosing beyond the slot it was given.
var Exec = &engine.ActionSpec{
	Name:    "exec",
	Summary: "Run a site command from an argument list (no shell) under the step's timeout.",
	Attrs: []engine.AttrSpec{
		{Name: "command", Kind: engine.AttrTemplates, Required: true,
			Doc:     "The program (a fixed path or name) and its arguments, each a template.",
			Example: `command = ["/usr/local/sbin/mkaccount", "--uid", "{{ msg.uid }}", "--", "{{ msg.username }}"]`},
		{Name: "env", Kind: engine.AttrTemplateMap, Doc: "Environment variables added to regflow's own."},
		{Name: "dir", Kind: engine.AttrString, Default: "the working directory", Doc: "Directory to run in."},
		{Name: "output", Kind: engine.AttrString,
			Doc: "Field that receives the command's standard output, trimmed; a command that writes more than 64 KiB fails the step."},
	},
	Adds: func(c *engine.StepConfig) engine.Schema {
		if f := c.String("output", ""); f != "" {
			return engine.Schema{f: engine.TypeString}
		}
		return nil
	},
	AddsDoc: "the field named by `output`, a string, when output is set",
	New:     newExec,
}

type execAction struct {
	argv   []*engine.Template
	env    []engine.NamedTemplate
	dir    string
	output string
}

func newExec(c *engine.StepConfig) (engine.Action, error) {
	e := &execAction{argv: c.Templates("command"), env: c.TemplateMap("env"), dir: c.String("dir", ""),
		output: c.String("output", "")}
	if len(e.argv) == 0 {
		return nil, c.Errorf("command", "Empty command", "command needs at least the program to run.")
	}
	if !e.argv[0].IsConst() || e.argv[0].Source == "" {
		return nil, c.Errorf("command", "Program must be fixed",
			"The first element of command is the program and must be a plain string; "+
				"a message must never choose what runs.")
	}
	for _, kv := range e.env {
		if !envName.MatchString(kv.Name) {
			return nil, c.Errorf("env", "Invalid variable name",
				"%q cannot name an environment variable: use letters, digits and _, not beginning with a digit.",
				kv.Name)
		}
	}
	return e, nil
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// AlwaysFails reports a program that is not installed, for validate.
func (e *execAction) AlwaysFails() string {
	if _, err := exec.LookPath(e.argv[0].Source); err != nil {
		return fmt.Sprintf("the program %s is not installed or not executable", e.argv[0].Source)
	}
	return ""
}

func (e *execAction) Run(ctx context.Context, c *engine.Call) error {
	argv, err := c.RenderAll(e.argv)
	if err != nil {
		return err
	}
	env := os.Environ()
	for _, kv := range e.env {
		v, err := c.Render(kv.Template)
		if err != nil {
			return err
		}
		env = append(env, kv.Name+"="+v)
	}
	dir := ""
	if e.dir != "" {
		dir = c.Svc.Path(e.dir)
	}
	if c.Svc.Sandbox {
		c.Notef("not run in the sandbox: %s", strings.Join(argv, " "))
		if e.output != "" {
			c.Set(e.output, "")
		}
		return nil
	}
	out, err := c.Svc.Commands.Run(ctx, argv, env, dir)
	if err != nil {
		return err
	}
	if e.output != "" {
		c.Set(e.output, strings.TrimSpace(string(out)))
	}
	c.Notef("ran %s", argv[0])
	return nil
}

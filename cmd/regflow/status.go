package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"regflow/engine"
)

func cmdStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("status", "status [--config DIR] [USER]", stderr)
	config := fs.String("config", "pipelines", "the pipeline configuration (for the store)")
	asJSON := fs.Bool("json", false, "print as JSON")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		fs.Usage()
		return errUsage
	}
	cfg, err := loadConfig([]string{*config}, stderr)
	if err != nil {
		return err
	}
	root, _ := os.Getwd()
	path := (&engine.Services{Root: root}).Path(cfg.Store.Path)
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("no store at %s; run regflow status where regflow run runs", path)
	}
	store, err := engine.OpenStore(path)
	if err != nil {
		return err
	}
	defer store.Close()
	ctx := context.Background()
	user := ""
	if len(pos) == 1 {
		user = pos[0]
	}
	regs, err := store.Registrations(ctx, user)
	if err != nil {
		return err
	}
	if user != "" && len(regs) == 0 {
		return fmt.Errorf("no registration of %s", user)
	}
	if *asJSON {
		type withSteps struct {
			engine.Registration
			Steps []engine.RegistrationStep `json:"steps,omitempty"`
		}
		out := make([]withSteps, len(regs))
		for i, r := range regs {
			out[i].Registration = r
			if user != "" { // every step, as the text shows them
				if out[i].Steps, err = store.RegistrationSteps(ctx, r.Tracker, r.ID); err != nil {
					return err
				}
			}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	if user == "" {
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "REGISTRATION\tSTATE\tOPENED\tTOOK\tWAITING FOR / LAST ERROR")
		for _, r := range regs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", printable(r.ID), r.State, r.OpenedAt.Local().Format("2006-01-02 15:04:05 MST"),
				took(r), printable(oneLine(detail(r), 80)))
		}
		return tw.Flush()
	}
	for _, r := range regs {
		fmt.Fprintf(stdout, "registration %s (%s): %s\n", printable(r.ID), r.Tracker, r.State)
		fmt.Fprintf(stdout, "  opened      %s\n", stamp(r.OpenedAt))
		fmt.Fprintf(stdout, "  deadline    %s\n", stamp(r.DeadlineAt))
		if !r.ClosedAt.IsZero() {
			fmt.Fprintf(stdout, "  closed      %s (after %s)\n", stamp(r.ClosedAt), took(r))
		}
		if r.State == engine.RegOpen {
			fmt.Fprintf(stdout, "  waiting for %s\n", printable(r.WaitingFor))
		}
		if r.LastError != "" {
			fmt.Fprintf(stdout, "  last error  %s\n", printable(r.LastError))
		}
		if r.Late != "" {
			fmt.Fprintf(stdout, "  late        %s\n", printable(r.Late))
		}
		steps, err := store.RegistrationSteps(ctx, r.Tracker, r.ID)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, "  steps:")
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		for _, s := range steps {
			what := s.Note
			if s.Error != "" {
				what = s.Error
			}
			attempts := ""
			if s.Attempts > 1 {
				attempts = fmt.Sprintf(" (%d attempts)", s.Attempts)
			}
			fmt.Fprintf(tw, "    %s\t%s/%s\t%s\t%s%s\n", s.At.Local().Format("15:04:05.000"), s.Pipeline, s.Step,
				s.Status, printable(oneLine(what, 90)), attempts)
		}
		tw.Flush()
	}
	return nil
}

func stamp(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05.000 MST") }

func took(r engine.Registration) string {
	end := r.ClosedAt
	if end.IsZero() {
		end = time.Now()
	}
	return end.Sub(r.OpenedAt).Round(time.Millisecond).String()
}

func detail(r engine.Registration) string {
	switch {
	case r.State == engine.RegOpen:
		return r.WaitingFor
	case r.State == engine.RegTimedOut:
		return "timed out waiting for " + r.WaitingFor
	case r.LastError != "":
		return r.LastError
	}
	return ""
}

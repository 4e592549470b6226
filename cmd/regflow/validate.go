package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/hashicorp/hcl/v2"

	"regflow/actions"
	"regflow/engine"
)

func cmdValidate(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("validate", "validate [--json] PATH...", stderr)
	asJSON := fs.Bool("json", false, "print diagnostics as a JSON list")
	paths, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(paths) == 0 {
		fs.Usage()
		return errUsage
	}
	cfg, files, diags := engine.Load(paths, actions.Registry())
	tests := 0
	if cfg != nil {
		// The pipeline tests beside the pipelines are checked too.
		if names, err := engine.TestFiles(paths); err == nil && len(names) > 0 {
			loaded, testFiles, testDiags := engine.LoadTests(names, cfg)
			for name, f := range testFiles {
				files[name] = f
			}
			diags = append(diags, testDiags...)
			tests = len(loaded)
			if testDiags.HasErrors() {
				cfg = nil
			}
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(engine.DiagsJSON(diags)); err != nil {
			return err
		}
	} else {
		if err := engine.WriteDiags(stderr, files, diags); err != nil {
			return err
		}
		if cfg != nil {
			steps := 0
			for _, p := range cfg.Pipelines {
				steps += len(p.Steps) + len(p.OnFailure)
			}
			fmt.Fprintf(stdout, "ok: %s, %s, %s, %s\n", plural(len(cfg.Pipelines), "pipeline"),
				plural(steps, "step"), plural(tests, "test"), plural(countSeverity(diags, hcl.DiagWarning), "warning"))
		} else {
			note := ""
			if len(files) > 0 {
				note = " (the routing checks run once there are no errors)"
			}
			fmt.Fprintf(stderr, "%s, %s%s\n", plural(countSeverity(diags, hcl.DiagError), "error"),
				plural(countSeverity(diags, hcl.DiagWarning), "warning"), note)
		}
	}
	if diags.HasErrors() {
		return exitError{1}
	}
	return nil
}

func countSeverity(diags hcl.Diagnostics, sev hcl.DiagnosticSeverity) int {
	n := 0
	for _, d := range diags {
		if d.Severity == sev {
			n++
		}
	}
	return n
}

func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s", word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// loadConfig loads paths and prints any diagnostics; it fails on errors.
func loadConfig(paths []string, stderr io.Writer) (*engine.Config, error) {
	cfg, files, diags := engine.Load(paths, actions.Registry())
	if len(diags) > 0 {
		engine.WriteDiags(stderr, files, diags)
	}
	if diags.HasErrors() {
		return nil, fmt.Errorf("the configuration has %s; see above", plural(countSeverity(diags, hcl.DiagError), "error"))
	}
	return cfg, nil
}

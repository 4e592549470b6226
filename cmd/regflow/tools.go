package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"

	"regflow/actions"
	"regflow/engine"
)

func cmdGraph(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("graph", "graph [--format mermaid|dot] DIR...", stderr)
	format := fs.String("format", "mermaid", "mermaid or dot")
	paths, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(paths) == 0 {
		fs.Usage()
		return errUsage
	}
	cfg, err := loadConfig(paths, stderr)
	if err != nil {
		return err
	}
	switch *format {
	case "mermaid":
		engine.WriteMermaid(stdout, cfg)
	case "dot":
		engine.WriteDOT(stdout, cfg)
	default:
		fmt.Fprintf(stderr, "regflow graph: --format must be mermaid or dot, not %q\n", *format)
		return errUsage
	}
	return nil
}

func cmdFmt(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("fmt", "fmt [-check] [-diff] [PATH...]", stderr)
	check := fs.Bool("check", false, "write nothing; list the files that are not formatted and exit 1 if any")
	diff := fs.Bool("diff", false, "print the changes as a unified diff and write nothing")
	paths, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(paths) == 0 {
		paths = []string{"."}
	}
	files, err := hclFiles(paths)
	if err != nil {
		return err
	}
	unformatted, broken := false, false
	for _, name := range files {
		src, err := os.ReadFile(name)
		if err != nil {
			return err
		}
		out, diags := engine.FormatHCL(name, src)
		if diags.HasErrors() {
			engine.WriteDiags(stderr, engine.Sources{name: &hcl.File{Bytes: src}}, diags)
			fmt.Fprintf(stderr, "regflow fmt: %s does not parse; it was left as it is\n", name)
			broken = true
			continue
		}
		if bytes.Equal(src, out) {
			continue
		}
		unformatted = true
		if *diff {
			io.WriteString(stdout, engine.UnifiedDiff(name, src, out))
		} else {
			fmt.Fprintln(stdout, name)
		}
		if !*check && !*diff {
			if err := os.WriteFile(name, out, 0o644); err != nil {
				return err
			}
		}
	}
	if broken || *check && unformatted {
		return exitError{1}
	}
	return nil
}

// hclFiles lists the .hcl files named by paths, test files included,
// recursing into directories.
func hclFiles(paths []string) ([]string, error) {
	var files []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			files = append(files, p)
			continue
		}
		err = filepath.WalkDir(p, func(path string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			// Hidden directories and testdata (inputs for tests, some of
			// them broken on purpose) are not walked into.
			if d.IsDir() && path != p && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			if !d.IsDir() && strings.HasSuffix(path, ".hcl") {
				files = append(files, path)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	sort.Strings(files)
	return files, nil
}

func cmdDocs(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("docs", "docs [-o FILE]", stderr)
	out := fs.String("o", "", "write to FILE instead of standard output")
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	var b bytes.Buffer
	engine.WriteReference(&b, actions.Registry())
	if *out == "" {
		_, err := stdout.Write(b.Bytes())
		return err
	}
	return os.WriteFile(*out, b.Bytes(), 0o644)
}

func cmdTest(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("test", "test [-run REGEXP] DIR...", stderr)
	filter := fs.String("run", "", "run only the tests whose name matches this regular expression")
	verbose := fs.Bool("v", false, "print the trace of every test, not only of failing ones")
	paths, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(paths) == 0 {
		fs.Usage()
		return errUsage
	}
	var match *regexp.Regexp
	if *filter != "" {
		if match, err = regexp.Compile(*filter); err != nil {
			return fmt.Errorf("-run: %w", err)
		}
	}
	cfg, err := loadConfig(paths, stderr)
	if err != nil {
		return err
	}
	files, err := engine.TestFiles(paths)
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("no *_test.hcl files in %s", strings.Join(paths, ", "))
	}
	tests, sources, diags := engine.LoadTests(files, cfg)
	if len(diags) > 0 {
		engine.WriteDiags(stderr, sources, diags)
	}
	if diags.HasErrors() {
		return fmt.Errorf("the test files have errors; see above")
	}
	var run []*engine.PipelineTest
	for _, t := range tests {
		if match == nil || match.MatchString(t.Name) {
			run = append(run, t)
		}
	}
	if len(run) == 0 {
		return fmt.Errorf("no test matches -run %q; the tests are: %s", *filter, testNames(tests))
	}
	outcomes, err := engine.RunTests(context.Background(), cfg, run)
	if err != nil {
		return err
	}
	if engine.WriteTestReport(stdout, outcomes, *verbose) > 0 {
		return exitError{1}
	}
	return nil
}

func testNames(tests []*engine.PipelineTest) string {
	var names []string
	for _, t := range tests {
		names = append(names, fmt.Sprintf("%q", t.Name))
	}
	return strings.Join(names, ", ")
}

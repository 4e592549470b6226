package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

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
	diff := fs.Bool("diff", false, "print the changes as a unified diff")
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
			engine.WriteDiags(stderr, engine.Sources{}, diags)
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
			if d.IsDir() && path != p && strings.HasPrefix(d.Name(), ".") {
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

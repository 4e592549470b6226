// Command regflow runs account-registration pipelines on RabbitMQ.
//
//	regflow run DIR...        consume and run the pipelines
//	regflow validate PATH...  check pipeline files
//	regflow simulate DIR... --key KEY MESSAGE.json
//	regflow request USER --email E --fullname F [--reason R]
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

const usage = `regflow runs account-registration pipelines on RabbitMQ.

Usage:
  regflow run DIR...                  consume and run every pipeline in DIR
  regflow validate PATH...            check pipeline files; exit 1 on any error
  regflow simulate DIR... --key KEY MESSAGE.json
                                      run one message through the pipelines in-process
  regflow request USER --email E --fullname F [--reason R]
                                      submit a registration and wait for its answer
  regflow test [-v] [-run REGEXP] DIR...
                                      run the pipeline tests in DIR/*_test.hcl, in a sandbox
  regflow status [USER]               registrations and their steps
  regflow dead list | replay ID...|--all
                                      show or retry the messages that could not succeed
  regflow graph [--format dot] DIR... the routing picture, as Mermaid or DOT
  regflow fmt [-check] [-diff] [PATH...]
                                      rewrite HCL files in canonical form (default: the
                                      current directory and below; -diff writes nothing)
  regflow docs [-o FILE]              the pipeline reference (docs/reference.md)
  regflow version

Run "regflow COMMAND -h" for a command's flags.
`

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// errUsage makes main exit 2 after the command printed its own message.
var errUsage = errors.New("usage")

// exitError carries an exit code other than 1.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmds := map[string]func([]string, io.Writer, io.Writer) error{
		"run":      cmdRun,
		"validate": cmdValidate,
		"simulate": cmdSimulate,
		"request":  cmdRequest,
		"graph":    cmdGraph,
		"fmt":      cmdFmt,
		"docs":     cmdDocs,
		"test":     cmdTest,
		"dead":     cmdDead,
		"status":   cmdStatus,
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	case "version", "--version":
		fmt.Fprintln(stdout, "regflow", version)
		return 0
	}
	cmd, ok := cmds[name]
	if !ok {
		fmt.Fprintf(stderr, "regflow: unknown command %q\n\n%s", name, usage)
		return 2
	}
	err := cmd(args[1:], stdout, stderr)
	var ee exitError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	case errors.As(err, &ee):
		return ee.code
	}
	fmt.Fprintf(stderr, "regflow %s: %v\n", name, err)
	return 1
}

// parseArgs parses flags that may stand before, between or after the
// positional arguments, and returns the positional ones. A single-dash
// word that is no flag, such as the username "-rf", is positional, so
// that the pipeline can refuse it with its reason.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			pos = append(pos, args[i+1:]...)
			i = len(args)
		case len(a) < 2 || a[0] != '-':
			pos = append(pos, a)
		default:
			name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
			f := fs.Lookup(name)
			if f == nil && a[1] != '-' && name != "h" && name != "help" {
				pos = append(pos, a)
				continue
			}
			flags = append(flags, a)
			if f != nil && !hasValue && !isBool(f) && i+1 < len(args) {
				i++
				flags = append(flags, args[i])
			}
		}
	}
	if err := fs.Parse(flags); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, errUsage
	}
	return append(fs.Args(), pos...), nil
}

func isBool(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: regflow %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// amqpURL picks the broker URL: the flag, then REGFLOW_AMQP_URL, then the
// configuration's.
func amqpURL(flagValue, configured string) string {
	if flagValue != "" {
		return flagValue
	}
	if v := os.Getenv("REGFLOW_AMQP_URL"); v != "" {
		return v
	}
	return configured
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %q is not debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: %q is not text or json", format)
}

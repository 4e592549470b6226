package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"

	"regflow/engine"
)

func cmdSimulate(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("simulate", "simulate DIR... --key KEY MESSAGE.json", stderr)
	key := fs.String("key", "", "routing key the message arrives on (required)")
	asJSON := fs.Bool("json", false, "print the trace as JSON")
	keep := fs.Bool("keep", false, "keep the sandbox directory and print its path")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if *key == "" || len(pos) < 2 {
		if *key == "" {
			fmt.Fprintln(stderr, "regflow simulate: say which routing key the message arrives on with --key")
		} else {
			fmt.Fprintln(stderr, "regflow simulate: name the pipeline directory and the message file")
		}
		fs.Usage()
		return errUsage
	}
	dirs, msgFile := pos[:len(pos)-1], pos[len(pos)-1]
	body, err := readInput(msgFile)
	if err != nil {
		return err
	}
	if err := engine.CheckRoutingKey(*key); err != nil {
		return fmt.Errorf("--key: %v", err)
	}
	cfg, err := loadConfig(dirs, stderr)
	if err != nil {
		return err
	}

	dir, err := os.MkdirTemp("", "regflow-sandbox-")
	if err != nil {
		return err
	}
	if *keep {
		fmt.Fprintln(stderr, "sandbox:", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	svc, err := engine.Sandbox(cfg, dir, nil, log)
	if err != nil {
		return err
	}
	defer svc.Store.Close()
	sim := engine.NewSimulator(cfg, svc)
	trace, err := sim.Run(context.Background(), *key, body, "")
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if jerr := enc.Encode(trace); jerr != nil {
			return jerr
		}
	} else {
		engine.WriteTrace(stdout, trace)
	}
	if err != nil {
		return err
	}
	// A failed registration is an answer; a dead letter is not.
	if n := trace.DeadLetters(); n > 0 {
		fmt.Fprintf(stderr, "regflow simulate: %s would be dead-lettered\n", plural(n, "message"))
		return exitError{1}
	}
	return nil
}

// readInput reads a file, or standard input for "-".
func readInput(name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(name)
}

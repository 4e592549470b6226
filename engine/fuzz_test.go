package engine_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"regflow/actions"
	"regflow/engine"
)

// FuzzLoad feeds arbitrary bytes to the loader: it must never panic, and
// whenever it returns a configuration it must have reported no error.
func FuzzLoad(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/diag/*/*.hcl")
	seeds = append(seeds, "../pipelines/registration.hcl", "../examples.hcl")
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b)
		}
	}
	reg := actions.Registry()
	f.Fuzz(func(t *testing.T, src []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "p.hcl"), src, 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, _, diags := engine.Load([]string{dir}, reg)
		if cfg != nil && diags.HasErrors() {
			t.Fatalf("a configuration came back with errors: %v", diags)
		}
		if cfg == nil && !diags.HasErrors() {
			t.Fatal("no configuration and no error")
		}
		for _, d := range diags {
			if d.Summary == "" {
				t.Fatalf("a diagnostic without a summary: %#v", d)
			}
		}
	})
}

// decoderRunner is the shipped request pipeline on a sandbox, shared by
// the fuzzer's runs.
var decoderRunner struct {
	once sync.Once
	cfg  *engine.Config
	run  *engine.Runner
	err  error
}

type nullPublisher struct{}

func (nullPublisher) Publish(context.Context, *engine.Outgoing) error { return nil }

// FuzzDecodeMessage feeds arbitrary bodies to the shipped request
// pipeline: decoding, the message check and validation must refuse or
// accept each, never panic or fail for want of infrastructure, and any
// key the chain publishes must be a valid routing key.
func FuzzDecodeMessage(f *testing.F) {
	for _, s := range []string{
		`{"username":"ana.lima","queuename":"ana%2Elima","email":"ana.lima@example.org","fullname":"Ana Lima","reason":"thesis"}`,
		`{"username":"","queuename":""}`,
		`{"uid":"10042"}`,
		`{"uid":4294967296,"gid":-1}`,
		`{"username":"x","queuename":"x","email":"Ana <ana@example.org>","fullname":"Eve\r\nBcc: x@example.net"}`,
		`[1,2,3]`, `"x"`, `{`, `{"a":{"b":[{"c":null}]}}`, "{\"username\":\"\xff\xfe\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		decoderRunner.once.Do(func() {
			dir, _ := os.MkdirTemp("", "regflow-fuzz-")
			cfg, _, diags := engine.Load([]string{"../pipelines"}, actions.Registry())
			if diags.HasErrors() {
				decoderRunner.err = diags
				return
			}
			svc, err := engine.Sandbox(cfg, dir, nullPublisher{}, slog.New(slog.DiscardHandler))
			decoderRunner.cfg, decoderRunner.err = cfg, err
			if err == nil {
				decoderRunner.run = engine.NewRunner(cfg, svc)
			}
		})
		if decoderRunner.err != nil {
			t.Fatal(decoderRunner.err)
		}
		msg, err := engine.DecodeMessage(body)
		if err == nil {
			decoderRunner.cfg.Message.Check(msg)
		}
		p := decoderRunner.cfg.Pipelines[0]
		res, err := decoderRunner.run.Handle(context.Background(), p,
			&engine.Delivery{RoutingKey: "request.fuzz", Body: body})
		if err != nil {
			t.Fatalf("Handle: %v", err)
		}
		if res.Refused == "" && res.Msg == nil {
			t.Fatal("neither refused nor decoded")
		}
		for _, pub := range res.Published() {
			if err := engine.CheckRoutingKey(pub.RoutingKey); err != nil {
				t.Fatalf("published %q: %v", pub.RoutingKey, err)
			}
		}
	})
}

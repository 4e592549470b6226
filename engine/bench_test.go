package engine_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	"regflow/actions"
	"regflow/engine"
)

// BenchmarkSimulateRegistration runs one registration through the shipped
// pipelines in-process per iteration: four messages, twelve steps, a git
// commit, three mails to the outbox.
func BenchmarkSimulateRegistration(b *testing.B) { benchSimulate(b, false) }

// BenchmarkSimulateEngine is BenchmarkSimulateRegistration with the steps
// that write files stubbed and the store in memory: what the engine itself
// costs per registration.
func BenchmarkSimulateEngine(b *testing.B) { benchSimulate(b, true) }

func benchSimulate(b *testing.B, engineOnly bool) {
	cfg, _, diags := engine.Load([]string{"../pipelines"}, actions.Registry())
	if diags.HasErrors() {
		b.Fatal(diags)
	}
	svc, err := engine.Sandbox(cfg, b.TempDir(), nil, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	if engineOnly {
		svc.Store.Close()
		if svc.Store, err = engine.OpenMemoryStore("bench"); err != nil {
			b.Fatal(err)
		}
	}
	defer svc.Store.Close()
	sim := engine.NewSimulator(cfg, svc)
	if engineOnly {
		sim.StubActions("git_commit", "send_email", "subscribe_list", "log_event", "exec")
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		u := fmt.Sprintf("u%07d", i)
		body := fmt.Sprintf(`{"username":%q,"queuename":%q,"email":"%s@example.org","fullname":"U","reason":"r"}`, u, u, u)
		if _, err := sim.Run(context.Background(), "request."+u, []byte(body), u); err != nil {
			b.Fatal(err)
		}
	}
}

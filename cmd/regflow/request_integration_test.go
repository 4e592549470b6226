//go:build integration

package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"regflow/actions"
	"regflow/engine"
)

func testURL() string {
	if u := os.Getenv("REGFLOW_TEST_AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

// TestRequestExitCodes runs regflow request against the shipped pipelines
// on a live broker: 0 for success, 1 for a refused registration, 2 when no
// answer comes, 1 with a clear message when nothing consumes requests.
func TestRequestExitCodes(t *testing.T) {
	conn, err := amqp.Dial(testURL())
	if err != nil {
		t.Fatalf("RabbitMQ is not reachable (%v); run make test, which starts it", err)
	}
	defer conn.Close()
	id := fmt.Sprintf("cli%d", time.Now().UnixNano())
	exchange := "RegUsr-" + id
	t.Setenv("REGFLOW_EXCHANGE", exchange)
	t.Setenv("REGFLOW_QUEUE_PREFIX", id+".")
	cfg, _, diags := engine.Load([]string{"../../pipelines"}, actions.Registry())
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	dir := t.TempDir()
	store, err := engine.OpenStore(dir + "/db")
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	svc := &engine.Services{Store: store, Mailer: &engine.Outbox{Dir: dir + "/outbox"}, Root: dir,
		Logger: slog.New(slog.DiscardHandler)}
	eng := engine.NewEngine(cfg, testURL(), svc)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	defer func() {
		cancel()
		<-done
		ch, _ := conn.Channel()
		for _, p := range cfg.Pipelines {
			ch.QueueDelete(p.Queue, false, false, false)
		}
		ch.QueueDelete(cfg.Broker.QueuePrefix+cfg.Broker.DeadLetter, false, false, false)
		ch.ExchangeDelete(exchange, false, false)
		ch.ExchangeDelete(cfg.Broker.DeadLetter, false, false)
	}()
	for i := 0; !eng.Ready(); i++ {
		if i > 500 {
			t.Fatal("engine not ready")
		}
		time.Sleep(20 * time.Millisecond)
	}

	base := []string{"request", "--amqp-url", testURL(), "--exchange", exchange, "--timeout", "20s"}
	code, out, errOut := runCLI(t, append(base, "ana.lima", "--email", "ana.lima@example.org",
		"--fullname", "Ana Lima", "--reason", "thesis")...)
	if code != 0 || !strings.Contains(out, "registration of ana.lima succeeded: uid 10001, gid 10001") ||
		!strings.Contains(out, `"queuename": "ana%2Elima"`) {
		t.Fatalf("success: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = runCLI(t, append(base, "--json", "alima", "--email", "ana.lima@example.org",
		"--fullname", "A Lima")...)
	if code != 1 || !strings.Contains(out, `"errmsg":["request: Email already exists"]`) ||
		!strings.Contains(out, `"success":false`) {
		t.Fatalf("duplicate: exit %d\n%s", code, out)
	}

	// A queue bound to request.* that nobody consumes: no answer comes.
	ch, _ := conn.Channel()
	silent := "RegUsr-silent-" + id
	ch.ExchangeDeclare(silent, "topic", true, false, false, false, nil)
	defer ch.ExchangeDelete(silent, false, false)
	q, _ := ch.QueueDeclare("", false, true, true, false, nil)
	ch.QueueBind(q.Name, "request.*", silent, false, nil)
	code, _, errOut = runCLI(t, "request", "--amqp-url", testURL(), "--exchange", silent, "--timeout", "300ms",
		"bob", "--email", "bob@example.org", "--fullname", "Bob")
	if code != 2 || !strings.Contains(errOut, "no completed.bob within 300ms") {
		t.Fatalf("timeout: exit %d, %s", code, errOut)
	}

	// A mistyped exchange: say so, and leave no stray exchange behind.
	missing := "RegUsr-missing-" + id
	code, _, errOut = runCLI(t, "request", "--amqp-url", testURL(), "--exchange", missing, "bob",
		"--email", "bob@example.org", "--fullname", "Bob")
	if code != 1 || !strings.Contains(errOut, "exchange "+missing+" does not exist") {
		t.Fatalf("missing exchange: exit %d, %s", code, errOut)
	}
	probe, _ := conn.Channel()
	if err := probe.ExchangeDeclarePassive(missing, "topic", true, false, false, false, nil); err == nil {
		probe.ExchangeDelete(missing, false, false)
		t.Fatal("regflow request declared the mistyped exchange")
	}

	// A username starting with a dash is the pipeline's to refuse, not a flag.
	code, out, _ = runCLI(t, append(base, "-rf", "--email", "rf@example.org", "--fullname", "R F")...)
	if code != 1 || !strings.Contains(out, "must begin with a lowercase letter or underscore, not '-'") {
		t.Fatalf("-rf: exit %d\n%s", code, out)
	}

	// Nothing bound at all: say so at once instead of waiting.
	nobody := "RegUsr-nobody-" + id
	ch.ExchangeDeclare(nobody, "topic", true, false, false, false, nil)
	defer ch.ExchangeDelete(nobody, false, false)
	code, _, errOut = runCLI(t, "request", "--amqp-url", testURL(), "--exchange", nobody, "--timeout", "10s",
		"bob", "--email", "bob@example.org", "--fullname", "Bob")
	if code != 1 || !strings.Contains(errOut, "no queue is bound to request.bob") {
		t.Fatalf("unbound: exit %d, %s", code, errOut)
	}
}

//go:build integration

package actions_test

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"regflow/engine"
)

// needRabbitMQ connects to the test broker, failing the test when it is
// not reachable: the integration tests are never skipped.
func needRabbitMQ(t *testing.T) *amqp.Connection {
	t.Helper()
	url := envOr("REGFLOW_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
	conn, err := engine.Dial(url, "actions-test")
	if err != nil {
		t.Fatalf("RabbitMQ is not reachable: %v\nThe integration tests need it: run `make test`, "+
			"which starts RabbitMQ and Mailpit, or `scripts/services.sh start rabbitmq`.", err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestPublishRabbitMQ publishes through a real broker: the message arrives
// persistent, with the step's message id, on the rendered routing key; a
// missing exchange (C16) fails only its own step.
func TestPublishRabbitMQ(t *testing.T) {
	conn := needRabbitMQ(t)
	exchange := "regflow-test-" + token(t)
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if err := ch.ExchangeDeclare(exchange, "topic", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c, err := conn.Channel(); err == nil {
			c.ExchangeDelete(exchange, false, false)
			c.Close()
		}
	})
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, "completed.*", exchange, false, nil); err != nil {
		t.Fatal(err)
	}
	deliveries, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}

	pub := engine.NewBrokerPublisher(conn, slog.New(slog.DiscardHandler))
	t.Cleanup(pub.Close)
	e := newEnv(t, fmt.Sprintf(`
pipeline "reply" {
  on = ["request.*"]

  publish "typo" {
    exchange    = %q
    routing_key = "completed.{{ msg.queuename }}"
    on_error    = "continue"
  }

  publish "done" {
    exchange    = %q
    routing_key = "completed.{{ msg.queuename }}"
    fields      = ["username", "queuename", "uid"]
  }
}
`, exchange+"-missing", exchange), func(s *engine.Services) { s.Publisher = pub })

	res := e.run("reply", "request.ana%2Elima", request("ana.lima", "uid", 10001))
	typo := stepOf(t, res, "typo")
	if typo.Status != engine.StepFailed {
		t.Fatalf("publishing to a missing exchange: status %s; want failed", typo.Status)
	}
	if want := fmt.Sprintf("publish completed.ana%%2Elima: exchange %s-missing not found in vhost /", exchange); typo.Error != want {
		t.Errorf("missing exchange: error %q, want %q", typo.Error, want)
	}
	if got := res.Errmsg(); len(got) != 1 || got[0] != "typo: "+typo.Error {
		t.Errorf("errmsg %q; want only the typo step's error", got)
	}
	st := wantOK(t, res, "done")

	select {
	case d := <-deliveries:
		if d.RoutingKey != "completed.ana%2Elima" || d.Exchange != exchange {
			t.Errorf("delivered on %s %s", d.Exchange, d.RoutingKey)
		}
		if d.DeliveryMode != amqp.Persistent {
			t.Errorf("delivery mode %d; want persistent", d.DeliveryMode)
		}
		if d.MessageId != st.Published[0].MessageID {
			t.Errorf("message id %q; want %q", d.MessageId, st.Published[0].MessageID)
		}
		if d.ContentType != "application/json" {
			t.Errorf("content type %q", d.ContentType)
		}
		sameJSON(t, "body", decodeJSON(t, d.Body),
			map[string]any{"username": "ana.lima", "queuename": "ana%2Elima", "uid": 10001})
	case <-time.After(5 * time.Second):
		t.Fatal("nothing delivered within 5s")
	}
	select {
	case d := <-deliveries:
		t.Errorf("a second message was delivered: %s %s", d.RoutingKey, d.Body)
	case <-time.After(200 * time.Millisecond):
	}
}

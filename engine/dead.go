package engine

import (
	"context"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// DeadLetter is a message in the dead-letter queue, with the headers the
// engine put on it.
type DeadLetter struct {
	ID         string
	Time       string
	Pipeline   string
	Step       string
	Queue      string // the pipeline's queue, where a replay goes
	RoutingKey string
	Reason     string
	Body       []byte
}

func deadLetterOf(d amqp.Delivery) DeadLetter {
	h := func(k string) string {
		if v, ok := d.Headers[k]; ok {
			return fmt.Sprint(v)
		}
		return ""
	}
	return DeadLetter{ID: d.MessageId, Time: h(HeaderTime), Pipeline: h(HeaderPipeline), Step: h(HeaderStep),
		Queue: h(HeaderQueue), RoutingKey: h(HeaderRoutingKey), Reason: h(HeaderReason), Body: d.Body}
}

// browse fetches every message of the dead-letter queue without
// acknowledging it, calls fn for each, and acknowledges those for which fn
// returns true. Closing the channel puts the others back.
func browse(conn *amqp.Connection, cfg *Config, fn func(ch *amqp.Channel, d amqp.Delivery) (bool, error)) error {
	ch, err := conn.Channel()
	if err != nil {
		return brokerErr("open channel", err)
	}
	defer ch.Close()
	queue := cfg.Broker.QueuePrefix + cfg.Broker.DeadLetter
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		return declareErr("queue "+queue, err)
	}
	for i := 0; i < q.Messages; i++ {
		d, ok, err := ch.Get(queue, false)
		if err != nil {
			return brokerErr("get", err)
		}
		if !ok {
			break
		}
		done, err := fn(ch, d)
		if err != nil {
			return err
		}
		if done {
			if err := d.Ack(false); err != nil {
				return brokerErr("ack", err)
			}
		}
	}
	return nil
}

// ListDead returns the messages in the dead-letter queue, leaving them
// there.
func ListDead(conn *amqp.Connection, cfg *Config) ([]DeadLetter, error) {
	var out []DeadLetter
	err := browse(conn, cfg, func(_ *amqp.Channel, d amqp.Delivery) (bool, error) {
		out = append(out, deadLetterOf(d))
		return false, nil
	})
	return out, err
}

// ReplayDead puts dead letters back on the queue of the pipeline that
// gave them up: those whose id is in ids, or all of them. Failed steps
// are forgotten from the journal first, so the replay tries them again
// while steps that succeeded replay their recorded results. It returns the
// ids it replayed.
func ReplayDead(ctx context.Context, conn *amqp.Connection, cfg *Config, store *Store, ids []string, all bool) ([]string, error) {
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	pub := NewBrokerPublisher(conn, nil)
	defer pub.Close()
	var replayed []string
	err := browse(conn, cfg, func(_ *amqp.Channel, d amqp.Delivery) (bool, error) {
		dl := deadLetterOf(d)
		if !all && !want[dl.ID] {
			return false, nil
		}
		if dl.Queue == "" {
			return false, fmt.Errorf("dead letter %s has no %s header; it was not dead-lettered by regflow",
				dl.ID, HeaderQueue)
		}
		if store != nil && dl.Pipeline != "" {
			if err := store.JournalForgetFailed(ctx, dl.Pipeline+"/"+dl.ID); err != nil {
				return false, err
			}
		}
		// The default exchange routes by queue name: only the pipeline
		// that gave the message up sees it again.
		err := pub.Publish(ctx, &Outgoing{Exchange: "", RoutingKey: dl.Queue, MessageID: dl.ID,
			Correlation: d.CorrelationId, Body: dl.Body,
			Headers: map[string]any{"x-regflow-replayed": time.Now().UTC().Format(time.RFC3339)}})
		if err != nil {
			return false, fmt.Errorf("replay %s: %w", dl.ID, err)
		}
		replayed = append(replayed, dl.ID)
		return true, nil
	})
	if err == nil && !all {
		for _, id := range ids {
			if !contains(replayed, id) {
				return replayed, fmt.Errorf("no dead letter with id %s", id)
			}
		}
	}
	return replayed, err
}

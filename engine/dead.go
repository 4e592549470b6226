package engine

import (
	"context"
	"fmt"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// DeadLetter is a message in the dead-letter queue, with the headers the
// engine put on it.
type DeadLetter struct {
	ID         string `json:"id"`
	Time       string `json:"time"`
	Pipeline   string `json:"pipeline"`
	Step       string `json:"step"`
	Queue      string `json:"queue"` // the pipeline's queue, where a replay goes
	RoutingKey string `json:"routing_key"`
	Reason     string `json:"reason"`
	Body       []byte `json:"body"`
}

// Ref names one dead letter: the same message given up by two pipelines
// is two dead letters with one id.
func (d DeadLetter) Ref() string { return d.Pipeline + "/" + d.ID }

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
// gave them up: those named in refs (an id, or pipeline/id for one
// pipeline's copy), or all of them. Failed steps are forgotten from the
// journal first, so the replay tries them again while steps that
// succeeded replay their recorded results. The message keeps its routing
// key. A dead letter from a pipeline cfg does not have is left where it
// is. It returns the references it replayed.
func ReplayDead(ctx context.Context, conn *amqp.Connection, cfg *Config, store *Store, refs []string, all bool) ([]string, error) {
	want := map[string]bool{}
	for _, r := range refs {
		want[r] = true
	}
	queues := map[string]bool{}
	for _, p := range cfg.Pipelines {
		queues[p.Queue] = true
	}
	pub := NewBrokerPublisher(conn, nil)
	defer pub.Close()
	var replayed, foreign []string
	matched := map[string]bool{}
	err := browse(conn, cfg, func(_ *amqp.Channel, d amqp.Delivery) (bool, error) {
		dl := deadLetterOf(d)
		if !all && !want[dl.ID] && !want[dl.Ref()] {
			return false, nil
		}
		matched[dl.ID], matched[dl.Ref()] = true, true
		if dl.Queue == "" || !queues[dl.Queue] {
			foreign = append(foreign, dl.Ref())
			return false, nil
		}
		if store != nil && dl.Pipeline != "" {
			if err := store.JournalForgetFailed(ctx, dl.Pipeline+"/"+MessageIdentity(dl.ID, dl.RoutingKey, dl.Body)); err != nil {
				return false, err
			}
		}
		// The default exchange routes by queue name, so only the pipeline
		// that gave the message up sees it again; the header carries the
		// routing key it first had.
		err := pub.Publish(ctx, &Outgoing{Exchange: "", RoutingKey: dl.Queue, MessageID: dl.ID,
			Correlation: d.CorrelationId, Body: dl.Body,
			Headers: map[string]any{HeaderRoutingKey: dl.RoutingKey,
				HeaderReplayed: time.Now().UTC().Format(time.RFC3339)}})
		if err != nil {
			return false, fmt.Errorf("replay %s: %w", dl.Ref(), err)
		}
		replayed = append(replayed, dl.Ref())
		return true, nil
	})
	if err != nil {
		return replayed, err
	}
	if len(foreign) > 0 {
		return replayed, fmt.Errorf("not replayed, since no pipeline of this configuration reads its queue: %s",
			strings.Join(foreign, ", "))
	}
	for _, r := range refs {
		if !matched[r] {
			return replayed, fmt.Errorf("no dead letter %s", r)
		}
	}
	return replayed, nil
}

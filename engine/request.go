package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// ErrTimeout is returned by Request when no reply came in time.
var ErrTimeout = errors.New("no reply before the timeout")

// Request submits a registration the way the web form does and waits for
// its answer: it binds a private reply queue to completed.<q> before it
// publishes request.<q>, so the answer cannot be missed, and it matches the
// answer by correlation id, so another registration of the same name
// answering at the same time is not mistaken for this one.
func Request(ctx context.Context, url, exchange string, msg Message) (Message, error) {
	q, _ := msg["queuename"].(string)
	if err := CheckWord(q); err != nil {
		return nil, fmt.Errorf("queuename %s", err)
	}
	body, err := json.Marshal(msg)
	if err != nil {
		return nil, err
	}
	conn, err := Dial(url, "request")
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return nil, brokerErr("open channel", err)
	}
	// Only look: regflow run declares the exchange, and a mistyped name
	// must not leave a stray exchange behind.
	if err := ch.ExchangeDeclarePassive(exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return nil, Permanent(fmt.Errorf("exchange %s does not exist; is regflow run running? (it declares it)", exchange))
	}
	reply, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		return nil, brokerErr("declare reply queue", err)
	}
	if err := ch.QueueBind(reply.Name, "completed."+q, exchange, false, nil); err != nil {
		return nil, brokerErr("bind reply queue", err)
	}
	replies, err := ch.ConsumeWithContext(ctx, reply.Name, "", true, true, false, false, nil)
	if err != nil {
		return nil, brokerErr("consume replies", err)
	}

	corr := randomID()
	if err := publishOnce(ctx, conn, exchange, "request."+q, corr, body); err != nil {
		return nil, err
	}
	for {
		select {
		case d, ok := <-replies:
			if !ok {
				return nil, Unavailable(errors.New("the reply queue was closed"))
			}
			if d.CorrelationId != "" && d.CorrelationId != corr {
				continue
			}
			return DecodeMessage(d.Body)
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, ErrTimeout
			}
			return nil, ctx.Err()
		}
	}
}

// publishOnce publishes one message on its own confirm channel and reports
// a message that no queue took: regflow run has never declared its queues,
// or nothing binds the key.
func publishOnce(ctx context.Context, conn *amqp.Connection, exchange, key, id string, body []byte) error {
	ch, err := conn.Channel()
	if err != nil {
		return brokerErr("open channel", err)
	}
	defer ch.Close()
	if err := ch.Confirm(false); err != nil {
		return brokerErr("enable confirms", err)
	}
	// The broker sends basic.return before the confirmation, and the
	// client queues it before it processes the confirmation.
	returns := ch.NotifyReturn(make(chan amqp.Return, 1))
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, true, false, amqp.Publishing{
		ContentType: "application/json", DeliveryMode: amqp.Persistent, MessageId: id, CorrelationId: id,
		Timestamp: time.Now(), AppId: "regflow", Body: body})
	if err != nil {
		return brokerErr("publish", err)
	}
	ack, err := dc.WaitContext(ctx)
	if err != nil {
		return Transient(fmt.Errorf("publish %s: not confirmed: %w", key, err))
	}
	if !ack {
		return Transient(fmt.Errorf("publish %s: the broker refused the message", key))
	}
	select {
	case <-returns:
		return Permanent(fmt.Errorf("no queue is bound to %s on %s; is regflow run running with its pipelines?", key, exchange))
	default:
	}
	return nil
}

func randomID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// DefaultRequestTimeout is how long regflow request waits by default.
const DefaultRequestTimeout = 60 * time.Second

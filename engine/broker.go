package engine

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Dial opens a connection to the broker at url, named after this process
// so that operators can tell regflow's connections apart.
func Dial(url, name string) (*amqp.Connection, error) {
	if err := CheckAMQPURL(url); err != nil {
		return nil, Permanent(fmt.Errorf("broker URL: %w", err))
	}
	host, _ := os.Hostname()
	cfg := amqp.Config{
		Heartbeat: 10 * time.Second,
		Locale:    "en_US",
		Dial:      amqp.DefaultDial(10 * time.Second),
		Properties: amqp.Table{
			"connection_name": fmt.Sprintf("regflow %s %s pid %d", name, host, os.Getpid()),
		},
	}
	conn, err := amqp.DialConfig(url, cfg)
	if err != nil {
		return nil, brokerErr("connect to "+RedactURL(url), err)
	}
	return conn, nil
}

// CheckAMQPURL reports what makes raw unusable as a broker URL, without
// repeating the URL (and so its password) in the error: a syntax error,
// another scheme, or a TLS file that cannot be read.
func CheckAMQPURL(raw string) error {
	if strings.TrimSpace(raw) != raw {
		return errors.New("it has spaces around it")
	}
	u, err := amqp.ParseURI(raw)
	if err != nil {
		return redactURLError(err)
	}
	if u.Port < 1 || u.Port > 65535 {
		return fmt.Errorf("port %d is out of range", u.Port)
	}
	for param, file := range map[string]string{"cacertfile": u.CACertFile, "certfile": u.CertFile,
		"keyfile": u.KeyFile} {
		if file != "" && u.Scheme != "amqps" {
			return fmt.Errorf("%s is given, but only an amqps:// URL uses TLS", param)
		}
	}
	if u.CACertFile != "" {
		if _, err := LoadCAFile(u.CACertFile); err != nil {
			return fmt.Errorf("cacertfile: %w", err)
		}
	}
	switch {
	case u.CertFile != "" && u.KeyFile != "":
		if _, err := tls.LoadX509KeyPair(u.CertFile, u.KeyFile); err != nil {
			return fmt.Errorf("certfile and keyfile: %w", err)
		}
	case u.CertFile != "" || u.KeyFile != "":
		return errors.New("a client certificate needs both certfile and keyfile")
	}
	return nil
}

// brokerErr wraps an AMQP error and says whether a retry can help: a
// refused connection or a closed channel is an infrastructure failure,
// an access refusal or a missing exchange is permanent.
func brokerErr(op string, err error) error {
	var ae *amqp.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case amqp.NotFound, amqp.AccessRefused, amqp.PreconditionFailed, amqp.NotAllowed:
			return Permanent(fmt.Errorf("%s: %s", op, ae.Reason))
		}
		return Unavailable(fmt.Errorf("%s: %s", op, ae.Reason))
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, amqp.ErrClosed) {
		return Unavailable(fmt.Errorf("%s: %w", op, err))
	}
	return Unavailable(fmt.Errorf("%s: %w", op, err))
}

// BrokerPublisher publishes on one confirm-mode channel of a connection,
// shared by every handler. A publish waits for its own confirmation, so
// no goroutine has to drain a confirmation stream and publishing from
// inside a handler cannot deadlock against consuming. When the broker
// closes the channel (a publish to a missing exchange does that), the next
// publish opens a new one; publishes caught in the close are sent again
// with the same message id.
type BrokerPublisher struct {
	conn *amqp.Connection
	log  *slog.Logger

	mu  sync.Mutex
	cur *pubChannel // guarded by mu
}

// pubChannel is a confirm-mode channel and, once the broker closed it, why.
type pubChannel struct {
	ch     *amqp.Channel
	closed chan struct{} // closed when the channel is
	err    *amqp.Error   // the broker's reason; set before closed is closed
}

// NewBrokerPublisher returns a publisher on conn.
func NewBrokerPublisher(conn *amqp.Connection, log *slog.Logger) *BrokerPublisher {
	return &BrokerPublisher{conn: conn, log: log}
}

func (p *BrokerPublisher) channel() (*pubChannel, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur != nil && !p.cur.ch.IsClosed() {
		return p.cur, nil
	}
	ch, err := p.conn.Channel()
	if err != nil {
		return nil, brokerErr("open publish channel", err)
	}
	if err := ch.Confirm(false); err != nil {
		ch.Close()
		return nil, brokerErr("enable confirms", err)
	}
	returns := ch.NotifyReturn(make(chan amqp.Return, 16))
	go func() {
		for r := range returns {
			if p.log == nil {
				continue
			}
			p.log.Warn("message unroutable: no queue is bound to its routing key",
				"routing_key", r.RoutingKey, "exchange", r.Exchange, "message_id", r.MessageId)
		}
	}()
	pc := &pubChannel{ch: ch, closed: make(chan struct{})}
	notify := ch.NotifyClose(make(chan *amqp.Error, 1))
	go func() {
		pc.err = <-notify
		close(pc.closed)
	}()
	p.cur = pc
	return pc, nil
}

// closeReason returns why the broker closed the channel, waiting briefly
// for its close frame to arrive; nil when it did not say.
func (pc *pubChannel) closeReason() *amqp.Error {
	select {
	case <-pc.closed:
		return pc.err
	case <-time.After(500 * time.Millisecond):
		return nil
	}
}

// Publish implements Publisher.
func (p *BrokerPublisher) Publish(ctx context.Context, m *Outgoing) error {
	msg := amqp.Publishing{
		ContentType:   "application/json",
		DeliveryMode:  amqp.Persistent,
		MessageId:     m.MessageID,
		CorrelationId: m.Correlation,
		Timestamp:     time.Now(),
		AppId:         "regflow",
		Headers:       amqp.Table(m.Headers),
		Body:          m.Body,
	}
	var last error
	for try := 0; try < 3; try++ {
		pc, err := p.channel()
		if err != nil {
			return err
		}
		dc, err := pc.ch.PublishWithDeferredConfirmWithContext(ctx, m.Exchange, m.RoutingKey, true, false, msg)
		if err != nil {
			if pc.ch.IsClosed() {
				last = brokerErr("publish", err)
				continue
			}
			return brokerErr("publish", err)
		}
		ack, err := dc.WaitContext(ctx)
		if err != nil {
			return Transient(fmt.Errorf("publish %s: not confirmed: %w", m.RoutingKey, err))
		}
		if ack {
			return nil
		}
		if !pc.ch.IsClosed() {
			return Transient(fmt.Errorf("publish %s: the broker refused the message (nack)", m.RoutingKey))
		}
		reason := pc.closeReason()
		if reason != nil && reason.Code == amqp.NotFound && strings.Contains(reason.Reason, "'"+m.Exchange+"'") {
			return Permanent(fmt.Errorf("publish %s: %s", m.RoutingKey, notFoundText(reason.Reason)))
		}
		last = Unavailable(fmt.Errorf("publish %s: channel closed before the broker confirmed", m.RoutingKey))
	}
	return last
}

// notFoundText rewrites "NOT_FOUND - no exchange 'X' in vhost '/'" as
// "exchange X not found in vhost /".
func notFoundText(reason string) string {
	r := strings.TrimPrefix(reason, "NOT_FOUND - ")
	var what, name, vhost string
	if n, _ := fmt.Sscanf(strings.ReplaceAll(r, "'", " "), "no %s %s in vhost %s", &what, &name, &vhost); n == 3 {
		return fmt.Sprintf("%s %s not found in vhost %s", what, name, vhost)
	}
	return r
}

// Close closes the publish channel.
func (p *BrokerPublisher) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur != nil {
		p.cur.ch.Close()
	}
}

// queueArgs are the arguments regflow declares a pipeline's queue with.
func queueArgs(p *Pipeline) amqp.Table {
	args := amqp.Table{}
	if p.SingleActiveConsumer {
		args["x-single-active-consumer"] = true
	}
	return args
}

// DeclareTopology declares the exchange, the dead-letter exchange and
// queue, and every pipeline's queue with its bindings, then checks that
// every exchange a publish step names exists. Each declaration is its own
// channel, so that one refusal does not hide the others.
func DeclareTopology(conn *amqp.Connection, cfg *Config) error {
	ch, err := conn.Channel()
	if err != nil {
		return brokerErr("open channel", err)
	}
	defer ch.Close()
	b := cfg.Broker
	if err := ch.ExchangeDeclare(b.Exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return declareErr("exchange "+b.Exchange, err)
	}
	if err := ch.ExchangeDeclare(b.DeadLetter, amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
		return declareErr("exchange "+b.DeadLetter, err)
	}
	dlq := b.QueuePrefix + b.DeadLetter
	if _, err := ch.QueueDeclare(dlq, true, false, false, false, nil); err != nil {
		return declareErr("queue "+dlq, err)
	}
	if err := ch.QueueBind(dlq, "", b.DeadLetter, false, nil); err != nil {
		return declareErr("binding of "+dlq, err)
	}
	for _, p := range cfg.Pipelines {
		if _, err := ch.QueueDeclare(p.Queue, true, false, false, false, queueArgs(p)); err != nil {
			return declareErr("queue "+p.Queue+" of pipeline "+p.Name, err)
		}
		for _, pat := range p.On {
			if err := ch.QueueBind(p.Queue, pat, b.Exchange, false, nil); err != nil {
				return declareErr("binding "+pat+" of queue "+p.Queue, err)
			}
		}
	}
	for _, ex := range publishedExchanges(cfg) {
		if ex == b.Exchange {
			continue
		}
		pch, err := conn.Channel()
		if err != nil {
			return brokerErr("open channel", err)
		}
		err = pch.ExchangeDeclarePassive(ex, amqp.ExchangeTopic, true, false, false, false, nil)
		if err != nil {
			return declareErr("exchange "+ex+" named by a publish step", err)
		}
		pch.Close()
	}
	return nil
}

// publishedExchanges lists the exchanges publish steps name.
func publishedExchanges(cfg *Config) []string {
	seen := map[string]bool{}
	var out []string
	for _, p := range cfg.Pipelines {
		for _, s := range append(append([]*Step{}, p.Steps...), p.OnFailure...) {
			if ex, ok := s.Impl.(interface{ Exchange() string }); ok && !seen[ex.Exchange()] {
				seen[ex.Exchange()] = true
				out = append(out, ex.Exchange())
			}
		}
	}
	return out
}

// declareErr explains a refused declaration in one line: a queue that
// exists with other arguments names the difference, a missing exchange
// says so plainly.
func declareErr(what string, err error) error {
	var ae *amqp.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case amqp.PreconditionFailed:
			return Permanent(fmt.Errorf("declare %s: it already exists with different settings: %s; "+
				"delete it or make the configuration match", what,
				strings.TrimPrefix(ae.Reason, "PRECONDITION_FAILED - ")))
		case amqp.NotFound:
			return Permanent(fmt.Errorf("declare %s: %s", what, notFoundText(ae.Reason)))
		}
	}
	return brokerErr("declare "+what, err)
}

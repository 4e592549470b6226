package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Engine consumes every pipeline's queue on a RabbitMQ broker and runs the
// chains. It acknowledges a delivery only after the chain finished and
// everything it published was confirmed; it reconnects with backoff when
// the connection drops, declaring its topology again.
type Engine struct {
	cfg    *Config
	url    string
	runner *Runner
	log    *slog.Logger

	// DrainTimeout bounds how long a shutdown waits for messages in
	// flight; those still running after it are left for redelivery.
	DrainTimeout time.Duration

	// TopologyInterval is how often a session declares its exchanges,
	// queues and bindings again, so that an exchange deleted and
	// re-created by hand gets its bindings back.
	TopologyInterval time.Duration

	pub          sessionPublisher
	redeliveries redeliveryLog
	ready        atomic.Bool
	wasReady     atomic.Bool // consumed at least once since Run began
	inFlight     atomic.Int64
	catchAll     map[string]bool // pipelines bound to "#" alone
}

// NewEngine returns an engine for cfg on the broker at url. svc supplies
// store, mailer and command runner; its Publisher is set by the engine.
func NewEngine(cfg *Config, url string, svc *Services) *Engine {
	e := &Engine{cfg: cfg, url: url, DrainTimeout: 30 * time.Second, TopologyInterval: 30 * time.Second,
		catchAll: map[string]bool{}}
	svc.Publisher = &e.pub
	e.runner = NewRunner(cfg, svc)
	e.log = svc.Logger
	for _, p := range cfg.Pipelines {
		e.catchAll[p.Name] = p.catchAll()
	}
	return e
}

// Runner returns the engine's chain runner.
func (e *Engine) Runner() *Runner { return e.runner }

// Ready reports whether the engine is connected and consuming.
func (e *Engine) Ready() bool { return e.ready.Load() }

// sessionPublisher forwards to the publisher of the current connection.
type sessionPublisher struct {
	cur atomic.Pointer[BrokerPublisher]
}

func (s *sessionPublisher) Publish(ctx context.Context, m *Outgoing) error {
	p := s.cur.Load()
	if p == nil {
		return Unavailable(errors.New("publish: not connected to the broker"))
	}
	return p.Publish(ctx, m)
}

// Run consumes until ctx is cancelled, then stops consuming, lets the
// messages in flight finish (up to DrainTimeout) and returns nil. It
// returns an error only for a problem no reconnection can mend, such as a
// queue that exists with other arguments or refused credentials.
func (e *Engine) Run(ctx context.Context) error {
	if len(e.cfg.Trackers) > 0 {
		d := newDeadlines(ctx, e.runner)
		defer d.stop()
		go e.watchDeadlines(ctx, d)
	}
	delay := 500 * time.Millisecond
	for {
		started := time.Now()
		err := e.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrPermanent) {
			return err
		}
		if time.Since(started) > time.Minute {
			delay = 500 * time.Millisecond
		}
		what := "broker connection lost; reconnecting"
		if !e.wasReady.Load() {
			what = "cannot reach the broker yet; retrying"
		}
		e.log.Warn(what, "error", err.Error(), "retry_in", delay.String())
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil
		}
		if delay *= 2; delay > 30*time.Second {
			delay = 30 * time.Second
		}
	}
}

// watchDeadlines picks up pending registrations once the engine first
// consumes, and every 30 seconds after, for those opened before a restart
// or by another process. Waiting for the first session matters: a
// deadline that passed while regflow was down must not answer before the
// answers queued meanwhile were read.
func (e *Engine) watchDeadlines(ctx context.Context, d *deadlines) {
	for !e.Ready() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	grace := overdueGrace
	for {
		if err := d.rescan(grace); err != nil && ctx.Err() == nil {
			e.log.Warn("reading pending registrations", "error", err.Error())
		}
		grace = 0
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// overdueGrace is how long a registration whose deadline passed while
// regflow was down waits after startup: time to read the queued answers.
const overdueGrace = 5 * time.Second

type consumer struct {
	p   *Pipeline
	ch  *amqp.Channel
	tag string
}

// session runs one connection from dial to loss or shutdown.
func (e *Engine) session(ctx context.Context) error {
	conn, err := Dial(e.url, "run")
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := DeclareTopology(conn, e.cfg); err != nil {
		return err
	}
	pub := NewBrokerPublisher(conn, e.log)
	e.pub.cur.Store(pub)
	defer func() {
		e.pub.cur.CompareAndSwap(pub, nil)
		pub.Close()
	}()
	connClosed := conn.NotifyClose(make(chan *amqp.Error, 1))

	// Handlers run on workCtx, which outlives ctx: a shutdown lets them
	// finish. It is cancelled when the connection is lost, since nothing
	// they do could be acknowledged any more.
	workCtx, cancelWork := context.WithCancel(context.Background())
	defer cancelWork()
	var loops, handlers sync.WaitGroup
	lost := make(chan error, len(e.cfg.Pipelines))
	var draining atomic.Bool
	host, _ := os.Hostname()

	var consumers []consumer
	for _, p := range e.cfg.Pipelines {
		ch, err := conn.Channel()
		if err != nil {
			return brokerErr("open channel", err)
		}
		if err := ch.Qos(p.Prefetch, 0, false); err != nil {
			return brokerErr("set prefetch", err)
		}
		tag := fmt.Sprintf("regflow-%s-%d-%s", host, os.Getpid(), p.Name)
		deliveries, err := ch.ConsumeWithContext(workCtx, p.Queue, tag, false, false, false, false, nil)
		if err != nil {
			return brokerErr("consume "+p.Queue, err)
		}
		chClosed := ch.NotifyClose(make(chan *amqp.Error, 1))
		consumers = append(consumers, consumer{p: p, ch: ch, tag: tag})
		loops.Add(1)
		go func(p *Pipeline, ch *amqp.Channel) {
			defer loops.Done()
			for d := range deliveries {
				handlers.Add(1)
				e.inFlight.Add(1)
				go func(d amqp.Delivery) {
					defer handlers.Done()
					defer e.inFlight.Add(-1)
					e.handle(workCtx, p, d)
				}(d)
			}
			select {
			case err := <-chClosed:
				if err != nil {
					lost <- fmt.Errorf("channel of pipeline %s closed: %s", p.Name, err.Reason)
				}
			default:
				// The deliveries ended with the channel open: the broker
				// cancelled the consumer, as it does when the queue is
				// deleted. A new session declares the queue again.
				if !draining.Load() && workCtx.Err() == nil {
					lost <- fmt.Errorf("the broker cancelled the consumer of pipeline %s (was queue %s deleted?)",
						p.Name, p.Queue)
				}
			}
		}(p, ch)
	}
	e.ready.Store(true)
	e.wasReady.Store(true)
	defer e.ready.Store(false)
	e.log.Info("consuming", "pipelines", len(consumers), "exchange", e.cfg.Broker.Exchange,
		"broker", RedactURL(e.url))

	var tick <-chan time.Time
	if e.TopologyInterval > 0 {
		t := time.NewTicker(e.TopologyInterval)
		defer t.Stop()
		tick = t.C
	}
	storeTick := time.NewTicker(2 * time.Second)
	defer storeTick.Stop()
	var topoErr string
	for {
		select {
		case <-tick:
			topoErr = e.redeclare(conn, topoErr)
		case <-storeTick.C:
			if err := e.runner.Svc.Store.Gone(); err != nil {
				// Going on would write into a file nobody will read again.
				e.ready.Store(false)
				e.settle(&handlers, cancelWork)
				return Permanent(err)
			}
		case <-ctx.Done():
			draining.Store(true)
			e.ready.Store(false)
			e.drain(consumers, &loops, &handlers, cancelWork)
			return nil
		case amqpErr := <-connClosed:
			e.ready.Store(false)
			e.settle(&handlers, cancelWork)
			if amqpErr == nil {
				return Unavailable(errors.New("connection closed"))
			}
			return Unavailable(fmt.Errorf("connection closed: %s", amqpErr.Reason))
		case err := <-lost:
			e.ready.Store(false)
			e.settle(&handlers, cancelWork)
			return Unavailable(err)
		}
	}
}

// drain stops consuming and lets the messages in flight finish, up to
// DrainTimeout; those still running then are cancelled and left for
// redelivery.
func (e *Engine) drain(consumers []consumer, loops, handlers *sync.WaitGroup, cancelWork context.CancelFunc) {
	e.log.Info("draining", "in_flight", e.inFlight.Load())
	for _, c := range consumers {
		if err := c.ch.Cancel(c.tag, false); err != nil {
			e.log.Warn("cancel consumer", "pipeline", c.p.Name, "error", err.Error())
		}
	}
	loops.Wait()
	done := make(chan struct{})
	go func() { handlers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(e.DrainTimeout):
		e.log.Warn("drain timed out; unfinished messages will be redelivered",
			"in_flight", e.inFlight.Load())
		cancelWork()
		<-done
	}
	for _, c := range consumers {
		c.ch.Close()
	}
	e.log.Info("stopped")
}

// redeclare declares the topology again on a live session: an exchange
// that was deleted comes back with its bindings. It logs a repair, and a
// failure once until it changes; it returns the failure, "" for none.
func (e *Engine) redeclare(conn *amqp.Connection, lastErr string) string {
	missing := false
	if ch, err := conn.Channel(); err == nil {
		var ae *amqp.Error
		err := ch.ExchangeDeclarePassive(e.cfg.Broker.Exchange, amqp.ExchangeTopic, true, false, false, false, nil)
		missing = errors.As(err, &ae) && ae.Code == amqp.NotFound
		if err == nil {
			ch.Close()
		}
	}
	if err := DeclareTopology(conn, e.cfg); err != nil {
		if err.Error() != lastErr {
			e.log.Warn("declaring the topology again failed", "error", err.Error())
		}
		return err.Error()
	}
	if missing {
		e.log.Warn("the exchange was missing; declared it again with the queues' bindings",
			"exchange", e.cfg.Broker.Exchange)
	}
	return ""
}

// settle lets the handlers of a lost connection finish what they are
// doing, so that no side effect is cut off half-way; their publishing
// fails and nothing is acknowledged, so the broker delivers the messages
// again and the journal replays what was done. Handlers still running
// after DrainTimeout are cancelled.
func (e *Engine) settle(handlers *sync.WaitGroup, cancel context.CancelFunc) {
	done := make(chan struct{})
	go func() { handlers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(e.DrainTimeout):
		cancel()
		<-done
	}
}

// handle runs one delivery and settles it.
func (e *Engine) handle(ctx context.Context, p *Pipeline, d amqp.Delivery) {
	key := d.RoutingKey
	if rk, ok := d.Headers[HeaderRoutingKey].(string); ok && d.Exchange == "" {
		key = rk // a dead letter put back by regflow dead replay
	}
	log := e.log.With("pipeline", p.Name, "routing_key", key)
	if d.Redelivered {
		e.redeliveries.note(e.log, p.Name)
	}
	if e.catchAll[p.Name] && d.Exchange != "" {
		e.warnUnconsumed(p, d.RoutingKey)
	}
	res, err := e.runner.Handle(ctx, p, &Delivery{
		RoutingKey: key, MessageID: d.MessageId, Correlation: d.CorrelationId, Body: d.Body,
		Redelivered: d.Redelivered, Hops: headerInt(d.Headers[HeaderHops]), Origin: headerString(d.Headers[HeaderOrigin])})
	log = log.With("message_id", res.MessageID)
	if username, ok := res.Msg["username"].(string); ok {
		log = log.With("username", username)
	}
	if err != nil {
		e.release(ctx, log, d, err)
		return
	}
	switch {
	case res.DeadLetter != "":
		if err := e.deadLetter(ctx, p, d, res); err != nil {
			e.release(ctx, log, d, err)
			return
		}
		log.Error("message dead-lettered", "reason", res.DeadLetter, "queue", e.cfg.Broker.QueuePrefix+e.cfg.Broker.DeadLetter)
	case res.Failed:
		log.Info("chain failed", "errmsg", strings.Join(res.Errmsg(), "; "))
	default:
		var failed []string
		for _, s := range res.Steps {
			if s.Status == StepFailed && !s.Replayed {
				failed = append(failed, s.Step)
			}
		}
		if len(failed) > 0 {
			log.Info("step failed; the chain went on (on_error = \"continue\")", "steps", strings.Join(failed, ","),
				"errmsg", strings.Join(res.Errmsg(), "; "))
		}
	}
	if err := d.Ack(false); err != nil {
		log.Warn("ack failed; the message will be redelivered and replayed from the journal", "error", err.Error())
	}
}

// headerString reads a text header; anything else counts as absent.
func headerString(v any) string {
	s, _ := v.(string)
	return s
}

// headerInt reads a whole-number header, as any AMQP client may encode
// it; a negative number counts as 0.
func headerInt(v any) int {
	return max(0, headerNumber(v))
}

func headerNumber(v any) int {
	switch n := v.(type) {
	case int8:
		return int(n)
	case int16:
		return int(n)
	case int32:
		return int(n)
	case int64:
		return int(n)
	case uint8:
		return int(n)
	case uint16:
		return int(n)
	case uint32:
		return int(n)
	case int:
		return n
	}
	return 0
}

// release gives a delivery back to the broker after an infrastructure
// failure. While the channel lives, it is requeued after a pause, so a
// failing store is not hammered; when the channel is gone the broker
// requeues it by itself.
func (e *Engine) release(ctx context.Context, log *slog.Logger, d amqp.Delivery, err error) {
	log.Warn("message left for redelivery", "error", err.Error())
	if ctx.Err() != nil {
		return
	}
	select {
	case <-time.After(time.Second):
	case <-ctx.Done():
		return
	}
	if nerr := d.Nack(false, true); nerr != nil {
		log.Warn("requeue failed", "error", nerr.Error())
	}
}

// Dead-letter headers, so that `regflow dead list` and operators can tell
// where a message came from and why it stopped.
const (
	HeaderPipeline   = "x-regflow-pipeline"
	HeaderStep       = "x-regflow-step"
	HeaderReason     = "x-regflow-reason"
	HeaderRoutingKey = "x-regflow-routing-key"
	HeaderQueue      = "x-regflow-queue"
	HeaderTime       = "x-regflow-time"
	HeaderReplayed   = "x-regflow-replayed"

	// HeaderHops counts the pipelines a message passed through, one
	// publishing to the next; see MaxHops.
	HeaderHops = "x-regflow-hops"

	// HeaderOrigin names the request a message descends from, so that the
	// answer it leads to is matched to that request's registration.
	HeaderOrigin = "x-regflow-origin"
)

func (e *Engine) deadLetter(ctx context.Context, p *Pipeline, d amqp.Delivery, res *Result) error {
	step := ""
	for _, s := range res.Steps {
		if s.Status == StepFailed {
			step = s.Step
		}
	}
	out := &Outgoing{
		Exchange:   e.cfg.Broker.DeadLetter,
		RoutingKey: res.RoutingKey,
		MessageID:  cmp.Or(d.MessageId, res.MessageID), // the id its producer knows
		Body:       d.Body,
		Headers: map[string]any{
			HeaderPipeline:   p.Name,
			HeaderStep:       step,
			HeaderReason:     res.DeadLetter,
			HeaderRoutingKey: res.RoutingKey,
			HeaderQueue:      p.Queue,
			HeaderTime:       time.Now().UTC().Format(time.RFC3339),
		},
	}
	return e.pub.Publish(ctx, out)
}

// warnUnconsumed warns when a key reached only catch-all pipelines but
// looks meant for another: "request.ana.lima" when a pipeline binds
// "request.*" (the username's dot was not encoded).
func (e *Engine) warnUnconsumed(p *Pipeline, key string) {
	var near []string
	first := strings.SplitN(key, ".", 2)[0]
	for _, q := range e.cfg.Pipelines {
		if e.catchAll[q.Name] {
			if q.Matches(key) && q.Name < p.Name {
				return // another catch-all pipeline warns
			}
			continue
		}
		if q.Matches(key) {
			return
		}
		for _, pat := range q.On {
			if strings.SplitN(pat, ".", 2)[0] == first {
				near = append(near, fmt.Sprintf("%s binds %s", q.Name, pat))
			}
		}
	}
	if len(near) > 0 {
		e.log.Warn("no pipeline acted on this message, only catch-all ones saw it; "+
			"a dot in a name must be sent as %2E",
			"routing_key", key, "near", strings.Join(near, ", "))
	}
}

// redeliveryLog reports redelivered messages at most once per pipeline
// every ten seconds, with a count: after a crash every message in flight
// comes back, and a line each would bury everything else.
type redeliveryLog struct {
	mu   sync.Mutex
	last map[string]time.Time // guarded by mu
	seen map[string]int       // since the last line; guarded by mu
}

func (r *redeliveryLog) note(log *slog.Logger, pipeline string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil {
		r.last, r.seen = map[string]time.Time{}, map[string]int{}
	}
	r.seen[pipeline]++
	if time.Since(r.last[pipeline]) < 10*time.Second {
		return
	}
	log.Warn("redelivered messages; finished steps replay from the journal", "pipeline", pipeline,
		"count", r.seen[pipeline])
	r.last[pipeline], r.seen[pipeline] = time.Now(), 0
}

package engine

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
)

// Sandbox returns services whose every effect stays under dir: the store,
// the outbox (always used, even when an SMTP server is configured), git
// repositories and event logs; exec runs nothing and git never pushes.
// Publishing goes to pub.
func Sandbox(cfg *Config, dir string, pub Publisher, log *slog.Logger) (*Services, error) {
	svc := &Services{Root: dir, Sandbox: true, Publisher: pub, Logger: log, Commands: OSCommands{}}
	store, err := openScratchStore(svc.Path(cfg.Store.Path))
	if err != nil {
		return nil, err
	}
	svc.Store = store
	svc.Mailer = &Outbox{Dir: svc.Path(cfg.Mail.Outbox)}
	return svc, nil
}

// Hop is one message travelling through the simulated exchange and the
// pipelines it reached.
type Hop struct {
	Exchange   string
	RoutingKey string
	From       string // "pipeline/step" that published it; "" for the input
	Body       []byte
	Results    []*Result // one per pipeline whose patterns match
	Readers    []string  // consumer blocks whose patterns match
	Acted      bool      // a pipeline other than catch-all ones matched
}

// Trace is what a simulation did, hop by hop in the order messages were
// published.
type Trace struct {
	Hops []*Hop

	near func(key string) []string // bindings that share the key's first word
}

// DeadLetters counts the results that would have been dead-lettered.
func (t *Trace) DeadLetters() int {
	n := 0
	for _, h := range t.Hops {
		for _, r := range h.Results {
			if r.DeadLetter != "" {
				n++
			}
		}
	}
	return n
}

// Simulator routes messages through pipelines in-process, with the same
// topic matching as RabbitMQ, following what each pipeline publishes.
type Simulator struct {
	cfg    *Config
	runner *Runner
	pub    *memPublisher

	// MaxHops bounds a run, so that a pipeline that publishes to a key it
	// consumes itself cannot loop forever.
	MaxHops int
}

// NewSimulator returns a simulator over cfg. svc.Publisher is replaced by
// the simulator's own.
func NewSimulator(cfg *Config, svc *Services) *Simulator {
	pub := &memPublisher{sent: map[string]*Outgoing{}}
	svc.Publisher = pub
	return &Simulator{cfg: cfg, runner: NewRunner(cfg, svc), pub: pub, MaxHops: 100}
}

// Stub replaces steps, by "pipeline/step", with canned results.
func (s *Simulator) Stub(stubs map[string]*Stub) { s.runner.Stubs = stubs }

// StubActions replaces every step of the named actions with one that does
// nothing and succeeds: what is left is the engine's own cost.
func (s *Simulator) StubActions(actions ...string) {
	stubs := map[string]*Stub{}
	for _, p := range s.cfg.Pipelines {
		for _, st := range append(append([]*Step{}, p.Steps...), p.OnFailure...) {
			if slices.Contains(actions, st.Action) {
				stubs[p.Name+"/"+st.Name] = &Stub{}
			}
		}
	}
	s.Stub(stubs)
}

// memPublisher keeps published messages until the simulator routes them.
type memPublisher struct {
	mu   sync.Mutex
	sent map[string]*Outgoing // by message id
}

func (m *memPublisher) Publish(ctx context.Context, o *Outgoing) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sent[o.MessageID] = o
	return nil
}

// take removes and returns the message published with id.
func (m *memPublisher) take(id string) *Outgoing {
	m.mu.Lock()
	defer m.mu.Unlock()
	o := m.sent[id]
	delete(m.sent, id)
	if o == nil {
		return &Outgoing{MessageID: id}
	}
	return o
}

// Run publishes body on key and runs every pipeline it reaches, then every
// pipeline the published messages reach, breadth first.
func (s *Simulator) Run(ctx context.Context, key string, body []byte, messageID string) (*Trace, error) {
	t := &Trace{near: s.near}
	queue := []*Hop{{Exchange: s.cfg.Broker.Exchange, RoutingKey: key, Body: body}}
	ids := []string{messageID}
	origins := []string{""}
	for len(queue) > 0 {
		if len(t.Hops) >= s.MaxHops {
			return t, fmt.Errorf("stopped after %d hops; a pipeline may publish to a key it consumes", s.MaxHops)
		}
		hop, id, origin := queue[0], ids[0], origins[0]
		queue, ids, origins = queue[1:], ids[1:], origins[1:]
		t.Hops = append(t.Hops, hop)
		if hop.Exchange != s.cfg.Broker.Exchange {
			continue // another exchange: outside regflow's pipelines
		}
		for _, c := range s.cfg.Consumers {
			if matchesAny(c.On, hop.RoutingKey) {
				hop.Readers = append(hop.Readers, c.Name)
			}
		}
		for _, p := range s.cfg.Pipelines {
			if !p.Matches(hop.RoutingKey) {
				continue
			}
			hop.Acted = hop.Acted || !p.catchAll()
			res, err := s.runner.Handle(ctx, p, &Delivery{RoutingKey: hop.RoutingKey, MessageID: id, Body: hop.Body,
				Origin: origin})
			if err != nil {
				return t, fmt.Errorf("pipeline %s: %w", p.Name, err)
			}
			hop.Results = append(hop.Results, res)
			for _, sr := range res.Steps {
				for _, pb := range sr.Published {
					o := s.pub.take(pb.MessageID)
					queue = append(queue, &Hop{Exchange: pb.Exchange, RoutingKey: pb.RoutingKey,
						From: p.Name + "/" + sr.Step, Body: o.Body})
					ids = append(ids, pb.MessageID)
					origins = append(origins, headerString(o.Headers[HeaderOrigin]))
				}
			}
		}
	}
	return t, nil
}

// near lists the bindings, catch-all ones aside, whose first word is the
// key's, when none of them matches the key.
func (s *Simulator) near(key string) []string {
	first := strings.SplitN(key, ".", 2)[0]
	var out []string
	for _, p := range s.cfg.Pipelines {
		if p.catchAll() {
			continue
		}
		if p.Matches(key) {
			return nil
		}
		for _, pat := range p.On {
			if strings.SplitN(pat, ".", 2)[0] == first {
				out = append(out, p.Name+" binds "+pat)
			}
		}
	}
	return out
}

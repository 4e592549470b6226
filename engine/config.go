package engine

import (
	"time"

	"github.com/hashicorp/hcl/v2"
)

// Config is a loaded and checked set of pipeline files.
type Config struct {
	Broker    BrokerConfig
	Store     StoreConfig
	Mail      MailConfig
	Message   Schema // declared fields plus errmsg and success
	Pipelines []*Pipeline
	Consumers []*Consumer
	Trackers  []*Tracker
}

// Tracker follows each registration from the message that starts it to
// the answer that finishes it. When the deadline passes first, its
// on_timeout steps answer instead, once; an answer that comes later is
// recorded but not published.
type Tracker struct {
	Name      string
	ID        *Template // renders the identity of a registration from a message
	Start     []string  // keys whose messages open a registration
	Finish    []string  // keys whose publication answers it
	Deadline  time.Duration
	OnTimeout []*Step
	Range     hcl.Range

	pipeline *Pipeline // runs OnTimeout
}

// DefaultDeadline is how long a registration may take by default.
const DefaultDeadline = 5 * time.Minute

// Consumer documents a program outside regflow that reads from the
// exchange, such as the web form waiting for completed.<q>. regflow
// declares nothing for it; validate and graph use it to know that a
// published key has a reader.
type Consumer struct {
	Name        string
	Description string
	On          []string
	Range       hcl.Range
}

// PublishingAction is implemented by actions that publish, so that
// validate and graph can follow the routing.
type PublishingAction interface {
	Exchange() string
	RoutingKey() *Template
}

// BrokerConfig is the broker block.
type BrokerConfig struct {
	URL         string
	Exchange    string
	Prefetch    int
	QueuePrefix string
	DeadLetter  string // exchange and queue that take messages that can never succeed
	MaxBody     int    // bytes; larger bodies are refused

	// ConsumerTimeout is the broker's consumer_timeout: a delivery not
	// acknowledged within it closes the channel. Retries stop in time.
	ConsumerTimeout time.Duration
}

// StoreConfig is the store block.
type StoreConfig struct {
	Path string
}

// MailConfig is the mail block.
type MailConfig struct {
	SMTP   string // smtp:// or smtps:// URL; empty writes to Outbox
	Outbox string
	From   string
}

// Pipeline is a chain of steps bound to routing-key patterns.
type Pipeline struct {
	Name                 string
	Description          string
	On                   []string // binding patterns
	Queue                string   // durable queue name, prefix included
	Prefetch             int
	SingleActiveConsumer bool
	CheckMessage         bool     // refuse messages that do not match the message block
	When                 *Program // nil: every message
	Steps                []*Step
	OnFailure            []*Step
	Range                hcl.Range
}

// catchAll reports whether the pipeline binds "#" alone.
func (p *Pipeline) catchAll() bool {
	for _, pat := range p.On {
		if pat != "#" {
			return false
		}
	}
	return true
}

// Matches reports whether the pipeline binds routing key key.
func (p *Pipeline) Matches(key string) bool {
	for _, pat := range p.On {
		if TopicMatch(pat, key) {
			return true
		}
	}
	return false
}

// What a step does when it fails.
const (
	OnErrorFail     = "fail"     // stop the chain and run on_failure
	OnErrorContinue = "continue" // record the error in errmsg and go on
)

// Step is one configured action in a pipeline.
type Step struct {
	Name    string
	Action  string
	When    *Program // nil: always
	OnError string   // OnErrorFail or OnErrorContinue
	Timeout time.Duration
	Retry   Retry
	Once    *Template // nil: once per message; else once per rendered key
	Impl    Action
	Config  *StepConfig
	Range   hcl.Range

	idempotent bool // the action's spec says running it again changes nothing
}

// Retry says how often and how patiently a step retries a transient error.
type Retry struct {
	Attempts   int // total attempts, at least 1
	Backoff    time.Duration
	MaxBackoff time.Duration
}

// Defaults of the configuration blocks.
const (
	DefaultAMQPURL         = "amqp://guest:guest@localhost:5672/"
	DefaultExchange        = "RegUsr"
	DefaultPrefetch        = 32
	DefaultStorePath       = "var/regflow.db"
	DefaultOutbox          = "var/outbox"
	DefaultFrom            = "regflow <regflow@localhost>"
	DefaultMaxBody         = 1 << 20
	DefaultStepTimeout     = 60 * time.Second
	DefaultConsumerTimeout = 30 * time.Minute
)

// blockAttrs are the attributes of the configuration blocks, for the loader
// and the reference.
var (
	brokerAttrs = []AttrSpec{
		{Name: "url", Kind: AttrString, Default: `"` + DefaultAMQPURL + `"`,
			Doc: "AMQP URL of the broker; amqps:// for TLS (?cacertfile=FILE for a private CA). " +
				"REGFLOW_AMQP_URL and --amqp-url override it.",
			Example: `url = env("REGFLOW_AMQP_URL", "amqp://guest:guest@localhost:5672/")`},
		{Name: "exchange", Kind: AttrString, Default: `"` + DefaultExchange + `"`,
			Doc: "Topic exchange the pipelines bind to and publish on; declared durable."},
		{Name: "prefetch", Kind: AttrInt, Default: "32",
			Doc: "Unacknowledged deliveries per pipeline queue, and so the messages a pipeline works on at once."},
		{Name: "queue_prefix", Kind: AttrString, Default: `""`,
			Doc: "Prepended to every queue name, to run two environments on one virtual host."},
		{Name: "dead_letter", Kind: AttrString, Default: `"<exchange>.dead"`,
			Doc: "Name of the fanout exchange and the durable queue that keep messages that can never succeed."},
		{Name: "max_body", Kind: AttrInt, Default: "1048576",
			Doc: "Largest message body accepted, in bytes; larger ones are dead-lettered."},
		{Name: "consumer_timeout", Kind: AttrDuration, Default: `"30m"`,
			Doc: "The broker's consumer_timeout. A chain stops retrying in time to be acknowledged within it, " +
				"and validate warns about retry policies that could outlast it."},
	}
	storeAttrs = []AttrSpec{
		{Name: "path", Kind: AttrString, Default: `"` + DefaultStorePath + `"`,
			Doc: "SQLite database file; relative paths resolve against the working directory."},
	}
	mailAttrs = []AttrSpec{
		{Name: "smtp", Kind: AttrString, Default: `""`,
			Doc: "smtp://user:password@host:587 (STARTTLS required), smtps://host:465, or " +
				"smtp://host:25?tls=none; ?ca=FILE trusts a private CA; empty writes .eml files to the outbox instead.",
			Example: `smtp = env("REGFLOW_SMTP_URL", "")`},
		{Name: "outbox", Kind: AttrString, Default: `"` + DefaultOutbox + `"`,
			Doc: "Directory for .eml files when smtp is empty."},
		{Name: "from", Kind: AttrString, Default: `"` + DefaultFrom + `"`,
			Doc: "Default From address of send_email and subscribe_list."},
	}
	pipelineAttrs = []AttrSpec{
		{Name: "on", Kind: AttrStrings, Required: true,
			Doc:     "Routing-key patterns the pipeline's queue is bound to (* one word, # any words).",
			Example: `on = ["request.*"]`},
		{Name: "description", Kind: AttrString, Doc: "What the pipeline is for."},
		{Name: "when", Kind: AttrCondition, Default: "always",
			Doc:     "expr condition over msg; a message for which it is false is acknowledged and nothing runs.",
			Example: `when = "msg.success"`},
		{Name: "queue", Kind: AttrString, Default: "the pipeline's name",
			Doc: "Name of the durable queue, after queue_prefix."},
		{Name: "prefetch", Kind: AttrInt, Default: "broker.prefetch",
			Doc: "Deliveries this pipeline works on at once."},
		{Name: "single_active_consumer", Kind: AttrBool, Default: "false",
			Doc: "Only one regflow process consumes the queue at a time; the others stand by. " +
				"For state that must have a single writer, such as id allocation across hosts."},
		{Name: "check_message", Kind: AttrBool, Default: "true",
			Doc: "Refuse messages whose fields do not match the message block. " +
				"Turn off for a pipeline that must see every message, such as an audit log."},
	}
	stepAttrs = []AttrSpec{
		{Name: "when", Kind: AttrCondition, Default: "always",
			Doc:     "expr condition over msg; the step is skipped when it is false.",
			Example: `when = "msg.reason != 'test'"`},
		{Name: "on_error", Kind: AttrString, Default: `"fail"`, Enum: []string{OnErrorFail, OnErrorContinue},
			Doc: `"fail" stops the chain and runs on_failure; "continue" records the error in errmsg and goes on.`},
		{Name: "timeout", Kind: AttrDuration, Default: `"60s"`,
			Doc: "Longest one attempt of the step may take."},
		{Name: "once", Kind: AttrTemplate, Default: "once per message",
			Doc: "Run the step once per rendered key across all messages, replaying the first result " +
				"afterwards; for effects that must happen once per user, such as a welcome mail.",
			Example: `once = "welcome:{{ msg.username }}"`},
	}
	trackAttrs = []AttrSpec{
		{Name: "id", Kind: AttrTemplate, Required: true,
			Doc:     "What identifies one registration across its messages.",
			Example: `id = "{{ msg.username }}"`},
		{Name: "start", Kind: AttrStrings, Required: true,
			Doc:     "Patterns of the keys whose messages open a registration.",
			Example: `start = ["request.*"]`},
		{Name: "finish", Kind: AttrStrings, Required: true,
			Doc:     "Patterns of the keys whose publication answers it; a second answer is not published.",
			Example: `finish = ["completed.*"]`},
		{Name: "deadline", Kind: AttrDuration, Default: `"5m"`,
			Doc: "How long a registration may take before on_timeout answers it.", Example: `deadline = "5m"`},
	}
	consumerAttrs = []AttrSpec{
		{Name: "on", Kind: AttrStrings, Required: true,
			Doc:     "Routing-key patterns the outside program reads.",
			Example: `on = ["completed.*", "notify.*"]`},
		{Name: "description", Kind: AttrString, Doc: "What the program is."},
	}
	retryAttrs = []AttrSpec{
		{Name: "attempts", Kind: AttrInt, Default: "1", Doc: "Total attempts for a transient error."},
		{Name: "backoff", Kind: AttrDuration, Default: `"1s"`, Doc: "Wait before the second attempt; doubles each time, with jitter."},
		{Name: "max_backoff", Kind: AttrDuration, Default: `"30s"`, Doc: "Longest wait between attempts."},
	}
)

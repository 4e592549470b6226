package engine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Services are the backends steps act on. One Services value is shared by
// every pipeline of a running engine; all its members are safe for
// concurrent use.
type Services struct {
	Store     *Store
	Publisher Publisher
	Mailer    Mailer
	Commands  CommandRunner

	// Root is the directory relative paths resolve against: the working
	// directory of regflow run, or a sandbox.
	Root string

	// Sandbox confines every effect to Root: absolute paths are moved
	// under it, git never pushes and exec runs nothing.
	Sandbox bool

	Logger *slog.Logger
}

// Path resolves a path from the configuration.
func (s *Services) Path(p string) string {
	if filepath.IsAbs(p) {
		if s.Sandbox {
			return filepath.Join(s.Root, "root", p)
		}
		return p
	}
	return filepath.Join(s.Root, p)
}

// Outgoing is a message to publish.
type Outgoing struct {
	Exchange    string
	RoutingKey  string
	MessageID   string
	Correlation string
	Body        []byte
	Headers     map[string]any
}

// A Publisher publishes messages. Publish returns once the broker has
// confirmed the message (persistent, so it survives a broker restart).
// Its error is marked: Permanent when the broker refused the message
// (no such exchange), Unavailable when the connection failed.
type Publisher interface {
	Publish(ctx context.Context, m *Outgoing) error
}

// CommandRunner runs a site command for the exec action.
type CommandRunner interface {
	// Run runs argv without a shell and returns its standard output.
	// A non-zero exit is an error that carries the standard error.
	Run(ctx context.Context, argv []string, env []string, dir string) (stdout []byte, err error)
}

// OSCommands runs commands with os/exec.
type OSCommands struct{}

// Run implements CommandRunner.
func (OSCommands) Run(ctx context.Context, argv []string, env []string, dir string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Dir = dir
	cmd.WaitDelay = 2 * time.Second
	var stderr strings.Builder
	cmd.Stderr = &limitedWriter{w: &stderr, n: 4096}
	var stdout bytes.Buffer
	lw := &limitedWriter{w: &stdout, n: MaxCommandOutput}
	cmd.Stdout = lw
	err := cmd.Run()
	out := stdout.Bytes()
	if err != nil {
		if ctx.Err() != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return out, Transient(fmt.Errorf("%s was stopped", argv[0]))
			}
			return out, Transient(fmt.Errorf("%s: %w", argv[0], ctx.Err()))
		}
		msg := strings.TrimSpace(stderr.String())
		if ee, ok := err.(*exec.ExitError); ok {
			if msg == "" {
				return out, Permanent(fmt.Errorf("%s exited with status %d", argv[0], ee.ExitCode()))
			}
			return out, Permanent(fmt.Errorf("%s exited with status %d: %s", argv[0], ee.ExitCode(), msg))
		}
		return out, Permanent(fmt.Errorf("run %s: %w", argv[0], err))
	}
	if lw.cut {
		return nil, Permanent(fmt.Errorf("%s wrote more than %d bytes to its standard output", argv[0], MaxCommandOutput))
	}
	return out, nil
}

// MaxCommandOutput is the most standard output an exec step keeps; a
// command that writes more fails the step.
const MaxCommandOutput = 64 << 10

// limitedWriter keeps the first n bytes written to it and drops the rest,
// noting that it did.
type limitedWriter struct {
	w   interface{ Write([]byte) (int, error) }
	n   int
	cut bool
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	q := p
	if len(q) > l.n {
		q = q[:l.n]
		l.cut = true
	}
	l.n -= len(q)
	if len(q) > 0 {
		l.w.Write(q)
	}
	return len(p), nil
}

// derivedID returns a stable identity for something a step produces,
// so that doing it again after a crash produces the same identity.
func derivedID(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// Publish publishes body on exchange with routing key key and waits for
// the broker's confirmation. The message id is derived from the message
// being handled, the step and the key, so a replay publishes the same id.
func (c *Call) Publish(ctx context.Context, exchange, key string, body Message) error {
	if err := CheckRoutingKey(key); err != nil {
		return Permanent(err)
	}
	data, err := json.Marshal(body)
	if err != nil {
		return Permanent(fmt.Errorf("encode message: %w", err))
	}
	if max := c.maxBody; max > 0 && len(data) > max {
		// Its readers would refuse it; better not to send it at all.
		return Permanent(fmt.Errorf("the message for %s would be %d bytes; the limit is %d (broker.max_body)",
			key, len(data), max))
	}
	out := &Outgoing{
		Exchange:    exchange,
		RoutingKey:  key,
		MessageID:   derivedID(c.MessageID, c.Pipeline, c.Step, exchange, key),
		Correlation: c.Correlation,
		Body:        data,
		Headers:     map[string]any{HeaderHops: int32(c.Hops + 1)},
	}
	if c.origin != "" {
		out.Headers[HeaderOrigin] = c.origin
	}
	if c.mayPublish != nil {
		ok, err := c.mayPublish(ctx, key, out.MessageID)
		if err != nil {
			return err
		}
		if !ok {
			c.Notef("not published on %s: the registration was already answered; recorded as late", key)
			return nil
		}
	}
	if err := c.Svc.Publisher.Publish(ctx, out); err != nil {
		return err
	}
	c.publish = append(c.publish, Published{Exchange: exchange, RoutingKey: key, MessageID: out.MessageID, Body: body})
	return nil
}

// SendMail sends m through the configured mailer, giving it a stable id.
func (c *Call) SendMail(ctx context.Context, m *Mail) error {
	if m.ID == "" {
		m.ID = derivedID(c.MessageID, c.Pipeline, c.Step, strings.Join(m.Recipients(), ","), m.Subject)
	}
	if err := c.Svc.Mailer.Send(ctx, m); err != nil {
		return err
	}
	c.mails = append(c.mails, m)
	return nil
}

package engine

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	mail "github.com/wneessen/go-mail"

	"regflow/internal/atomicfile"
)

// Mail is one email message as actions compose it.
type Mail struct {
	From    string
	To      []string
	Cc      []string
	Bcc     []string
	ReplyTo string
	Subject string
	Text    string
	// ID is a stable identity for the message; the Message-ID header is
	// derived from it, so a message that is sent again after a crash can
	// be recognised by the receiver.
	ID      string
	Headers map[string]string // extra headers, such as X-Regflow-User

	// Commands marks a text for a program, such as a list server, that
	// reads it line by line: it is sent as it is (8bit) instead of
	// quoted-printable, which would fold long lines and escape "=".
	Commands bool
}

// Recipients returns every envelope recipient.
func (m *Mail) Recipients() []string {
	var r []string
	r = append(r, m.To...)
	r = append(r, m.Cc...)
	return append(r, m.Bcc...)
}

// A Mailer delivers mail. Send returns after the message was accepted by
// the SMTP server or written to the outbox; its error is marked Transient
// or Permanent.
type Mailer interface {
	Send(ctx context.Context, m *Mail) error
}

// build turns m into a go-mail message, refusing header values that would
// let text spill into other headers.
func (m *Mail) build() (*mail.Msg, error) {
	for _, h := range append([]string{m.From, m.ReplyTo, m.Subject}, m.Recipients()...) {
		if i := strings.IndexFunc(h, isControl); i >= 0 {
			return nil, Permanent(fmt.Errorf("header value %q contains a control character", h))
		}
	}
	var opts []mail.MsgOption
	var partOpts []mail.PartOption
	if m.Commands {
		for _, line := range strings.Split(m.Text, "\n") {
			if len(line) > 998 {
				return nil, Permanent(fmt.Errorf("a command line is %d bytes long; mail allows 998", len(line)))
			}
		}
		// go-mail writes its 7bit label over a quoted-printable body, so
		// the text goes out as 8bit: unencoded, whatever it holds.
		opts = append(opts, mail.WithEncoding(mail.NoEncoding))
		partOpts = append(partOpts, mail.WithPartEncoding(mail.NoEncoding))
	}
	msg := mail.NewMsg(opts...)
	if err := msg.From(m.From); err != nil {
		return nil, Permanent(fmt.Errorf("from %q: %w", m.From, err))
	}
	if len(m.To)+len(m.Cc)+len(m.Bcc) == 0 {
		return nil, Permanent(errors.New("mail has no recipients"))
	}
	if len(m.To) > 0 {
		if err := msg.To(m.To...); err != nil {
			return nil, Permanent(fmt.Errorf("to: %w", err))
		}
	}
	if len(m.Cc) > 0 {
		if err := msg.Cc(m.Cc...); err != nil {
			return nil, Permanent(fmt.Errorf("cc: %w", err))
		}
	}
	if len(m.Bcc) > 0 {
		if err := msg.Bcc(m.Bcc...); err != nil {
			return nil, Permanent(fmt.Errorf("bcc: %w", err))
		}
	}
	if m.ReplyTo != "" {
		if err := msg.ReplyTo(m.ReplyTo); err != nil {
			return nil, Permanent(fmt.Errorf("reply_to: %w", err))
		}
	}
	msg.Subject(m.Subject)
	msg.SetDate()
	if m.ID != "" {
		msg.SetMessageIDWithValue(m.ID + "@" + domainOf(m.From))
	} else {
		msg.SetMessageID()
	}
	for k, v := range m.Headers {
		if strings.IndexFunc(k+v, isControl) >= 0 {
			return nil, Permanent(fmt.Errorf("header %q contains a control character", k))
		}
		msg.SetGenHeader(mail.Header(k), v)
	}
	msg.SetUserAgent("regflow")
	msg.SetBodyString(mail.TypeTextPlain, m.Text, partOpts...)
	return msg, nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return strings.TrimRight(addr[i+1:], ">")
	}
	return "regflow.invalid"
}

// Outbox writes each message as an RFC 5322 file named *.eml into a
// directory, for sites without an SMTP server and for simulation.
type Outbox struct {
	Dir string
	seq atomic.Uint64
}

// Send writes m to the outbox. The file appears whole or not at all.
func (o *Outbox) Send(ctx context.Context, m *Mail) error {
	msg, err := m.build()
	if err != nil {
		return err
	}
	if len(m.Bcc) > 0 {
		// An outbox file is for a delivery agent such as sendmail -t,
		// which takes the blind copies from this header and removes it;
		// without it they would be lost.
		msg.SetGenHeader(mail.Header("Bcc"), strings.Join(m.Bcc, ", "))
	}
	if err := os.MkdirAll(o.Dir, 0o750); err != nil {
		return Unavailable(fmt.Errorf("outbox: %w", err))
	}
	id := m.ID
	if id == "" {
		id = strconv.FormatUint(o.seq.Add(1), 10)
	}
	name := time.Now().UTC().Format("20060102T150405.000000Z") + "-" + safeName(id) + ".eml"
	var buf bytes.Buffer
	if _, err := msg.WriteTo(&buf); err != nil {
		return Permanent(fmt.Errorf("outbox: encode: %w", err))
	}
	if err := atomicfile.Create(filepath.Join(o.Dir, name), buf.Bytes(), 0o640); err != nil {
		return Unavailable(fmt.Errorf("outbox: %w", err))
	}
	return nil
}

func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s)
}

// TLS modes of an SMTP URL.
const (
	TLSStartTLS      = "starttls"      // STARTTLS is required; never plaintext
	TLSOpportunistic = "opportunistic" // STARTTLS when the server offers it
	TLSNone          = "none"          // plaintext, for a local relay or a test server
	TLSImplicit      = "implicit"      // smtps://, TLS from the first byte
)

// SMTPConfig is a parsed SMTP URL.
type SMTPConfig struct {
	Host     string
	Port     int
	Username string
	Password string
	TLS      string
	Timeout  time.Duration
	HELO     string
	CAFile   string // PEM certificates to trust instead of the system's
}

// ParseSMTPURL parses smtp://[user[:password]@]host[:port][?tls=MODE&timeout=D&helo=NAME&ca=FILE]
// or smtps://…. The default TLS mode of smtp:// is starttls (required), of
// smtps:// implicit; the default port is 587, or 465 for smtps. ca names
// a PEM file of certificates to trust instead of the system's.
func ParseSMTPURL(raw string) (*SMTPConfig, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("smtp url: %w", redactURLError(err))
	}
	c := &SMTPConfig{Host: u.Hostname(), Timeout: 30 * time.Second}
	switch u.Scheme {
	case "smtp":
		c.Port, c.TLS = 587, TLSStartTLS
	case "smtps":
		c.Port, c.TLS = 465, TLSImplicit
	default:
		return nil, fmt.Errorf("smtp url: scheme must be smtp or smtps, not %q", u.Scheme)
	}
	if c.Host == "" {
		return nil, errors.New("smtp url: no host")
	}
	if p := u.Port(); p != "" {
		if c.Port, err = strconv.Atoi(p); err != nil || c.Port < 1 || c.Port > 65535 {
			return nil, fmt.Errorf("smtp url: bad port %q", p)
		}
	}
	if u.User != nil {
		c.Username = u.User.Username()
		c.Password, _ = u.User.Password()
	}
	q := u.Query()
	for k := range q {
		switch k {
		case "tls", "timeout", "helo", "ca":
		default:
			return nil, fmt.Errorf("smtp url: unknown parameter %q (known: tls, timeout, helo, ca)", k)
		}
	}
	if t := q.Get("tls"); t != "" {
		switch t {
		case TLSStartTLS, TLSOpportunistic, TLSNone:
			if u.Scheme == "smtps" {
				return nil, fmt.Errorf("smtp url: smtps always uses TLS; drop tls=%s", t)
			}
			c.TLS = t
		default:
			return nil, fmt.Errorf("smtp url: tls must be starttls, opportunistic or none, not %q", t)
		}
	}
	if t := q.Get("timeout"); t != "" {
		if c.Timeout, err = time.ParseDuration(t); err != nil || c.Timeout <= 0 {
			return nil, fmt.Errorf("smtp url: bad timeout %q", t)
		}
	}
	c.HELO = q.Get("helo")
	c.CAFile = q.Get("ca")
	if c.Password != "" && c.TLS == TLSNone && !isLoopback(c.Host) {
		return nil, errors.New("smtp url: refusing to send a password in plaintext; use tls=starttls or smtps")
	}
	return c, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// RedactURL returns raw with any password replaced by "xxxxx", for logs.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable url)"
	}
	return u.Redacted()
}

// redactURLError keeps url.Parse errors from echoing a password, or a
// part of it: an invalid %-escape is not quoted.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var ee url.EscapeError
	if errors.As(err, &ee) {
		return errors.New("it has a % not followed by two hex digits; percent-encode reserved characters " +
			"in the user name and password (% is %25)")
	}
	return err
}

// LoadCAFile reads PEM certificates to trust.
func LoadCAFile(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// SMTP sends mail through an SMTP server with go-mail. It keeps a few
// sessions open and reuses them, so that a mail costs one SMTP
// transaction rather than a connection, a TLS handshake and a login.
type SMTP struct {
	cfg  *SMTPConfig
	opts []mail.Option
	idle chan *mail.Client // open sessions not in use
}

// smtpIdle is how many open sessions an SMTP mailer keeps.
const smtpIdle = 4

// NewSMTP returns a mailer for the server described by cfg.
func NewSMTP(cfg *SMTPConfig) (*SMTP, error) {
	opts := []mail.Option{
		mail.WithPort(cfg.Port),
		mail.WithTimeout(cfg.Timeout),
	}
	if cfg.CAFile != "" {
		pool, err := LoadCAFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("smtp url: ca: %w", err)
		}
		opts = append(opts, mail.WithTLSConfig(&tls.Config{RootCAs: pool, ServerName: cfg.Host,
			MinVersion: tls.VersionTLS12}))
	}
	switch cfg.TLS {
	case TLSImplicit:
		opts = append(opts, mail.WithSSL())
	case TLSStartTLS:
		opts = append(opts, mail.WithTLSPolicy(mail.TLSMandatory))
	case TLSOpportunistic:
		opts = append(opts, mail.WithTLSPolicy(mail.TLSOpportunistic))
	case TLSNone:
		opts = append(opts, mail.WithTLSPolicy(mail.NoTLS))
	}
	if cfg.Username != "" {
		// Discovery never offers a password over plaintext; on loopback,
		// where ParseSMTPURL allows tls=none with a password, use PLAIN.
		auth := mail.SMTPAuthAutoDiscover
		if cfg.TLS == TLSNone {
			auth = mail.SMTPAuthPlain
		}
		opts = append(opts,
			mail.WithSMTPAuth(auth),
			mail.WithUsername(cfg.Username),
			mail.WithPassword(cfg.Password))
	}
	if cfg.HELO != "" {
		opts = append(opts, mail.WithHELO(cfg.HELO))
	}
	return &SMTP{cfg: cfg, opts: opts, idle: make(chan *mail.Client, smtpIdle)}, nil
}

// session returns an open session, from the idle ones or a new one.
func (s *SMTP) session(ctx context.Context) (*mail.Client, bool, error) {
	select {
	case c := <-s.idle:
		return c, true, nil
	default:
	}
	c, err := mail.NewClient(s.cfg.Host, s.opts...)
	if err != nil {
		return nil, false, Permanent(fmt.Errorf("smtp client: %w", err))
	}
	if err := s.limit(ctx, c); err != nil {
		return nil, false, err
	}
	if err := c.DialWithContext(ctx); err != nil {
		return nil, false, classifySMTP(s.cfg, err)
	}
	return c, false, nil
}

// Send delivers m. A reused session that the server closed in the
// meantime fails its connection check before anything is sent; the mail
// then goes through a new session.
func (s *SMTP) Send(ctx context.Context, m *Mail) error {
	msg, err := m.build()
	if err != nil {
		return err
	}
	for {
		c, reused, err := s.session(ctx)
		if err != nil {
			return err
		}
		if err := s.limit(ctx, c); err != nil {
			c.Close()
			return err
		}
		err = c.Send(msg)
		if err == nil {
			select {
			case s.idle <- c:
			default:
				c.Close()
			}
			return nil
		}
		c.Close()
		var se *mail.SendError
		if reused && errors.As(err, &se) && se.Reason == mail.ErrConnCheck {
			continue
		}
		return classifySMTP(s.cfg, err)
	}
}

// limit makes each network wait of c end by the context's deadline (the
// step's timeout), or after the configured timeout when that comes first.
// go-mail takes no context for a send; its per-command deadline is the
// way to bound one.
func (s *SMTP) limit(ctx context.Context, c *mail.Client) error {
	d := s.cfg.Timeout
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		if left <= 0 {
			return Transient(fmt.Errorf("smtp %s:%d: %w", s.cfg.Host, s.cfg.Port, context.DeadlineExceeded))
		}
		d = min(d, left)
	}
	return mail.WithTimeout(d)(c)
}

// Close ends the idle sessions.
func (s *SMTP) Close() {
	for {
		select {
		case c := <-s.idle:
			c.Close()
		default:
			return
		}
	}
}

// classifySMTP says whether a retry can help: 4xx replies, timeouts and
// refused connections are transient; 5xx replies (a 535 authentication
// failure among them) and a missing STARTTLS are permanent.
func classifySMTP(cfg *SMTPConfig, err error) error {
	where := fmt.Sprintf("smtp %s:%d", cfg.Host, cfg.Port)
	var se *mail.SendError
	if errors.As(err, &se) {
		switch code := se.ErrorCode(); {
		case se.IsTemp() || code >= 400 && code < 500:
			return Transient(fmt.Errorf("%s: %w", where, err))
		case code >= 500:
			return Permanent(fmt.Errorf("%s: %w", where, err))
		}
	}
	var te *textproto.Error
	if errors.As(err, &te) {
		if te.Code >= 500 {
			if te.Code == 535 || te.Code == 530 || te.Code == 534 {
				return Permanent(fmt.Errorf("%s: authentication failed: %w", where, err))
			}
			return Permanent(fmt.Errorf("%s: %w", where, err))
		}
		return Transient(fmt.Errorf("%s: %w", where, err))
	}
	if strings.Contains(err.Error(), "does not support STARTTLS") {
		return Permanent(fmt.Errorf("%s: the server offers no STARTTLS and tls=starttls is "+
			"required; refusing to send in plaintext", where))
	}
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	var invalid x509.CertificateInvalidError
	if errors.As(err, &unknownCA) || errors.As(err, &badHost) || errors.As(err, &invalid) {
		return Permanent(fmt.Errorf("%s: the server's certificate is not trusted: %w "+
			"(name a CA with ?ca=FILE if it is a private one)", where, err))
	}
	if strings.Contains(err.Error(), "does not support SMTP AUTH") ||
		errors.Is(err, mail.ErrNoSupportedAuthDiscovered) {
		return Permanent(fmt.Errorf("%s: %w", where, err))
	}
	return Transient(fmt.Errorf("%s: %w", where, err))
}

package nats

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// ErrInvalidConfig is matched (with [errors.Is]) by every error
// [Config.Validate] and [ParseURL] return; the message names the field at
// fault.
var ErrInvalidConfig = errors.New("nats: invalid config")

// errInvalidURL is wrapped by every error [ParseURL] returns; it reads
// "nats: invalid URL" and matches [ErrInvalidConfig].
var errInvalidURL error = invalidURL{}

type invalidURL struct{}

func (invalidURL) Error() string        { return "nats: invalid URL" }
func (invalidURL) Is(target error) bool { return target == ErrInvalidConfig }

// Defaults applied by [NewPublisher] and [NewSubscriber] to zero fields.
const (
	// DefaultDurable is the durable consumer name of subscribers.
	DefaultDurable = "idempo"
	// DefaultAckWait is JetStream's redelivery clock for the consumers the
	// preset creates.
	DefaultAckWait = 30 * time.Second
	// DefaultLease is the idempo stack's default Lease.
	DefaultLease = 30 * time.Second
	// DefaultMaxDeliveries is the idempo stack's default delivery cap.
	DefaultMaxDeliveries = 10
	// DefaultRetryWindow is the default retry policy's MaxTotalWait.
	DefaultRetryWindow = time.Minute
	// DefaultNackDelay is how long JetStream holds a nacked message back.
	DefaultNackDelay = time.Second
	// DefaultPublishTimeout bounds the wait for JetStream's publish ack.
	DefaultPublishTimeout = 10 * time.Second
	// DefaultDuplicateWindow is JetStream's own default duplicate window.
	DefaultDuplicateWindow = 2 * time.Minute
	// defaultConsumers is the number of workers one Subscribe call starts.
	defaultConsumers = 1
)

// Config configures a NATS JetStream publisher or subscriber with idempo's
// safe defaults: one file-backed stream per topic (created before the first
// publish unless a stream already captures the topic's subject), publisher
// IDs for JetStream's duplicate window, durable pull consumers with explicit
// acks, an in-progress ack each time idempo extends its lease, nacks held
// back by NackDelay, a server-side delivery limit above idempo's cap, and an
// unmarshaler that never fails. The zero value of every optional field means
// its default. See docs/backends.md for why each default is what it is.
type Config struct {
	// URL is the server address: nats://host:4222, nats://user:pass@host,
	// nats://token@host or tls://host:4222; several comma-separated URLs of
	// one cluster are allowed. Required. Use [ParseURL] to check one given
	// by a user.
	URL string

	// TLS, when non-nil, is used for the connection (tls:// URLs use the
	// system roots without it).
	TLS *tls.Config

	// Durable is the name of the durable consumer a subscriber creates (or
	// joins) on each topic's stream: subscribers with one Durable share a
	// topic's messages, each Durable receives every message. It must be a
	// valid consumer name (letters, digits, '-' and '_'). Defaults to
	// "idempo".
	Durable string

	// AckWait is JetStream's redelivery clock: a delivered message that is
	// neither acked, nacked nor marked in progress for this long is
	// delivered again. The idempo stack marks it in progress (an in-progress
	// ack, through the Touch the subscriber attaches to each message) each
	// time it extends its lease, about every Lease/3, so AckWait must be at
	// least Lease ([NewSubscriber] checks it). After a consumer dies, its
	// messages come back after AckWait. Defaults to 30s.
	AckWait time.Duration

	// MaxDeliver is JetStream's delivery limit: past it the server stops
	// delivering a message and keeps it in the stream, silently. It must be
	// above MaxDeliveries, so that idempo dead-letters a message before the
	// server gives up on it. Defaults to 2 × MaxDeliveries (20); the special
	// value -1 means no limit.
	MaxDeliver int

	// MaxDeliveries is the idempo stack's delivery cap
	// (middleware.Config.MaxDeliveries), used only for the MaxDeliver check.
	// Defaults to 10, the stack's default; -1 when the stack has no cap
	// (MaxDeliver must then be -1).
	MaxDeliveries int

	// Lease is the idempo stack's Lease (middleware.Config.Lease), used only
	// for the AckWait check. Defaults to 30s, the stack's default.
	Lease time.Duration

	// RetryWindow is the longest time one delivery spends in the stack's
	// in-process retries (retry.Policy.MaxTotalWait), used only for the
	// start-up check: the stack marks the message in progress while it
	// waits between retries, so AckWait needs no room for it, but with
	// MaxAge set every delivery up to the cap, each up to RetryWindow plus a
	// Lease and NackDelay, must fit in MaxAge, or the stream would drop a
	// message before idempo dead-letters it. Defaults to 1m, the default
	// retry policy's.
	RetryWindow time.Duration

	// NackDelay is how long JetStream holds a nacked message back before
	// delivering it again (a delayed negative ack), so that a failing message
	// does not spin. Defaults to 1s; the special value -1 redelivers at once.
	NackDelay time.Duration

	// Consumers is how many messages one Subscribe call hands out at once:
	// each worker fetches one message, waits for its ack or nack, and fetches
	// the next, so no message waits in a client buffer while its AckWait
	// runs. Defaults to 1; order is kept only with 1.
	Consumers int

	// PublishTimeout bounds how long Publish waits for JetStream's ack of
	// each message. On timeout the message may still be stored: publish it
	// again with the same UUID and the duplicate window drops the copy.
	// Defaults to 10s.
	PublishTimeout time.Duration

	// DuplicateWindow is the duplicate window of the streams the preset
	// creates: a message whose Nats-Msg-Id (the message UUID, see
	// [MsgIDKey]) was stored within this window is acknowledged and dropped.
	// Defaults to 2m, JetStream's default.
	DuplicateWindow time.Duration

	// MaxAge bounds how long the streams the preset creates keep a message.
	// Defaults to 0: kept until deleted (streams use limits retention, so an
	// acked message stays readable, which the DLQ tools rely on). Set it for
	// busy topics; never for DLQ topics.
	MaxAge time.Duration
}

func (c Config) withDefaults() Config {
	c.Durable = cmp.Or(c.Durable, DefaultDurable)
	c.AckWait = cmp.Or(c.AckWait, DefaultAckWait)
	c.MaxDeliveries = cmp.Or(c.MaxDeliveries, DefaultMaxDeliveries)
	if c.MaxDeliver == 0 {
		c.MaxDeliver = -1
		if c.MaxDeliveries > 0 {
			c.MaxDeliver = 2 * c.MaxDeliveries
		}
	}
	c.Lease = cmp.Or(c.Lease, DefaultLease)
	c.RetryWindow = cmp.Or(c.RetryWindow, DefaultRetryWindow)
	c.NackDelay = cmp.Or(c.NackDelay, DefaultNackDelay)
	c.Consumers = cmp.Or(c.Consumers, defaultConsumers)
	c.PublishTimeout = cmp.Or(c.PublishTimeout, DefaultPublishTimeout)
	c.DuplicateWindow = cmp.Or(c.DuplicateWindow, DefaultDuplicateWindow)
	return c
}

// Validate reports the first problem with c, naming the field. The error
// matches [ErrInvalidConfig].
func (c Config) Validate() error {
	if c.URL == "" {
		return fmt.Errorf("%w: URL is empty (try nats://127.0.0.1:4222)", ErrInvalidConfig)
	}
	if _, err := ParseURL(c.URL); err != nil {
		return fmt.Errorf("%w: URL: %w", ErrInvalidConfig, err)
	}
	if c.Durable != "" && !validName(c.Durable) {
		return fmt.Errorf("%w: Durable %q is not a consumer name (letters, digits, '-' and '_')", ErrInvalidConfig, c.Durable)
	}
	switch {
	case c.AckWait < 0:
		return fmt.Errorf("%w: AckWait cannot be negative", ErrInvalidConfig)
	case c.MaxDeliver < -1:
		return fmt.Errorf("%w: MaxDeliver cannot be negative (-1 means no limit)", ErrInvalidConfig)
	case c.MaxDeliveries < -1:
		return fmt.Errorf("%w: MaxDeliveries cannot be negative (-1 when the stack has no cap)", ErrInvalidConfig)
	case c.Lease < 0:
		return fmt.Errorf("%w: Lease cannot be negative", ErrInvalidConfig)
	case c.RetryWindow < 0:
		return fmt.Errorf("%w: RetryWindow cannot be negative", ErrInvalidConfig)
	case c.NackDelay < -1:
		return fmt.Errorf("%w: NackDelay cannot be negative (-1 redelivers at once)", ErrInvalidConfig)
	case c.Consumers < 0:
		return fmt.Errorf("%w: Consumers cannot be negative", ErrInvalidConfig)
	case c.PublishTimeout < 0:
		return fmt.Errorf("%w: PublishTimeout cannot be negative", ErrInvalidConfig)
	case c.DuplicateWindow < 0:
		return fmt.Errorf("%w: DuplicateWindow cannot be negative", ErrInvalidConfig)
	case c.MaxAge < 0:
		return fmt.Errorf("%w: MaxAge cannot be negative", ErrInvalidConfig)
	case c.MaxAge > 0 && c.DuplicateWindow > c.MaxAge:
		return fmt.Errorf("%w: DuplicateWindow %v is longer than MaxAge %v (JetStream refuses it)", ErrInvalidConfig, c.DuplicateWindow, c.MaxAge)
	}
	return nil
}

// checkClocks refuses settings under which JetStream would redeliver a
// message whose handler still runs, or give up on a message before idempo
// dead-letters it. c has its defaults applied.
func (c Config) checkClocks() error {
	touch := c.Lease / 3
	if c.AckWait < c.Lease {
		return fmt.Errorf("%w: AckWait (%v) is shorter than Lease (%v): the idempo stack marks a message in progress "+
			"each time it extends its lease (about every %v, and while it waits up to RetryWindow %v between retries), "+
			"but a slow store can delay an extension by up to 3/4 of the Lease, and JetStream would then redeliver the "+
			"message to another consumer while its handler runs; raise AckWait to at least Lease",
			ErrInvalidConfig, c.AckWait, c.Lease, touch, c.RetryWindow)
	}
	if c.MaxAge > 0 {
		deliveries := c.MaxDeliver
		if deliveries == -1 || (c.MaxDeliveries > 0 && c.MaxDeliveries < deliveries) {
			deliveries = c.MaxDeliveries
		}
		if deliveries > 0 {
			life := time.Duration(deliveries) * (c.RetryWindow + c.Lease + max(c.NackDelay, 0))
			if life > c.MaxAge {
				return fmt.Errorf("%w: MaxAge (%v) is shorter than %d deliveries × (RetryWindow %v + Lease %v + NackDelay %v) = %v: "+
					"the stream could drop a failing message before idempo dead-letters it; raise MaxAge or leave it 0",
					ErrInvalidConfig, c.MaxAge, deliveries, c.RetryWindow, c.Lease, max(c.NackDelay, 0), life)
			}
		}
	}
	switch {
	case c.MaxDeliveries == -1 && c.MaxDeliver != -1:
		return fmt.Errorf("%w: MaxDeliver (%d) is set but the stack has no delivery cap (MaxDeliveries -1): "+
			"JetStream would stop delivering a failing message after %d deliveries and keep it in the stream, "+
			"never dead-lettered; set MaxDeliver to -1 or give the stack a cap",
			ErrInvalidConfig, c.MaxDeliver, c.MaxDeliver)
	case c.MaxDeliver != -1 && c.MaxDeliver <= c.MaxDeliveries:
		return fmt.Errorf("%w: MaxDeliver (%d) is not above the stack's delivery cap MaxDeliveries (%d): "+
			"JetStream would stop delivering a failing message (each delivery up to RetryWindow %v of retries "+
			"with AckWait %v and Lease %v) and keep it in the stream before idempo dead-letters it; raise MaxDeliver "+
			"above MaxDeliveries (the default is twice it) or set it to -1",
			ErrInvalidConfig, c.MaxDeliver, c.MaxDeliveries, c.RetryWindow, c.AckWait, c.Lease)
	}
	return nil
}

// ParseURL checks a NATS URL, nats://host:port, nats://user:pass@host,
// nats://token@host or tls://host:port (several comma-separated, one
// cluster), and returns a [Config] with URL set and every other field at its
// default. The port defaults to 4222. Errors match [ErrInvalidConfig] and
// never contain a password or token.
func ParseURL(s string) (Config, error) {
	if strings.TrimSpace(s) == "" {
		return Config{}, fmt.Errorf("%w: empty (want nats://host:4222)", errInvalidURL)
	}
	for part := range strings.SplitSeq(s, ",") {
		shown := Redact(part)
		u, err := url.Parse(strings.TrimSpace(part))
		if err != nil {
			return Config{}, fmt.Errorf("%w %q: not a URL", errInvalidURL, shown)
		}
		switch u.Scheme {
		case "nats", "tls":
		case "":
			return Config{}, fmt.Errorf("%w %q: want nats://host:4222", errInvalidURL, shown)
		default:
			return Config{}, fmt.Errorf("%w %q: scheme %q is not nats or tls", errInvalidURL, shown, u.Scheme)
		}
		if u.Hostname() == "" {
			return Config{}, fmt.Errorf("%w %q: no host", errInvalidURL, shown)
		}
		if p := u.Port(); p != "" {
			for _, c := range p {
				if c < '0' || c > '9' {
					return Config{}, fmt.Errorf("%w %q: the port is not a number", errInvalidURL, shown)
				}
			}
		}
		if strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "" {
			return Config{}, fmt.Errorf("%w %q: paths, query parameters and fragments are not supported", errInvalidURL, shown)
		}
	}
	return Config{URL: s}, nil
}

// Redact returns a NATS URL (or a comma-separated list) with its password
// or token replaced by "xxxxx": nats://user:xxxxx@host, nats://xxxxx@host
// (and any query string: nats://host?xxxxx).
func Redact(s string) string {
	var out []string
	for part := range strings.SplitSeq(s, ",") {
		out = append(out, redactOne(part))
	}
	return strings.Join(out, ",")
}

func redactOne(s string) string {
	// NATS URLs have no path: everything between "://" and the last '@' is
	// the user part, even when a password or token holds a raw '/', '?' or
	// '#' (which makes the URL invalid, and the error shows it).
	if i := strings.Index(s, "://"); i >= 0 {
		start := i + 3
		if at := strings.LastIndexByte(s[start:], '@'); at >= 0 {
			user := s[start : start+at]
			if c := strings.IndexByte(user, ':'); c >= 0 {
				s = s[:start] + user[:c+1] + "xxxxx" + s[start+at:]
			} else {
				s = s[:start] + "xxxxx" + s[start+at:] // a token
			}
		}
	}
	// Query parameters may carry credentials: none is shown.
	if q := strings.IndexByte(s, '?'); q >= 0 && q < len(s)-1 {
		s = s[:q+1] + "xxxxx"
	}
	return s
}

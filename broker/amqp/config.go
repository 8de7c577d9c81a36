package amqp

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strings"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// ErrInvalidConfig is matched (with [errors.Is]) by every error
// [Config.Validate] returns; the message names the field at fault.
var ErrInvalidConfig = errors.New("amqp: invalid config")

// errInvalidURL is wrapped by every error [ParseURL] returns; it reads
// "amqp: invalid URL" and matches [ErrInvalidConfig].
var errInvalidURL error = invalidURL{}

type invalidURL struct{}

func (invalidURL) Error() string        { return "amqp: invalid URL" }
func (invalidURL) Is(target error) bool { return target == ErrInvalidConfig }

// Defaults applied by [NewPublisher] and [NewSubscriber] to zero fields.
const (
	// defaultPrefetch is the QoS prefetch count of each consumer channel.
	defaultPrefetch = 16
	// defaultConsumers is the number of consumers one Subscribe call starts.
	defaultConsumers = 1
	// defaultChannelPoolSize is the number of publisher channels kept open.
	defaultChannelPoolSize = 8
	// defaultConfirmTimeout bounds the wait for the broker's publisher confirm.
	defaultConfirmTimeout = 10 * time.Second
	// defaultNackDelay is how long a nacked delivery is held before it is
	// returned to the queue.
	defaultNackDelay = time.Second
	// defaultConsumerTimeout is RabbitMQ's own default consumer_timeout.
	defaultConsumerTimeout = 30 * time.Minute
	// defaultMaxHandling is a generous bound on one delivery's handling by
	// a stack with the default retry policy (about 2.3 s of waits between
	// five attempts) and handlers that take seconds.
	defaultMaxHandling = time.Minute
)

// Config configures a RabbitMQ publisher or subscriber with idempo's safe
// defaults: one durable queue per topic (declared before the first publish),
// persistent messages, publisher confirms with a timeout, manual acks, a
// delay before a nacked delivery is requeued, and an unmarshaler that never
// fails. The zero value of every optional field means its default.
// See docs/backends.md for why each default is what it is.
//
// A Watermill topic is the name of a queue on the default exchange: Publish
// routes to the queue named after the topic, Subscribe consumes from it.
// Subscribers of one queue compete for its messages (a work queue); to give
// several handlers every message, give each its own topic.
type Config struct {
	// URL is the broker address, amqp://user:pass@host:port/vhost or amqps://.
	// Required. Use [ParseURL] to check one given by a user.
	URL string

	// TLS, when non-nil, is used for amqps:// connections. Defaults to the
	// system roots.
	TLS *tls.Config

	// NonDurable declares queues that do not survive a broker restart and
	// publishes transient messages. Defaults to false: durable queues and
	// persistent messages, so a broker restart loses nothing confirmed.
	NonDurable bool

	// QueueArguments are passed when declaring a queue, e.g.
	// {"x-queue-type": "quorum"} or a dead-letter exchange. Publishers and
	// subscribers of a queue must use the same arguments (RabbitMQ refuses a
	// redeclaration with different ones). Defaults to none (a classic queue).
	QueueArguments map[string]any

	// Prefetch is the QoS prefetch count of each consumer: how many
	// deliveries RabbitMQ sends ahead of acks. Each consumer still hands out
	// one message at a time; prefetch saves a round trip per message.
	// Defaults to 16.
	Prefetch int

	// Consumers is how many consumers (each on its own channel) one Subscribe
	// call starts on the queue, merged into one output channel. watermill-amqp
	// handles one delivery per consumer at a time, so this is the number of
	// messages a router handler processes concurrently. Defaults to
	// 1; order is kept only with 1.
	Consumers int

	// ChannelPoolSize is the number of channels the publisher keeps open and
	// reuses; it bounds concurrent publishes. Defaults to
	// 8 (watermill-amqp's 0 opens and closes a channel
	// per publish, about three times slower with 8 concurrent publishers).
	ChannelPoolSize int

	// ConfirmTimeout bounds how long Publish waits for the broker to confirm
	// each message (e.g. while RabbitMQ blocks publishers on a memory or disk
	// alarm). On timeout Publish returns [ErrConfirmTimeout]; the message may
	// still be delivered later, so treat it as a duplicate risk, not as a
	// loss. Defaults to 10s.
	ConfirmTimeout time.Duration

	// NackDelay is how long a nacked delivery is held (unacked, so no other
	// consumer gets it) before it is returned to the queue. watermill-amqp
	// requeues at once, which makes a failing message spin. The delay blocks
	// the consumer that holds it. Defaults to 1s; the special
	// value -1 requeues at once (as for the stack's and the Kafka preset's NackDelay).
	NackDelay time.Duration

	// ConsumerTimeout is the broker's consumer_timeout for these queues:
	// RabbitMQ closes the channel of a consumer that holds a delivery unacked
	// for longer, and every delivery on that channel is requeued. Prefetched
	// deliveries count from the moment they are sent, while they wait behind
	// the ones being handled, so [NewSubscriber] checks that Prefetch ×
	// (MaxHandling + NackDelay) fits in it. Defaults to 30m, RabbitMQ's default; -1 when
	// the broker has no consumer timeout (nothing is checked).
	ConsumerTimeout time.Duration

	// MaxHandling is the longest one delivery can take from receipt to ack
	// or nack: for an idempo stack, the retry window
	// (retry.Policy.MaxTotalWait) plus MaxAttempts times the handler's
	// longest run. Used only for the ConsumerTimeout check. Defaults to 1m.
	MaxHandling time.Duration
}

func (c Config) withDefaults() Config {
	c.Prefetch = cmp.Or(c.Prefetch, defaultPrefetch)
	c.Consumers = cmp.Or(c.Consumers, defaultConsumers)
	c.ChannelPoolSize = cmp.Or(c.ChannelPoolSize, defaultChannelPoolSize)
	c.ConfirmTimeout = cmp.Or(c.ConfirmTimeout, defaultConfirmTimeout)
	c.NackDelay = cmp.Or(c.NackDelay, defaultNackDelay)
	c.ConsumerTimeout = cmp.Or(c.ConsumerTimeout, defaultConsumerTimeout)
	c.MaxHandling = cmp.Or(c.MaxHandling, defaultMaxHandling)
	return c
}

// Validate reports the first problem with c, naming the field. The error
// matches [ErrInvalidConfig].
func (c Config) Validate() error {
	if c.URL == "" {
		return fmt.Errorf("%w: URL is empty (try amqp://guest:guest@localhost:5672/)", ErrInvalidConfig)
	}
	if _, err := ParseURL(c.URL); err != nil {
		return fmt.Errorf("%w: URL: %w", ErrInvalidConfig, err)
	}
	switch {
	case c.Prefetch < 0:
		return fmt.Errorf("%w: Prefetch cannot be negative", ErrInvalidConfig)
	case c.Prefetch > math.MaxUint16:
		return fmt.Errorf("%w: Prefetch %d is more than %d, AMQP's largest prefetch count", ErrInvalidConfig, c.Prefetch, math.MaxUint16)
	case c.Consumers < 0:
		return fmt.Errorf("%w: Consumers cannot be negative", ErrInvalidConfig)
	case c.ChannelPoolSize < 0:
		return fmt.Errorf("%w: ChannelPoolSize cannot be negative", ErrInvalidConfig)
	case c.ConfirmTimeout < 0:
		return fmt.Errorf("%w: ConfirmTimeout cannot be negative", ErrInvalidConfig)
	case c.NackDelay < -1:
		return fmt.Errorf("%w: NackDelay cannot be negative (-1 requeues at once)", ErrInvalidConfig)
	case c.ConsumerTimeout < -1:
		return fmt.Errorf("%w: ConsumerTimeout cannot be negative (-1 when the broker has none)", ErrInvalidConfig)
	case c.MaxHandling < 0:
		return fmt.Errorf("%w: MaxHandling cannot be negative", ErrInvalidConfig)
	}
	return nil
}

// checkHold refuses a prefetch whose last delivery could wait past the
// broker's consumer timeout: RabbitMQ would then close the channel and
// requeue everything on it, again and again.
func (c Config) checkHold() error {
	if c.ConsumerTimeout == -1 {
		return nil
	}
	hold := time.Duration(math.MaxInt64)
	if h := float64(c.Prefetch) * (float64(c.MaxHandling) + float64(max(c.NackDelay, 0))); h < math.MaxInt64 {
		hold = time.Duration(h)
	}
	if hold <= c.ConsumerTimeout {
		return nil
	}
	return fmt.Errorf("%w: Prefetch (%d) × (MaxHandling %v + NackDelay %v) = %v is longer than ConsumerTimeout (%v): "+
		"a prefetched delivery could wait that long unacked, and RabbitMQ would close the channel and requeue "+
		"everything on it; lower Prefetch or MaxHandling, or raise the broker's consumer_timeout and ConsumerTimeout",
		ErrInvalidConfig, c.Prefetch, c.MaxHandling, max(c.NackDelay, 0), hold, c.ConsumerTimeout)
}

// ParseURL checks an AMQP 0-9-1 URL, amqp://user:pass@host:port/vhost (or
// amqps://), and returns a [Config] with URL set and every other field at its
// default. The port defaults to 5672 (5671 for amqps), user and password to
// guest, the vhost to "/" (write %2F in the path for "/" explicitly, or a
// name for another vhost). Errors match [ErrInvalidConfig] and never contain the
// password.
func ParseURL(s string) (Config, error) {
	shown := redact(s)
	u, err := url.Parse(s)
	if err != nil {
		return Config{}, fmt.Errorf("%w %q: not a URL", errInvalidURL, shown)
	}
	if u.Scheme != "amqp" && u.Scheme != "amqps" {
		if u.Scheme == "" {
			return Config{}, fmt.Errorf("%w %q: want amqp://user:pass@host:port/vhost", errInvalidURL, shown)
		}
		return Config{}, fmt.Errorf("%w %q: scheme %q is not amqp or amqps", errInvalidURL, shown, u.Scheme)
	}
	if u.Hostname() == "" {
		return Config{}, fmt.Errorf("%w %q: no host", errInvalidURL, shown)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return Config{}, fmt.Errorf("%w %q: query parameters and fragments are not supported", errInvalidURL, shown)
	}
	if strings.Count(strings.TrimPrefix(u.EscapedPath(), "/"), "/") > 0 {
		return Config{}, fmt.Errorf("%w %q: the path must be one vhost name (escape '/' as %%2F)", errInvalidURL, shown)
	}
	if _, err := amqp091.ParseURI(s); err != nil {
		return Config{}, fmt.Errorf("%w %q: %s", errInvalidURL, shown, strings.ReplaceAll(err.Error(), s, shown))
	}
	return Config{URL: s}, nil
}

// redact hides the password of a URL for error messages.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		if i := strings.LastIndex(s, "@"); i >= 0 {
			if j := strings.Index(s, "://"); j >= 0 && j < i {
				return s[:j+3] + "xxxxx" + s[i:]
			}
		}
		return s
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

package redisstream

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ThreeDotsLabs/watermill"
)

// ErrInvalidConfig is matched (with [errors.Is]) by every error
// [Config.Validate] and [NewSubscriber]'s start-up check return; the message
// names the field at fault.
var ErrInvalidConfig = errors.New("redisstream: invalid config")

// errInvalidURL is wrapped by every error [ParseURL] returns; it reads
// "redisstream: invalid URL" and matches [ErrInvalidConfig].
var errInvalidURL error = invalidURL{}

type invalidURL struct{}

func (invalidURL) Error() string        { return "redisstream: invalid URL" }
func (invalidURL) Is(target error) bool { return target == ErrInvalidConfig }

// The URL schemes [ParseURL] accepts.
const (
	// Scheme is a plain TCP connection: redis-stream://[user:pass@]host:6379/db.
	Scheme = "redis-stream"
	// SchemeTLS is a TLS connection: rediss-stream://[user:pass@]host:6379/db
	// (the extra s as in go-redis's rediss://).
	SchemeTLS = "rediss-stream"
)

// Defaults applied by [NewPublisher] and [NewSubscriber] to zero fields.
const (
	// DefaultConsumerGroup is the consumer group of every subscribed stream.
	DefaultConsumerGroup = "idempo"
	// DefaultLease is the idempo stack's default Lease.
	DefaultLease = 30 * time.Second
	// defaultConsumers is the number of consumers one Subscribe call starts.
	defaultConsumers = 1
	// defaultNackDelay is how long a nacked entry stays pending before it
	// is handed out again.
	defaultNackDelay = time.Second
	// defaultBlock bounds one XREADGROUP wait.
	defaultBlock = time.Second
)

// Config configures a Redis Streams publisher or subscriber with idempo's
// safe defaults: consumer groups, XACK only after success, pending entries
// of dead consumers claimed back (XAUTOCLAIM) only after an idle time longer
// than the lease, an idle clock the stack's lease keeper restarts while a
// handler runs, paced nacks, no trimming, and an unmarshaler that never
// fails. The zero value of every optional field means its default. See
// docs/backends.md for why each default is what it is.
//
// A Watermill topic is the key of a stream. Subscribers of one stream with
// the same ConsumerGroup compete for its entries; each group gets every
// entry.
type Config struct {
	// URL is the server address, redis-stream://[user:pass@]host:6379/db or
	// rediss-stream:// for TLS. Required. Use [ParseURL] to check one given
	// by a user.
	URL string

	// TLS, when non-nil, is used for rediss-stream:// connections. Defaults
	// to the system roots.
	TLS *tls.Config

	// ConsumerGroup is the consumer group Subscribe reads with; it is
	// created (at the start of the stream, so nothing published before the
	// first subscriber is missed) when it does not exist. Defaults to
	// "idempo".
	ConsumerGroup string

	// Consumer is this subscriber's consumer name in the group. Entries a
	// consumer read and did not acknowledge stay pending under its name
	// until another consumer claims them after ClaimIdle, or until a
	// subscriber with the same name starts: it reads its own pending entries
	// first. Give each process its own stable name to take its entries back
	// at once after a restart; never give two live subscribers the same
	// name. Defaults to a unique name (host-pid-random), so a restarted
	// process leaves its entries to the claimer.
	Consumer string

	// Lease is the idempo stack's Lease (middleware.Config.Lease). Defaults
	// to 30s, the stack's default. Used for the ClaimIdle check.
	Lease time.Duration

	// ClaimIdle is how long an entry must have been pending and untouched
	// before another consumer claims it (XAUTOCLAIM's min-idle-time). The
	// stack's lease keeper restarts the entry's idle time after every lease
	// extension (about every Lease/3), so only the entries of a dead or cut
	// off consumer reach it. It must be longer than Lease: by then the dead
	// consumer's lease has run out too, and the claimer's stack can take the
	// event. Defaults to 2 × Lease.
	ClaimIdle time.Duration

	// ClaimInterval is how often each Subscribe runs XAUTOCLAIM on its
	// stream. Defaults to ClaimIdle/4, at most 15s.
	ClaimInterval time.Duration

	// Consumers is how many consumer loops one Subscribe call starts (all
	// under the one consumer name), each handing out one entry at a time,
	// so a router handler processes up to that many messages at once.
	// Defaults to 1.
	Consumers int

	// NackDelay is how long a nacked entry stays pending (not acknowledged,
	// so it survives a crash) before it is handed out again, claimed with
	// XCLAIM so its delivery count grows. Defaults to 1s; the special value
	// -1 hands it out again at once. It must be shorter than ClaimIdle -
	// Lease.
	NackDelay time.Duration

	// Block bounds one XREADGROUP wait, and so how long Close waits for a
	// consumer loop to notice. Defaults to 1s.
	Block time.Duration

	// MaxLen, when positive, caps each stream published to at about that
	// many entries (XADD MAXLEN ~). Redis trims by length alone: entries not
	// yet acknowledged by every group are dropped too, which loses them.
	// Defaults to 0: no trimming; use [Subscriber.TrimAcknowledged] to trim
	// only entries every group has acknowledged.
	MaxLen int64
}

func (c Config) withDefaults() Config {
	c.ConsumerGroup = cmp.Or(c.ConsumerGroup, DefaultConsumerGroup)
	if c.Consumer == "" {
		host, _ := os.Hostname()
		c.Consumer = fmt.Sprintf("%s-%d-%s", cmp.Or(host, "host"), os.Getpid(), watermill.NewShortUUID())
	}
	c.Lease = cmp.Or(c.Lease, DefaultLease)
	c.ClaimIdle = cmp.Or(c.ClaimIdle, 2*c.Lease)
	c.ClaimInterval = cmp.Or(c.ClaimInterval, min(c.ClaimIdle/4, 15*time.Second))
	c.Consumers = cmp.Or(c.Consumers, defaultConsumers)
	c.NackDelay = cmp.Or(c.NackDelay, defaultNackDelay)
	c.Block = cmp.Or(c.Block, defaultBlock)
	return c
}

// Validate reports the first problem with c, naming the field. The error
// matches [ErrInvalidConfig].
func (c Config) Validate() error {
	if c.URL == "" {
		return fmt.Errorf("%w: URL is empty (try redis-stream://localhost:6379/0)", ErrInvalidConfig)
	}
	if _, err := ParseURL(c.URL); err != nil {
		return fmt.Errorf("%w: URL: %w", ErrInvalidConfig, err)
	}
	switch {
	case c.Lease < 0:
		return fmt.Errorf("%w: Lease cannot be negative", ErrInvalidConfig)
	case c.ClaimIdle < 0:
		return fmt.Errorf("%w: ClaimIdle cannot be negative", ErrInvalidConfig)
	case c.ClaimInterval < 0:
		return fmt.Errorf("%w: ClaimInterval cannot be negative", ErrInvalidConfig)
	case c.Consumers < 0:
		return fmt.Errorf("%w: Consumers cannot be negative", ErrInvalidConfig)
	case c.NackDelay < -1:
		return fmt.Errorf("%w: NackDelay cannot be negative (-1 hands a nacked entry out again at once)", ErrInvalidConfig)
	case c.Block < 0:
		return fmt.Errorf("%w: Block cannot be negative", ErrInvalidConfig)
	case c.MaxLen < 0:
		return fmt.Errorf("%w: MaxLen cannot be negative", ErrInvalidConfig)
	case strings.ContainsAny(c.Consumer, " \r\n"):
		return fmt.Errorf("%w: Consumer %q holds a space or line break", ErrInvalidConfig, c.Consumer)
	}
	return nil
}

// checkClock refuses a ClaimIdle that would let another consumer claim an
// entry whose handler still runs, or whose nack delay is still running:
// Redis's redelivery clock (an entry's idle time) must outlast idempo's
// lease, plus the nack delay during which nobody touches the entry.
func (c Config) checkClock() error {
	nack := max(c.NackDelay, 0)
	if c.ClaimIdle > c.Lease+nack {
		return nil
	}
	return fmt.Errorf("%w: ClaimIdle (%v) must be longer than Lease (%v) + NackDelay (%v) = %v: "+
		"an entry is touched about every Lease/3 while its handler runs and not at all while a nack waits, "+
		"so a shorter ClaimIdle lets another consumer claim it while the handler runs or before its lease ran out, "+
		"and the event is handled twice at once; raise ClaimIdle (default 2 × Lease) or lower NackDelay",
		ErrInvalidConfig, c.ClaimIdle, c.Lease, nack, c.Lease+nack)
}

// ParseURL checks a Redis Streams URL, redis-stream://[user:pass@]host:port/db
// (or rediss-stream:// for TLS), and returns a [Config] with URL set and every
// other field at its default. The port defaults to 6379, the database to 0.
// Errors match [ErrInvalidConfig] and never contain the password.
func ParseURL(s string) (Config, error) {
	if _, err := redisOptions(s); err != nil {
		return Config{}, err
	}
	return Config{URL: s}, nil
}

// redisOptions turns a redis-stream:// URL into go-redis options.
func redisOptions(s string) (*redis.Options, error) {
	shown := Redact(s)
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%w %q: not a URL", errInvalidURL, shown)
	}
	var inner string
	switch u.Scheme {
	case Scheme:
		inner = "redis"
	case SchemeTLS:
		inner = "rediss"
	case "":
		return nil, fmt.Errorf("%w %q: want redis-stream://[user:pass@]host:6379/db", errInvalidURL, shown)
	default:
		return nil, fmt.Errorf("%w %q: scheme %q is not %s or %s", errInvalidURL, shown, u.Scheme, Scheme, SchemeTLS)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("%w %q: no host", errInvalidURL, shown)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return nil, fmt.Errorf("%w %q: query parameters and fragments are not supported", errInvalidURL, shown)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%w %q: port %q is not 1-65535", errInvalidURL, shown, p)
		}
	}
	if db := strings.TrimPrefix(u.Path, "/"); db != "" {
		if n, err := strconv.Atoi(db); err != nil || n < 0 || strconv.Itoa(n) != db {
			return nil, fmt.Errorf("%w %q: the path must be a database number", errInvalidURL, shown)
		}
	}
	v := *u
	v.Scheme = inner
	opts, err := redis.ParseURL(v.String())
	if err != nil {
		msg := err.Error()
		if pw, ok := u.User.Password(); ok && pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
		}
		return nil, fmt.Errorf("%w %q: %s", errInvalidURL, shown, strings.ReplaceAll(msg, v.String(), shown))
	}
	return opts, nil
}

// Redact returns a redis-stream:// URL with its password replaced by
// "xxxxx", for logs and error messages.
func Redact(s string) string {
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

// client opens a go-redis client for c.
func (c Config) client() (*redis.Client, error) {
	opts, err := redisOptions(c.URL)
	if err != nil {
		return nil, err
	}
	if c.TLS != nil && opts.TLSConfig != nil {
		t := c.TLS.Clone()
		if t.ServerName == "" {
			t.ServerName = opts.TLSConfig.ServerName
		}
		opts.TLSConfig = t
	}
	// Block waits must not be cut by the read timeout.
	opts.ReadTimeout = max(opts.ReadTimeout, 3*time.Second)
	return redis.NewClient(opts), nil
}

// NewClient returns a go-redis client for cfg's URL and TLS settings, as
// the publisher and subscriber open it, for tools that read streams
// directly (dlq/redisstreamdlq). The caller closes it.
func NewClient(cfg Config) (*redis.Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg.client()
}

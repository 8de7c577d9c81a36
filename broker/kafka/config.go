package kafka

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/IBM/sarama"
)

// ErrInvalidConfig is matched (with [errors.Is]) by every error [Config.Validate]
// returns; the message names the field at fault.
var ErrInvalidConfig = errors.New("kafka: invalid config")

// errInvalidURL is wrapped by every error [ParseURL] returns; it reads
// "kafka: invalid URL" and matches [ErrInvalidConfig].
var errInvalidURL error = invalidURL{}

type invalidURL struct{}

func (invalidURL) Error() string        { return "kafka: invalid URL" }
func (invalidURL) Is(target error) bool { return target == ErrInvalidConfig }

// errMissingConsumerGroup is returned by [NewSubscriber] for a [Config]
// without a ConsumerGroup. Without a group no offset is ever committed, so
// every restart would re-read each partition from InitialOffset.
var errMissingConsumerGroup = fmt.Errorf("%w: ConsumerGroup is empty (name the group, e.g. after the handler)", ErrInvalidConfig)

// Defaults applied by [NewPublisher] and [NewSubscriber] to zero fields.
const (
	// defaultClientID is sent to the brokers to name the client in their logs.
	defaultClientID = "idempo"
	// defaultVersion is the Kafka protocol version spoken to the brokers.
	defaultVersion = "2.1.0"
	// defaultNackDelay is how long a nacked message waits before it is
	// handed to the handler again.
	defaultNackDelay = 500 * time.Millisecond
	// defaultAutoCommitInterval is how often marked offsets are committed.
	defaultAutoCommitInterval = time.Second
	// defaultRebalanceTimeout is how long a rebalance waits for members to
	// finish their in-flight messages.
	defaultRebalanceTimeout = 60 * time.Second
	// defaultMaxInFlight is how many messages of one partition KeyOrder and
	// Unordered hand out at once.
	defaultMaxInFlight = 64
	// maxMaxInFlight bounds MaxInFlight: a partition allocates its slots
	// up front, and far fewer already keep two cores busy.
	maxMaxInFlight = 1 << 16
	// defaultPort is used for a broker address without a port in [ParseURL].
	defaultPort = "9092"
)

// Config configures a Kafka publisher or subscriber with idempo's safe
// defaults: consumer groups, offsets marked only after ack, an idempotent
// producer waiting for all in-sync replicas, never-failing (un)marshalling.
// The zero value of every optional field means its default.
// See docs/backends.md for why each default is what it is.
type Config struct {
	// Brokers lists the bootstrap brokers as host:port. Required.
	Brokers []string

	// ConsumerGroup is the Kafka consumer group a subscriber joins. Required
	// by [NewSubscriber], ignored by [NewPublisher]. Subscribers of one group
	// share the topic's partitions; each group receives every message.
	ConsumerGroup string

	// ClientID names the client in the brokers' logs and quotas.
	// Defaults to "idempo".
	ClientID string

	// Version is the Kafka protocol version spoken to the brokers, as
	// "major.minor.patch". Defaults to "2.1.0": the oldest
	// version Kafka 4 still accepts and new enough for the idempotent
	// producer (0.11+), so it works with every broker Kafka still supports.
	// Newer versions (tested up to 3.6.0 against the embedded cluster) may be
	// set to match your brokers.
	Version string

	// StartFromNewest makes a consumer group that has no committed offset for
	// a partition start at the partition's end. Defaults to false: such a group
	// starts at the oldest retained message, so a group that joins after
	// messages were published does not miss them. Dedup retention must then
	// cover the topic's retention (see docs/semantics.md).
	StartFromNewest bool

	// NackDelay is how long the subscriber waits before handing a
	// nacked message to the handler again. The wait blocks the message's
	// partition (order is kept); with PartitionOrder it cannot be
	// interrupted, so Close may wait for it. With KeyOrder it blocks only
	// the message's key, and Close interrupts it. Defaults to 500ms (watermill-kafka's own
	// default, 100 ms, spins hot on a message that keeps failing).
	// The special value -1 resends at once (as for the stack's and the RabbitMQ preset's NackDelay).
	NackDelay time.Duration

	// AutoCommitInterval is how often offsets of acked messages are committed
	// in the background. Offsets are also committed when a subscriber closes
	// cleanly, so a clean shutdown repeats nothing; a crash repeats up to one
	// interval of acked messages, which dedup absorbs.
	// Defaults to 1s.
	AutoCommitInterval time.Duration

	// RebalanceTimeout is how long a rebalance waits for group members to
	// finish their in-flight messages; a handler still running past it loses
	// its partition and the message is redelivered elsewhere.
	// Defaults to 60s.
	RebalanceTimeout time.Duration

	// Ordering chooses how a subscriber hands out the messages of one
	// partition: [PartitionOrder] (one at a time), [KeyOrder] (concurrently,
	// one at a time per record key) or [Unordered]. Defaults to
	// PartitionOrder. Ignored by [NewPublisher].
	Ordering Ordering

	// MaxInFlight is how many messages of one partition a KeyOrder or
	// Unordered subscriber hands out before any is acked; while that many are
	// unsettled it reads no more of the partition, so memory stays bounded.
	// Defaults to 64; at most 65,536. Ignored with PartitionOrder (always 1).
	MaxInFlight int

	// TLS, when non-nil, connects to the brokers over TLS with this config.
	// Defaults to plaintext. Like SASL, it applies to every connection
	// idempo makes to the cluster (the DLQ tools too).
	TLS *tls.Config

	// SASL, when non-nil, authenticates every connection. Defaults to none.
	SASL *SASL

	// ConfigureSarama, when non-nil, is called last on the sarama config idempo
	// built, for what Config does not cover. It may undo the safe defaults;
	// sarama validates the result. The DLQ tools do not use sarama, so
	// credentials belong in SASL and TLS, not here. Defaults to nil.
	ConfigureSarama func(*sarama.Config)
}

// withDefaults returns c with every zero optional field set to its default.
func (c Config) withDefaults() Config {
	c.ClientID = cmp.Or(c.ClientID, defaultClientID)
	c.Version = cmp.Or(c.Version, defaultVersion)
	c.NackDelay = cmp.Or(c.NackDelay, defaultNackDelay)
	c.AutoCommitInterval = cmp.Or(c.AutoCommitInterval, defaultAutoCommitInterval)
	c.RebalanceTimeout = cmp.Or(c.RebalanceTimeout, defaultRebalanceTimeout)
	c.MaxInFlight = cmp.Or(c.MaxInFlight, defaultMaxInFlight)
	return c
}

// Validate reports the first problem with c, naming the field. The error
// matches [ErrInvalidConfig]. A ConsumerGroup is not required here (a
// publisher needs none); [NewSubscriber] checks it.
func (c Config) Validate() error {
	if len(c.Brokers) == 0 {
		return fmt.Errorf("%w: Brokers is empty (try kafka://localhost:9092, or the embedded package for development)", ErrInvalidConfig)
	}
	for _, b := range c.Brokers {
		if err := checkHostPort(b); err != nil {
			return fmt.Errorf("%w: Brokers: %w", ErrInvalidConfig, err)
		}
	}
	if c.Version != "" {
		if _, err := sarama.ParseKafkaVersion(c.Version); err != nil {
			return fmt.Errorf("%w: Version %q is not major.minor.patch: %w", ErrInvalidConfig, c.Version, err)
		}
	}
	if c.SASL != nil {
		if err := c.SASL.validate(); err != nil {
			return err
		}
	}
	if c.NackDelay < -1 {
		return fmt.Errorf("%w: NackDelay cannot be negative (-1 resends at once)", ErrInvalidConfig)
	}
	if c.AutoCommitInterval < 0 {
		return fmt.Errorf("%w: AutoCommitInterval cannot be negative", ErrInvalidConfig)
	}
	if c.RebalanceTimeout < 0 {
		return fmt.Errorf("%w: RebalanceTimeout cannot be negative", ErrInvalidConfig)
	}
	if err := c.Ordering.valid(); err != nil {
		return err
	}
	if c.MaxInFlight < 0 {
		return fmt.Errorf("%w: MaxInFlight cannot be negative", ErrInvalidConfig)
	}
	if c.MaxInFlight > maxMaxInFlight {
		return fmt.Errorf("%w: MaxInFlight %d is more than %d (each partition keeps a slot per message in flight)", ErrInvalidConfig, c.MaxInFlight, maxMaxInFlight)
	}
	return nil
}

func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", addr, err)
	}
	if host == "" {
		return fmt.Errorf("%q has no host", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port %q is not a number from 1 to 65535", addr, port)
	}
	return nil
}

// ParseURL parses a broker URL of the form
//
//	kafka://[user[:password]@]host[:port][,host[:port]...][?sasl=MECHANISM&tls=true]
//
// into a [Config] with Brokers (a host without a port gets 9092), SASL (from
// the user info; the mechanism from sasl=, PLAIN by default; user and
// password percent-decoded) and TLS (tls=true: the system's roots) set, and
// every other field at its default. Paths other than "/", other query
// parameters and fragments are rejected. Errors match [ErrInvalidConfig] and
// never contain the password.
func ParseURL(s string) (Config, error) {
	shown := redactURL(s)
	rest, ok := strings.CutPrefix(s, "kafka://")
	if !ok {
		scheme, _, found := strings.Cut(s, "://")
		if !found {
			return Config{}, fmt.Errorf("%w %q: want kafka://host:port[,host:port]", errInvalidURL, shown)
		}
		return Config{}, fmt.Errorf("%w %q: scheme %q is not kafka", errInvalidURL, shown, scheme)
	}
	if strings.Contains(rest, "#") {
		return Config{}, fmt.Errorf("%w %q: fragments are not supported", errInvalidURL, shown)
	}
	rest, query, _ := strings.Cut(rest, "?")
	var cfg Config
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		user, pass, _ := strings.Cut(rest[:at], ":")
		var err error
		if user, err = url.PathUnescape(user); err == nil {
			pass, err = url.PathUnescape(pass)
		}
		if err != nil || user == "" {
			return Config{}, fmt.Errorf("%w %q: user info is not user[:password] (percent-encode special characters)", errInvalidURL, shown)
		}
		cfg.SASL = &SASL{User: user, Password: pass}
		rest = rest[at+1:]
	}
	params, err := url.ParseQuery(query)
	if err != nil {
		return Config{}, fmt.Errorf("%w %q: query: %w", errInvalidURL, shown, err)
	}
	for k, v := range params {
		switch k {
		case "sasl":
			if cfg.SASL == nil {
				return Config{}, fmt.Errorf("%w %q: sasl= needs user info (kafka://user:password@host)", errInvalidURL, shown)
			}
			cfg.SASL.Mechanism = v[len(v)-1]
		case "tls":
			on, err := strconv.ParseBool(v[len(v)-1])
			if err != nil {
				return Config{}, fmt.Errorf("%w %q: tls=%q is not true or false", errInvalidURL, shown, v[len(v)-1])
			}
			if on {
				cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
			}
		default:
			return Config{}, fmt.Errorf("%w %q: query parameter %q is not supported (sasl, tls)", errInvalidURL, shown, k)
		}
	}
	if cfg.SASL != nil {
		if err := cfg.SASL.validate(); err != nil {
			return Config{}, fmt.Errorf("%w %q: %w", errInvalidURL, shown, err)
		}
	}
	rest = strings.TrimSuffix(rest, "/")
	if strings.Contains(rest, "/") {
		return Config{}, fmt.Errorf("%w %q: a path is not supported", errInvalidURL, shown)
	}
	if rest == "" {
		return Config{}, fmt.Errorf("%w %q: no broker address", errInvalidURL, shown)
	}
	for addr := range strings.SplitSeq(rest, ",") {
		if addr == "" {
			return Config{}, fmt.Errorf("%w %q: empty broker address", errInvalidURL, shown)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			// No port (or a bare IPv6 address): add the default one.
			addr = net.JoinHostPort(strings.Trim(addr, "[]"), defaultPort)
		}
		if err := checkHostPort(addr); err != nil {
			return Config{}, fmt.Errorf("%w %q: %w", errInvalidURL, shown, err)
		}
		cfg.Brokers = append(cfg.Brokers, addr)
	}
	return cfg, nil
}

// redactURL returns s with the password in its user info replaced.
func redactURL(s string) string {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return s
	}
	hosts, query, hasQuery := strings.Cut(rest, "?")
	at := strings.LastIndex(hosts, "@")
	if at < 0 {
		return s
	}
	user, _, hasPass := strings.Cut(hosts[:at], ":")
	if hasPass {
		user += ":xxxxx"
	}
	out := scheme + "://" + user + "@" + hosts[at+1:]
	if hasQuery {
		out += "?" + query
	}
	return out
}

// saramaConfig builds the sarama configuration for c (with defaults applied).
func (c Config) saramaConfig(forProducer bool) (*sarama.Config, error) {
	version, err := sarama.ParseKafkaVersion(c.Version)
	if err != nil {
		return nil, fmt.Errorf("%w: Version: %w", ErrInvalidConfig, err)
	}
	sc := sarama.NewConfig()
	sc.ClientID = c.ClientID
	sc.Version = version
	if c.TLS != nil {
		sc.Net.TLS.Enable = true
		sc.Net.TLS.Config = c.TLS
	}
	if c.SASL != nil {
		c.SASL.applySarama(sc)
	}
	sc.Metadata.AllowAutoTopicCreation = true

	if forProducer {
		// Wait for every in-sync replica and let the broker drop the
		// producer's own retried duplicates (idempotence needs one in-flight
		// request per connection).
		sc.Producer.RequiredAcks = sarama.WaitForAll
		sc.Producer.Idempotent = true
		sc.Net.MaxOpenRequests = 1
		sc.Producer.Retry.Max = 10
		sc.Producer.Return.Successes = true
		sc.Producer.Return.Errors = true
	} else {
		sc.Consumer.Return.Errors = true
		sc.Consumer.Offsets.Initial = sarama.OffsetOldest
		if c.StartFromNewest {
			sc.Consumer.Offsets.Initial = sarama.OffsetNewest
		}
		sc.Consumer.Offsets.AutoCommit.Enable = true
		sc.Consumer.Offsets.AutoCommit.Interval = c.AutoCommitInterval
		sc.Consumer.Group.Rebalance.Timeout = c.RebalanceTimeout
		// A JoinGroup waits up to the rebalance timeout for the other members
		// (one finishing a long handler): the read timeout must outlast it, or
		// the join is cut and retried over and over (the Java client's rule).
		if floor := c.RebalanceTimeout + 5*time.Second; sc.Net.ReadTimeout < floor {
			sc.Net.ReadTimeout = floor
		}
	}
	if c.ConfigureSarama != nil {
		c.ConfigureSarama(sc)
	}
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("%w: sarama rejects the resulting config: %w", ErrInvalidConfig, err)
	}
	return sc, nil
}

// Package backend turns the CLI's --broker and --store URLs into Watermill
// publishers and subscribers and dedup stores. Parsing is separate from
// opening so that malformed URLs fail fast with an error naming the problem.
package backend

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// ErrURL is matched by every error of [ParseBroker] and [ParseStore].
var ErrURL = errors.New("invalid URL")

// Kind names a broker or store kind.
type Kind string

// Broker kinds.
const (
	GoChannel   Kind = "gochannel"
	Kafka       Kind = "kafka"
	AMQP        Kind = "amqp"
	NATS        Kind = "nats"
	RedisStream Kind = "redis-stream"
)

// Store kinds.
const (
	Memory   Kind = "memory"
	Redis    Kind = "redis"
	Postgres Kind = "postgres"
	MySQL    Kind = "mysql"
	SQLite   Kind = "sqlite"
)

// Spec is a parsed URL.
type Spec struct {
	Kind Kind
	// Raw is the URL as given ("" for an embedded default).
	Raw string
	// URL is the parsed URL (nil for bare words such as "memory").
	URL *url.URL
	// Embedded is set when no server is named: the process runs its own
	// (the in-process Kafka cluster, the SQLite file).
	Embedded bool
}

// String returns the URL with every credential replaced by "xxxxx" (see [Redact]).
func (s Spec) String() string {
	if s.URL == nil {
		return string(s.Kind)
	}
	return Redact(s.Raw)
}

func urlError(flag, raw, problem string) error {
	return fmt.Errorf("%w: --%s %q: %s", ErrURL, flag, Redact(raw), problem)
}

// ParseBroker parses a --broker value: "gochannel" (in-process, the default),
// "kafka" (an embedded Kafka-protocol cluster), "kafka://host:port[,host:port]"
// "amqp://user:pass@host:port/vhost", "nats://[user:pass@|token@]host:4222"
// (tls:// too) or "redis-stream://[user:pass@]host:port/db" (rediss-stream://
// for TLS).
func ParseBroker(raw string) (Spec, error) {
	switch raw {
	case "", "gochannel", "gochannel://":
		return Spec{Kind: GoChannel, Embedded: true}, nil
	case "kafka", "kafka://":
		return Spec{Kind: Kafka, Embedded: true}, nil
	}
	u, err := parse("broker", raw)
	if err != nil {
		return Spec{}, err
	}
	switch u.Scheme {
	case "kafka":
		if u.Host == "" {
			return Spec{}, urlError("broker", raw, "no host:port (want kafka://host:port[,host:port])")
		}
		for _, hp := range strings.Split(u.Host, ",") {
			if err := hostPort(hp); err != nil {
				return Spec{}, urlError("broker", raw, err.Error())
			}
		}
		return Spec{Kind: Kafka, Raw: raw, URL: u}, nil
	case "amqp", "amqps":
		if u.Host == "" {
			return Spec{}, urlError("broker", raw, "no host (want amqp://user:pass@host:5672/)")
		}
		return Spec{Kind: AMQP, Raw: raw, URL: u}, nil
	case "nats", "tls":
		if u.Host == "" {
			return Spec{}, urlError("broker", raw, "no host (want nats://host:4222)")
		}
		return Spec{Kind: NATS, Raw: raw, URL: u}, nil
	case "redis-stream", "rediss-stream":
		if u.Host == "" {
			return Spec{}, urlError("broker", raw, "no host (want redis-stream://host:6379/0)")
		}
		return Spec{Kind: RedisStream, Raw: raw, URL: u}, nil
	default:
		return Spec{}, urlError("broker", raw, "unknown scheme "+strconvQuote(u.Scheme)+" (want gochannel, kafka, kafka://…, amqp://… or nats://…)")
	}
}

// ParseStore parses a --store value: "memory" (the default in this
// process), "redis://host:port/db", "postgres://…", "mysql://user:pass@host:port/db",
// "sqlite://PATH" or "sqlite" (a file in the cache directory).
func ParseStore(raw string) (Spec, error) {
	switch raw {
	case "", "memory", "memory://":
		return Spec{Kind: Memory, Embedded: true}, nil
	case "sqlite", "sqlite://":
		return Spec{Kind: SQLite, Embedded: true}, nil
	}
	u, err := parse("store", raw)
	if err != nil {
		return Spec{}, err
	}
	switch u.Scheme {
	case "redis", "rediss":
		if u.Host == "" {
			return Spec{}, urlError("store", raw, "no host (want redis://host:6379/0)")
		}
		return Spec{Kind: Redis, Raw: raw, URL: u}, nil
	case "postgres", "postgresql":
		if u.Host == "" {
			return Spec{}, urlError("store", raw, "no host (want postgres://user@host:5432/db)")
		}
		return Spec{Kind: Postgres, Raw: raw, URL: u}, nil
	case "mysql", "mariadb":
		if u.Host == "" {
			return Spec{}, urlError("store", raw, "no host (want mysql://user:pass@host:3306/db)")
		}
		if strings.Trim(u.Path, "/") == "" {
			return Spec{}, urlError("store", raw, "no database name (want mysql://user:pass@host:3306/db)")
		}
		return Spec{Kind: MySQL, Raw: raw, URL: u}, nil
	case "sqlite":
		if u.Host+u.Path == "" {
			return Spec{}, urlError("store", raw, "no file path (want sqlite:///path/to/file.db)")
		}
		return Spec{Kind: SQLite, Raw: raw, URL: u}, nil
	default:
		return Spec{}, urlError("store", raw, "unknown scheme "+strconvQuote(u.Scheme)+" (want memory, redis://, postgres://, mysql:// or sqlite://)")
	}
}

func parse(flag, raw string) (*url.URL, error) {
	if !strings.Contains(raw, "://") {
		return nil, urlError(flag, raw, "not a URL (want scheme://…)")
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, urlError(flag, raw, err.Error())
	}
	return u, nil
}

func hostPort(hp string) error {
	i := strings.LastIndex(hp, ":")
	if i <= 0 || i == len(hp)-1 {
		return fmt.Errorf("%q is not host:port", hp)
	}
	for _, c := range hp[i+1:] {
		if c < '0' || c > '9' {
			return fmt.Errorf("%q has a non-numeric port", hp)
		}
	}
	return nil
}

func strconvQuote(s string) string { return fmt.Sprintf("%q", s) }

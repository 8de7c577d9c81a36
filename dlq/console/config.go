package console

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/dlq/dlqops"
	"github.com/idempo/idempo/dlq/resolution"
)

// ErrInvalidConfig is matched by every error [New] returns for an invalid
// [Config].
var ErrInvalidConfig = errors.New("console: invalid config")

// Config configures the console ([New]).
type Config struct {
	// DLQs are the DLQ topics (Kafka) or stream queues (RabbitMQ) the
	// console shows, in that order. At least one is required.
	DLQs []string
	// Source reads the DLQs (dlq/kafkadlq, dlq/amqpdlq). Required.
	Source dlqops.Source
	// Resolutions is the resolution store every operator of these DLQs
	// uses (the same as `idempo dlq --store`). Required.
	Resolutions resolution.Store
	// Publisher republishes replays. Required unless ReadOnly.
	Publisher message.Publisher
	// Index keeps the entries' metadata and group keys. Defaults to
	// [NewMemoryIndex] (rebuilt at each start); [NewSQLIndex] on the
	// resolution store's database keeps it across restarts.
	Index Index
	// MaxReplays is dlqops.Config.MaxReplays. Defaults to
	// dlqops.DefaultMaxReplays.
	MaxReplays int
	// ReadOnly hides every action and refuses every state-changing
	// request (403).
	ReadOnly bool
	// HidePayloads shows an entry's payload only when the operator asks
	// for it (a button on the entry page). Payloads are never in the index
	// nor in lists either way.
	HidePayloads bool
	// Auth says who may use the console. Required: set BasicAuth or
	// BearerToken, or Unauthenticated with a loopback Addr.
	Auth Auth
	// Addr is the address the console listens on (host:port). Required
	// with Auth.Unauthenticated, which is refused unless its host is a
	// loopback address or "localhost".
	Addr string
	// Operator names who acts, in resolution records, when Auth does not:
	// with BasicAuth the user name is the operator. Defaults to
	// dlqops.Config.Operator's default ($USER@hostname).
	Operator string
	// PageSize is how many entries a list page shows. Defaults to 50;
	// at most 500.
	PageSize int
	// RefreshInterval is how often [Handler.Run] tails the DLQs into the
	// index. Defaults to 10s.
	RefreshInterval time.Duration
	// Logger receives what the console cannot show on a page (errors of
	// background refreshes). Defaults to slog.Default().
	Logger *slog.Logger
	// Now is the console's clock: durations in list filters count back from
	// it, and confirmations expire by it. Defaults to time.Now.
	Now func() time.Time
}

// Auth says how the console authenticates requests. Exactly one way must
// be chosen.
type Auth struct {
	// BasicAuth, when BasicUser is set, requires HTTP basic authentication
	// with this user and password; the user is the operator of actions.
	BasicUser, BasicPassword string
	// BearerToken, when set, requires "Authorization: Bearer TOKEN".
	// Browsers do not send one by themselves: this suits a proxy that
	// authenticates users and adds the header.
	BearerToken string
	// Unauthenticated opts out of authentication. It is refused unless
	// Config.Addr is a loopback address; requests whose Host header is not
	// a loopback name are then refused (against DNS rebinding).
	Unauthenticated bool
}

func (a Auth) chosen() int {
	n := 0
	for _, b := range []bool{a.BasicUser != "" || a.BasicPassword != "", a.BearerToken != "", a.Unauthenticated} {
		if b {
			n++
		}
	}
	return n
}

// Validate reports the first problem with c, naming the field; zero
// optional fields stand for their defaults. Errors match [ErrInvalidConfig].
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	switch {
	case len(c.DLQs) == 0:
		return bad("DLQs is required (the DLQ topics or queues to show)")
	case c.Source == nil:
		return bad("Source is required (dlq/kafkadlq or dlq/amqpdlq)")
	case c.Resolutions == nil:
		return bad("Resolutions is required (the store of operators' decisions)")
	case c.Publisher == nil && !c.ReadOnly:
		return bad("Publisher is required to replay (or set ReadOnly)")
	case c.MaxReplays < 0:
		return bad("MaxReplays cannot be negative, got %d", c.MaxReplays)
	case c.PageSize < 0 || c.PageSize > 500:
		return bad("PageSize must be between 1 and 500 (0: 50), got %d", c.PageSize)
	case c.RefreshInterval < 0:
		return bad("RefreshInterval cannot be negative, got %v", c.RefreshInterval)
	case len(c.Operator) > resolution.MaxLen:
		return bad("Operator is %d bytes, more than %d", len(c.Operator), resolution.MaxLen)
	}
	for i, d := range c.DLQs {
		if err := (resolution.Key{DLQ: d, EntryID: "x"}).Validate(); err != nil {
			return bad("DLQs[%d] %q: %w", i, d, err)
		}
		if slices.Contains(c.DLQs[:i], d) {
			return bad("DLQs[%d] %q is listed twice", i, d)
		}
	}
	a := c.Auth
	switch {
	case a.chosen() == 0:
		return bad("Auth is required: set Auth.BasicUser and Auth.BasicPassword, Auth.BearerToken, or Auth.Unauthenticated (loopback only)")
	case a.chosen() > 1:
		return bad("Auth: choose one of basic auth, a bearer token or Unauthenticated")
	case (a.BasicUser != "") != (a.BasicPassword != ""):
		return bad("Auth: basic auth needs both BasicUser and BasicPassword")
	case len(a.BasicUser) > resolution.MaxLen:
		return bad("Auth.BasicUser is %d bytes, more than %d", len(a.BasicUser), resolution.MaxLen)
	case strings.Contains(a.BasicUser, ":"):
		return bad("Auth.BasicUser cannot hold a colon")
	case a.Unauthenticated && !IsLoopback(c.Addr):
		return bad("Auth.Unauthenticated is allowed only on a loopback address (127.0.0.1:PORT, [::1]:PORT, localhost:PORT), and Addr is %q", c.Addr)
	}
	return nil
}

// IsLoopback reports whether the host of addr (host:port, or a bare host)
// is a loopback IP address or "localhost". An empty host (all interfaces)
// is not.
func IsLoopback(addr string) bool {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/idempo/idempo/internal/dlqmeta"
	"github.com/idempo/idempo/tracing"
)

// ErrPublish is matched by errors from [Publisher.Publish] when the DLQ publisher failed.
var ErrPublish = errors.New("dlq: publish to the dead-letter destination failed")

// Failure describes why a message is dead-lettered. It is stored with the
// dedup record when the DLQ publish fails (see [Failure.Encode]) so that the
// redelivery can dead-letter the message without running the handler again.
type Failure struct {
	Reason       string    `json:"reason"`
	Error        string    `json:"error,omitempty"`
	ErrorClass   string    `json:"error_class,omitempty"`
	Attempts     int       `json:"attempts,omitempty"`
	FirstFailure time.Time `json:"first_failure,omitzero"`
	LastFailure  time.Time `json:"last_failure,omitzero"`
	PanicStack   string    `json:"panic_stack,omitempty"`
}

// Encode returns the failure as JSON, truncating the error and stack so the
// result fits the dedup store's failure note limit.
func (f Failure) Encode() []byte {
	f.Error = dlqmeta.Truncate(f.Error, dlqmeta.MaxErrorLen)
	f.PanicStack = dlqmeta.Truncate(f.PanicStack, dlqmeta.MaxStackLen)
	b, _ := json.Marshal(f) // cannot fail: plain fields
	return b
}

// DecodeFailure parses a note written by [Failure.Encode]. Malformed input
// yields an error naming the problem; a note with no reason gets
// ReasonPermanent so a damaged note still dead-letters rather than loops.
func DecodeFailure(b []byte) (Failure, error) {
	var f Failure
	if err := json.Unmarshal(b, &f); err != nil {
		return Failure{Reason: ReasonPermanent}, fmt.Errorf("dlq: malformed failure note (%d bytes): %w", len(b), err)
	}
	if f.Reason == "" {
		f.Reason = ReasonPermanent
	}
	return f, nil
}

// Info is what [Publisher.Publish] records about a dead-lettered message.
type Info struct {
	OriginalTopic string
	Handler       string
	Scope         string
	EventID       string
	Deliveries    int
	Failure       Failure
}

// Config configures a [Publisher].
type Config struct {
	// Publisher publishes dead-letter copies. Required. It should confirm
	// durably before returning (the presets in broker/kafka and broker/amqp do), because
	// the original is acked once Publish returns nil.
	Publisher message.Publisher
	// Topic returns the dead-letter topic for a message from originalTopic
	// consumed by handler. Defaults to originalTopic + ".dlq" (or
	// "idempo.dlq" when the original topic is unknown).
	Topic func(originalTopic, handler string) string
	// OnDeadLettered, if set, is called after each successful DLQ publish
	// with the copy that was published. It runs on the handler's goroutine;
	// it must be quick and safe for concurrent use.
	OnDeadLettered func(ctx context.Context, copy *message.Message, info Info)
	// Now is the clock for timestamps. Defaults to time.Now.
	Now func() time.Time
}

// DefaultTopic is the default of [Config.Topic].
func DefaultTopic(originalTopic, _ string) string {
	if originalTopic == "" {
		return "idempo.dlq"
	}
	return originalTopic + ".dlq"
}

// Publisher publishes dead-letter copies: the one the middleware stack
// dead-letters through. It is safe for concurrent use.
type Publisher struct {
	cfg Config
}

// ErrInvalidConfig is matched by every error [New] returns for an invalid
// [Config].
var ErrInvalidConfig = errors.New("dlq: invalid config")

// Validate reports the first problem with c, naming the field; zero optional
// fields stand for their defaults. Errors match [ErrInvalidConfig].
func (c Config) Validate() error {
	if c.Publisher == nil {
		return fmt.Errorf("%w: Publisher is required (the publisher for dead-letter copies)", ErrInvalidConfig)
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.Topic == nil {
		c.Topic = DefaultTopic
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// New validates cfg, applies its defaults and returns a Publisher.
func New(cfg Config) (*Publisher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	return &Publisher{cfg: cfg}, nil
}

// copyEntryID is the entry-ID rule of [Publisher.Publish]: see docs/dlq.md.
func copyEntryID(msg *message.Message, info Info, replays int) string {
	if id := dlqmeta.EntryID(info.Scope, info.EventID, msg.UUID, replays); id != "" {
		return id
	}
	if id := dlqmeta.PositionEntryID(info.Scope, info.OriginalTopic, msg.Metadata.Get(dlqmeta.KeyPartition), msg.Metadata.Get(dlqmeta.KeyOffset), replays); id != "" {
		return id
	}
	return uuid.NewString()
}

// copy builds the dead-letter copy of msg: the same payload and metadata plus
// the failure metadata (the idempo_ headers docs/dlq.md lists). msg is not
// modified.
//
// The copy's entry ID (idempo_dlq_entry_id, also its UUID) is, in this
// order: derived from the event ID; else from the message UUID; else, for a
// message with neither, from its original position when its metadata
// carries one (the Kafka preset's subscriber sets it); else a random UUID.
// The first three are the same for every copy of one delivery, so a copy
// published twice (a lost publisher confirm) is one entry; a random one is
// not, and such a copy lists twice.
func (r *Publisher) copy(msg *message.Message, info Info) *message.Message {
	replays := dlqmeta.Replays(msg)
	entry := copyEntryID(msg, info, replays)
	c := message.NewMessage(entry, msg.Payload)
	for k, v := range msg.Metadata {
		c.Metadata[k] = v
	}
	// A replayed message's own marker must not let the copy's replay through twice.
	delete(c.Metadata, dlqmeta.KeyReplayID)
	f := info.Failure
	set := func(k, v string) {
		if v != "" {
			c.Metadata[k] = v
		} else {
			delete(c.Metadata, k)
		}
	}
	set(dlqmeta.KeyEntryID, entry)
	set(dlqmeta.KeyOriginalUUID, msg.UUID)
	set(dlqmeta.KeyOriginalTopic, info.OriginalTopic)
	set(dlqmeta.KeyHandler, info.Handler)
	set(dlqmeta.KeyScope, info.Scope)
	set(dlqmeta.KeyEventID, dlqmeta.ShortEventID(info.EventID))
	set(dlqmeta.KeyReason, f.Reason)
	set(dlqmeta.KeyError, dlqmeta.Truncate(f.Error, dlqmeta.MaxErrorLen))
	set(dlqmeta.KeyErrorClass, f.ErrorClass)
	set(dlqmeta.KeyAttempts, strconv.Itoa(f.Attempts))
	set(dlqmeta.KeyDeliveries, strconv.Itoa(info.Deliveries))
	set(dlqmeta.KeyFirstFailure, formatTime(f.FirstFailure))
	set(dlqmeta.KeyLastFailure, formatTime(f.LastFailure))
	set(dlqmeta.KeyDeadLetteredAt, formatTime(r.cfg.Now()))
	set(dlqmeta.KeyPanicStack, dlqmeta.Truncate(f.PanicStack, dlqmeta.MaxStackLen))
	set(dlqmeta.KeyReplays, strconv.Itoa(replays))
	return c
}

// Publish publishes the dead-letter copy of msg and returns only once the
// publisher has returned. The caller acks the original only when Publish
// returns nil; an error matches [ErrPublish].
func (r *Publisher) Publish(ctx context.Context, msg *message.Message, info Info) error {
	c := r.copy(msg, info)
	c.SetContext(ctx)
	tracing.Inject(ctx, c) // the copy links back to the failed delivery's trace
	topic := r.cfg.Topic(info.OriginalTopic, info.Handler)
	if err := r.cfg.Publisher.Publish(topic, c); err != nil {
		return fmt.Errorf("%w: topic %q, entry %s: %w", ErrPublish, topic, c.UUID, err)
	}
	if r.cfg.OnDeadLettered != nil {
		r.cfg.OnDeadLettered(ctx, c, info)
	}
	return nil
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

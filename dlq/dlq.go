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
	f.Error = truncate(f.Error, MaxErrorLen)
	f.PanicStack = truncate(f.PanicStack, MaxStackLen)
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
	// durably before returning (the presets in package broker do), because
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

// Router is the former name of [Publisher].
//
// Deprecated: use Publisher.
type Router = Publisher

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

var entryNamespace = uuid.MustParse("6f1c7a52-3f3e-4c1b-9a53-5b1d0f1e9e01")

// EntryID returns the DLQ entry ID of a dead letter with an event ID or a
// message UUID: a UUID derived from the scope, the event ID and the replay
// count, so a copy published twice keeps one ID, and each replay cycle gets a
// new one. With no event ID it is derived from the message UUID instead. With
// neither it returns "": such a copy's ID comes from [PositionEntryID] or is
// random (see [Publisher.Publish]).
func EntryID(scope, eventID, msgUUID string, replays int) string {
	id := eventID
	kind := "e"
	if id == "" {
		id, kind = msgUUID, "u"
	}
	if id == "" {
		return ""
	}
	return uuid.NewSHA1(entryNamespace, []byte(kind+"\x00"+scope+"\x00"+id+"\x00"+strconv.Itoa(replays))).String()
}

// PositionEntryID returns the DLQ entry ID of a dead letter with neither an
// event ID nor a message UUID whose position in the original topic is known
// (Kafka: topic, partition and offset): a UUID derived from the scope, that
// position and the replay count, so a copy published twice keeps one ID.
// It returns "" when topic is empty or partition or offset is not a
// non-negative integer.
func PositionEntryID(scope, topic, partition, offset string, replays int) string {
	p, perr := strconv.ParseInt(partition, 10, 32)
	o, oerr := strconv.ParseInt(offset, 10, 64)
	if topic == "" || perr != nil || oerr != nil || p < 0 || o < 0 {
		return ""
	}
	pos := topic + "\x00" + strconv.FormatInt(p, 10) + "\x00" + strconv.FormatInt(o, 10)
	return uuid.NewSHA1(entryNamespace, []byte("p\x00"+scope+"\x00"+pos+"\x00"+strconv.Itoa(replays))).String()
}

// copyEntryID is the entry-ID rule of [Publisher.Publish].
func copyEntryID(msg *message.Message, info Info, replays int) string {
	if id := EntryID(info.Scope, info.EventID, msg.UUID, replays); id != "" {
		return id
	}
	if id := PositionEntryID(info.Scope, info.OriginalTopic, msg.Metadata.Get(KeyPartition), msg.Metadata.Get(KeyOffset), replays); id != "" {
		return id
	}
	return uuid.NewString()
}

// Replays returns the replay count a message carries in [KeyReplays] (0 when
// absent or malformed).
func Replays(msg *message.Message) int {
	n, err := strconv.Atoi(msg.Metadata.Get(KeyReplays))
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// Copy builds the dead-letter copy of msg: the same payload and metadata plus
// the failure metadata of this package. msg is not modified.
//
// The copy's entry ID ([KeyEntryID], also its UUID) is, in this order:
// [EntryID] of the event ID; else [EntryID] of the message UUID; else, for a
// message with neither, [PositionEntryID] of its original position when its
// metadata carries one ([KeyPartition] and [KeyOffset], which the Kafka
// preset's subscriber sets); else a random UUID. The first three are the same
// for every copy of one delivery, so a copy published twice (a lost publisher
// confirm) is one entry; a random one is not, and such a copy lists twice.
func (r *Publisher) Copy(msg *message.Message, info Info) *message.Message {
	replays := Replays(msg)
	entry := copyEntryID(msg, info, replays)
	c := message.NewMessage(entry, msg.Payload)
	for k, v := range msg.Metadata {
		c.Metadata[k] = v
	}
	// A replayed message's own marker must not let the copy's replay through twice.
	delete(c.Metadata, KeyReplayID)
	f := info.Failure
	set := func(k, v string) {
		if v != "" {
			c.Metadata[k] = v
		} else {
			delete(c.Metadata, k)
		}
	}
	set(KeyEntryID, entry)
	set(KeyOriginalUUID, msg.UUID)
	set(KeyOriginalTopic, info.OriginalTopic)
	set(KeyHandler, info.Handler)
	set(KeyScope, info.Scope)
	set(KeyEventID, ShortEventID(info.EventID))
	set(KeyReason, f.Reason)
	set(KeyError, truncate(f.Error, MaxErrorLen))
	set(KeyErrorClass, f.ErrorClass)
	set(KeyAttempts, strconv.Itoa(f.Attempts))
	set(KeyDeliveries, strconv.Itoa(info.Deliveries))
	set(KeyFirstFailure, formatTime(f.FirstFailure))
	set(KeyLastFailure, formatTime(f.LastFailure))
	set(KeyDeadLetteredAt, formatTime(r.cfg.Now()))
	set(KeyPanicStack, truncate(f.PanicStack, MaxStackLen))
	set(KeyReplays, strconv.Itoa(replays))
	return c
}

// Publish publishes the dead-letter copy of msg and returns only once the
// publisher has returned. The caller acks the original only when Publish
// returns nil; an error matches [ErrPublish].
func (r *Publisher) Publish(ctx context.Context, msg *message.Message, info Info) error {
	c := r.Copy(msg, info)
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

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…(truncated)"
}

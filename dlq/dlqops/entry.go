package dlqops

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/idempo/idempo/internal/dlqmeta"
)

// Entry is one dead letter as read from a DLQ. Parsing never fails: a copy
// written by another tool, or with damaged idempo metadata, is still an
// entry, with its problems listed in Problems.
type Entry struct {
	// ID is the DLQ entry ID (the copy's idempo_dlq_entry_id, or the message
	// UUID for copies written by other tools, or "pos:" and the position for
	// copies with neither). When [Ops] reads a copy whose ID an earlier copy
	// of the same DLQ has, with another payload, the later copy is a
	// separate entry with an ID derived from both (and a note in Problems).
	ID string `json:"id"`
	// Topic is the DLQ topic or queue; Position where the entry sits in it
	// ("partition/offset" on Kafka, the stream offset on RabbitMQ).
	Topic    string `json:"dlq_topic"`
	Position string `json:"position"`

	OriginalTopic  string    `json:"original_topic,omitempty"`
	OriginalUUID   string    `json:"original_uuid,omitempty"`
	Handler        string    `json:"handler,omitempty"`
	Scope          string    `json:"scope,omitempty"`
	EventID        string    `json:"event_id,omitempty"`
	Reason         string    `json:"reason,omitempty"`
	Error          string    `json:"error,omitempty"`
	ErrorClass     string    `json:"error_class,omitempty"`
	Attempts       int       `json:"attempts,omitempty"`
	Deliveries     int       `json:"deliveries,omitempty"`
	Replays        int       `json:"replays"`
	FirstFailure   time.Time `json:"first_failure,omitzero"`
	LastFailure    time.Time `json:"last_failure,omitzero"`
	DeadLetteredAt time.Time `json:"dead_lettered_at,omitzero"`
	// PanicStack is the handler's stack when it panicked.
	PanicStack string `json:"-"`
	// Problems lists metadata that could not be parsed.
	Problems []string `json:"problems,omitempty"`
	// Resolution is "" while unresolved, else the outcome ("replayed",
	// "parked", "purged"), or [InProgress] while an operator holds the entry.
	Resolution string `json:"resolution,omitempty"`
	// ResolvedBy and ResolvedAt say who resolved the entry (or holds it)
	// and when (or since when), by the resolution store's clock.
	ResolvedBy string    `json:"resolved_by,omitempty"`
	ResolvedAt time.Time `json:"resolved_at,omitzero"`

	// Message is the copy as read: payload and all metadata.
	Message *message.Message `json:"-"`
}

// InProgress is [Entry.Resolution] of an entry an operator holds right now
// (or held when it crashed, until its lease runs out): not resolved.
const InProgress = "in_progress"

// ParseEntry reads a dead-letter copy's metadata: what a [Source] calls for
// each message it reads, with the DLQ topic and the message's position.
func ParseEntry(topic, position string, msg *message.Message) Entry {
	md := msg.Metadata
	e := Entry{
		ID: md.Get(dlqmeta.KeyEntryID), Topic: topic, Position: position, Message: msg,
		OriginalTopic: md.Get(dlqmeta.KeyOriginalTopic), OriginalUUID: md.Get(dlqmeta.KeyOriginalUUID),
		Handler: md.Get(dlqmeta.KeyHandler), Scope: md.Get(dlqmeta.KeyScope), EventID: md.Get(dlqmeta.KeyEventID),
		Reason: md.Get(dlqmeta.KeyReason), Error: md.Get(dlqmeta.KeyError), ErrorClass: md.Get(dlqmeta.KeyErrorClass),
		PanicStack: md.Get(dlqmeta.KeyPanicStack),
	}
	if e.ID == "" {
		e.ID = msg.UUID
		e.Problems = append(e.Problems, "no "+dlqmeta.KeyEntryID+" (not written by idempo?); using the message UUID")
	}
	if e.ID == "" {
		e.ID = "pos:" + topic + "/" + position
		e.Problems[len(e.Problems)-1] = "no " + dlqmeta.KeyEntryID + " nor message UUID (not written by idempo?); using its position"
	}
	atoi := func(k string, dst *int) {
		if v := md.Get(k); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				e.Problems = append(e.Problems, fmt.Sprintf("%s is not a count: %q", k, dlqmeta.Truncate(v, 40)))
				return
			}
			*dst = n
		}
	}
	atoi(dlqmeta.KeyAttempts, &e.Attempts)
	atoi(dlqmeta.KeyDeliveries, &e.Deliveries)
	atoi(dlqmeta.KeyReplays, &e.Replays)
	ts := func(k string, dst *time.Time) {
		if v := md.Get(k); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				e.Problems = append(e.Problems, fmt.Sprintf("%s is not an RFC 3339 time: %q", k, dlqmeta.Truncate(v, 40)))
				return
			}
			*dst = t
		}
	}
	ts(dlqmeta.KeyFirstFailure, &e.FirstFailure)
	ts(dlqmeta.KeyLastFailure, &e.LastFailure)
	ts(dlqmeta.KeyDeadLetteredAt, &e.DeadLetteredAt)
	return e
}

// Source reads a DLQ without consuming, losing or reordering anything.
//
// Positions are "OFFSET" or "PARTITION/OFFSET", OFFSET a decimal that grows
// along its partition: snapshots bound a DLQ by the last offset read in each
// partition. An entry whose position has another form is in a snapshot
// only under that exact position.
type Source interface {
	// Read calls fn for every entry of topic, oldest first within each
	// partition, up to the end as of the call. An error from fn stops the
	// read and is returned.
	Read(ctx context.Context, topic string, fn func(Entry) error) error
}

// Filter selects entries. Zero fields match everything.
type Filter struct {
	IDs           []string  `json:"ids,omitempty"`
	OriginalTopic string    `json:"original_topic,omitempty"`
	Handler       string    `json:"handler,omitempty"`
	ErrorClass    string    `json:"error_class,omitempty"`
	Reason        string    `json:"reason,omitempty"`
	Since         time.Time `json:"since,omitzero"`
	Until         time.Time `json:"until,omitzero"`
	// All includes resolved entries ([Ops.List] only: replay and purge act
	// on unresolved entries).
	All bool `json:"-"`
}

// Match reports whether e passes the filter (resolution aside).
func (f Filter) Match(e Entry) bool {
	if len(f.IDs) > 0 && !slices.Contains(f.IDs, e.ID) {
		return false
	}
	return f.matchFields(e)
}

// matcher returns f.Match, with the IDs in a set when there are many (a
// replay of a large selection reads every entry against every ID).
func (f Filter) matcher() func(Entry) bool {
	if len(f.IDs) <= 16 {
		return f.Match
	}
	ids := make(map[string]struct{}, len(f.IDs))
	for _, id := range f.IDs {
		ids[id] = struct{}{}
	}
	return func(e Entry) bool {
		if _, ok := ids[e.ID]; !ok {
			return false
		}
		return f.matchFields(e)
	}
}

// matchFields is Match without the IDs.
func (f Filter) matchFields(e Entry) bool {
	switch {
	case f.OriginalTopic != "" && f.OriginalTopic != e.OriginalTopic,
		f.Handler != "" && f.Handler != e.Handler,
		f.ErrorClass != "" && f.ErrorClass != e.ErrorClass,
		f.Reason != "" && f.Reason != e.Reason,
		!f.Since.IsZero() && e.DeadLetteredAt.Before(f.Since),
		!f.Until.IsZero() && !e.DeadLetteredAt.Before(f.Until):
		return false
	}
	return true
}

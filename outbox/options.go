package outbox

import (
	"errors"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/trace"

	"github.com/idempo/idempo/dedup/sqlstore"
)

// Defaults of [Options].
const (
	// DefaultTable is the default outbox table.
	DefaultTable = "idempo_outbox"
	// DefaultBuckets is the default number of key buckets.
	DefaultBuckets = 64
	// MaxBuckets is the largest number of key buckets.
	MaxBuckets = 4096
	// KeyMetadata is the metadata field the default [Options].Key reads: the
	// Kafka preset's partition key.
	KeyMetadata = "partition_key"
)

// ErrInvalidConfig is matched by every error [New] and [NewRelay] return for
// invalid [Options] or [RelayConfig]; the text names the field and value.
var ErrInvalidConfig = errors.New("outbox: invalid config")

// ErrInvalidMessage is matched by the error [Outbox.Write] returns for an
// empty topic, a nil message, a message without UUID, and for text no
// supported database stores unchanged (see [Outbox.Write]).
var ErrInvalidMessage = errors.New("outbox: invalid message")

// Options configures an [Outbox]. A nil *Options means all defaults.
type Options struct {
	// Table is the outbox table, optionally qualified by a schema
	// (PostgreSQL, SQLite) or database (MySQL). The relays' lease table is
	// Table+"_leases", dead rows go to Table+"_dead" and MySQL's per-key lock
	// rows to Table+"_keys". Validated by sqlstore.ValidateTable. Defaults
	// to [DefaultTable].
	Table string

	// Dialect is the database's SQL dialect. Defaults to the one detected
	// from the driver (as in package sqlstore).
	Dialect sqlstore.Dialect

	// Buckets is the number of key buckets relays lease, 1 to [MaxBuckets].
	// It is fixed per table: [Outbox.Migrate] records it (one lease row per
	// bucket) and New refuses a different value for a table migrated
	// already. Defaults to [DefaultBuckets].
	Buckets int

	// Key returns a message's ordering key: the rows of one key are
	// published in commit order, by one relay at a time. It must be safe
	// for concurrent use. Defaults to Metadata[KeyMetadata] when set, else
	// the message UUID (no ordering between messages).
	Key func(topic string, msg *message.Message) string

	// TracerProvider traces writes: Write opens a producer span
	// ("<topic> outbox write") in the caller's context and stores its W3C
	// traceparent with the row; the relay's publish span continues it.
	// Relays of this Outbox use it too. Defaults to otel.GetTracerProvider().
	TracerProvider trace.TracerProvider

	// Notify makes Write notify relays on PostgreSQL (pg_notify in the
	// writing statement, delivered at commit) so that relays with
	// [RelayConfig].Notify wake at once instead of at their next poll. A
	// notifying commit takes a cluster-wide lock (see docs/benchmarks.md
	// for its cost). Ignored on MySQL and SQLite. Defaults to false.
	Notify bool
}

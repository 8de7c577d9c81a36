package outbox

import (
	"context"
	"time"
)

// TopicStatus is the state of one topic's rows.
type TopicStatus struct {
	Topic string
	// Pending counts the unsent rows (due or waiting for a retry).
	Pending int64
	// Dead counts the rows in the dead table.
	Dead int64
	// OldestPending is the age of the oldest unsent row by the database
	// clock; 0 when none.
	OldestPending time.Duration
}

// Status returns per topic the pending and dead counts and the age of the
// oldest unsent row, sorted by topic.
func (o *Outbox) Status(ctx context.Context) ([]TopicStatus, error) {
	return nil, errNotImplemented
}

// DeadRow is a row a relay moved aside: it could not publish it.
type DeadRow struct {
	ID       int64 // the row's id in the outbox table, kept in the dead table
	Topic    string
	Key      string
	UUID     string
	Reason   string // the last publish error's text
	Attempts int
	DeadAt   time.Time // by the database clock
	Payload  []byte
	Metadata map[string]string
}

// Dead returns up to limit dead rows of topic ("" for every topic), oldest
// first. limit <= 0 means 100.
func (o *Outbox) Dead(ctx context.Context, topic string, limit int) ([]DeadRow, error) {
	return nil, errNotImplemented
}

// Requeue moves dead rows back into the outbox, in one transaction: the rows
// with the given ids, or with no ids every dead row of topic (topic "" with
// no ids is refused). Each gets a new id, after the current rows of its key,
// and zero attempts. It returns how many rows were moved.
func (o *Outbox) Requeue(ctx context.Context, topic string, ids ...int64) (int, error) {
	return 0, errNotImplemented
}

package resolution

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// MaxLen is the longest DLQ name or entry ID a [Key] may hold, in bytes.
const MaxLen = 255

// Key names one entry: the DLQ (topic or queue) it is in and its entry ID.
// The same entry ID in two DLQs names two entries.
type Key struct {
	DLQ     string
	EntryID string
}

// ErrInvalid is matched by the errors a [Store] returns for input it cannot
// take: an invalid [Key], a non-positive lease, an unknown [Outcome], an
// empty token.
var ErrInvalid = errors.New("resolution: invalid input")

// Validate reports why k cannot be stored: an empty or over-[MaxLen] DLQ or
// entry ID, or one that is not UTF-8 or holds a NUL. Errors match [ErrInvalid].
func (k Key) Validate() error {
	for _, f := range []struct{ name, v string }{{"DLQ", k.DLQ}, {"entry ID", k.EntryID}} {
		switch {
		case f.v == "":
			return fmt.Errorf("%w: empty %s", ErrInvalid, f.name)
		case len(f.v) > MaxLen:
			return fmt.Errorf("%w: %s is %d bytes, more than %d", ErrInvalid, f.name, len(f.v), MaxLen)
		case !utf8.ValidString(f.v):
			return fmt.Errorf("%w: %s is not UTF-8", ErrInvalid, f.name)
		}
		for i := 0; i < len(f.v); i++ {
			if f.v[i] == 0 {
				return fmt.Errorf("%w: %s holds a NUL byte", ErrInvalid, f.name)
			}
		}
	}
	return nil
}

// Outcome is how an entry was resolved.
type Outcome string

// Outcomes.
const (
	// Replayed: republished to its original topic (or the one asked for).
	Replayed Outcome = "replayed"
	// Parked: past the replay cap, republished to the parking topic.
	Parked Outcome = "parked"
	// Purged: marked done without a republish.
	Purged Outcome = "purged"
)

// Status is where an entry stands in a [Store].
type Status int

// Statuses. An entry a store has no record of (or whose hold ran out) is
// unresolved and has none.
const (
	// Acquired: [Store.Begin] gave the entry to the caller.
	Acquired Status = iota + 1
	// InProgress: another operator holds the entry and its lease runs.
	InProgress
	// Resolved: the entry was resolved; Record.Outcome says how.
	Resolved
)

// String returns "acquired", "in_progress" or "resolved".
func (s Status) String() string {
	switch s {
	case Acquired:
		return "acquired"
	case InProgress:
		return "in_progress"
	case Resolved:
		return "resolved"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Record is what a store knows of one entry.
type Record struct {
	// Status is InProgress or Resolved (Acquired only in [Begun.Record]).
	Status Status
	// Outcome is how the entry was resolved ("" while in progress).
	Outcome Outcome
	// By is who resolved the entry, or who holds it.
	By string
	// At is when the entry was resolved, or when the hold began, by the
	// store's clock.
	At time.Time
	// LeaseUntil is, while in progress, when the hold runs out by the
	// store's clock.
	LeaseUntil time.Time
}

// Begun is the answer of [Store.Begin].
type Begun struct {
	// Status is Acquired (the entry is the caller's until the lease runs
	// out), InProgress (another operator holds it) or Resolved.
	Status Status
	// Token fences the caller's [Store.Finish] and [Store.Abort]; set when
	// Acquired.
	Token string
	// Record is the entry's record: the caller's hold, the other
	// operator's, or the resolution.
	Record Record
}

// ErrLeaseLost is matched by the error [Store.Finish] returns when the
// token no longer holds the entry: its lease ran out and another operator
// took the entry over, or it was aborted. The other operator's work
// decides the entry.
var ErrLeaseLost = errors.New("resolution: the entry is no longer held by this token")

// Store keeps resolution records. Implementations are safe for concurrent
// use by many goroutines and processes sharing the backend; every method is
// atomic on its entry.
type Store interface {
	// Begin takes the entry k for the operator by for lease, unless another
	// operator holds it with a lease still running or it is resolved. A
	// hold whose lease ran out is taken over (its token is then fenced off).
	Begin(ctx context.Context, k Key, by string, lease time.Duration) (Begun, error)
	// Finish records the outcome of the entry held with token, by the
	// holder, at the store's time, and returns the record. Finishing again
	// with the same token and outcome returns the record unchanged. An error
	// matches ErrLeaseLost when token does not hold the entry.
	Finish(ctx context.Context, k Key, token string, outcome Outcome) (Record, error)
	// Abort gives the entry held with token back, unresolved; a token that
	// does not hold it changes nothing.
	Abort(ctx context.Context, k Key, token string) error
	// Resolutions returns every record of the DLQ dlq by entry ID, in one
	// round trip, without writing anything: resolved entries, and entries
	// held with a lease still running (InProgress). Entries without a
	// record, or whose hold ran out, are absent: unresolved.
	Resolutions(ctx context.Context, dlq string) (map[string]Record, error)
}

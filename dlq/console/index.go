package console

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"time"
)

// Index keeps what the console shows of each DLQ: every entry's metadata
// and group key, never its payload, and where the DLQ was last read. The
// console tails each DLQ into it ([Handler.Refresh]) and answers its pages
// from it; a payload is read from the DLQ when an entry page asks for it.
//
// Build one with [NewMemoryIndex] or [NewSQLIndex]. Implementations are
// safe for concurrent use. Its methods are unexported: the console is the
// only user of the index's contents.
type Index interface {
	// state returns what the index holds of dlq: the last offset indexed
	// in each partition, the payload digest of every entry ID, and the
	// highest sequence number given.
	state(ctx context.Context, dlq string) (indexState, error)
	// add stores rows (entries of dlq new to the index) and the new ends,
	// at once.
	add(ctx context.Context, dlq string, rows []row, ends map[string]int64) error
	// marks returns the resolution marks of dlq's entries that have one.
	marks(ctx context.Context, dlq string) (map[string]mark, error)
	// setMarks sets (or, for a zero mark, clears) the marks of the given
	// entries.
	setMarks(ctx context.Context, dlq string, changes map[string]mark) error
	// groups returns the groups of unresolved entries of dlq, largest
	// first, each with how many of its entries failed at or after each of
	// the times in since (group.Recent).
	groups(ctx context.Context, dlq string, since []time.Time) ([]group, error)
	// hourly returns how many entries of dlq (resolved or not) were
	// dead-lettered in each UTC hour at or after from (a whole hour), by
	// the hour's number (Unix seconds / 3600); hours without any are
	// absent.
	hourly(ctx context.Context, dlq string, from time.Time) (map[int64]int, error)
	// list returns a page of the entries q selects, newest first, and how
	// many it selects in all.
	list(ctx context.Context, q query) ([]row, int, error)
	// get returns the entry id of dlq; ok is false if the index has none.
	get(ctx context.Context, dlq, id string) (r row, ok bool, err error)
	// saveJob keeps the state of a job (its JSON), replacing the last.
	saveJob(ctx context.Context, id string, state []byte) error
	// jobs returns the state of every job kept.
	jobs(ctx context.Context) ([][]byte, error)
}

type indexState struct {
	ends    map[string]int64
	digests map[string]int64
	seq     int64
}

// mark is the resolution of an entry as the index keeps it: the outcome
// (or "in_progress") and who.
type mark struct{ Resolution, By string }

// row is what the index keeps of one entry.
type row struct {
	DLQ, ID, Position                          string
	EventID, OriginalTopic, Handler, Scope     string
	Reason, ErrorClass, Error, GroupKey, Group string
	Problems                                   string
	At                                         time.Time
	Digest, Seq                                int64
	mark
}

// Unresolved reports whether the row counts as unresolved (an entry held
// by an operator right now is not resolved yet).
func (r row) Unresolved() bool { return r.Resolution == "" || r.Resolution == inProgress }

const inProgress = "in_progress"

// group is one group of unresolved entries of a DLQ.
type group struct {
	DLQ, ID                          string
	Reason, ErrorClass, Handler, Key string
	Sample                           string
	Count                            int
	First, Last                      time.Time
	// Recent counts the entries that failed at or after each time asked for.
	Recent []int
}

// query selects entries of one DLQ.
type query struct {
	DLQ                         string
	Search                      string // an entry ID, an event ID, or text in the error
	Reason, ErrorClass, Handler string
	Group                       string
	Since, Until                time.Time
	All                         bool // resolved entries too
	Offset, Limit               int
}

// match reports whether r passes q (paging aside).
func (q query) match(r row) bool {
	switch {
	case r.DLQ != q.DLQ,
		!q.All && !r.Unresolved(),
		q.Reason != "" && r.Reason != q.Reason,
		q.ErrorClass != "" && r.ErrorClass != q.ErrorClass,
		q.Handler != "" && r.Handler != q.Handler,
		q.Group != "" && r.Group != q.Group,
		!q.Since.IsZero() && r.At.Before(q.Since),
		!q.Until.IsZero() && !r.At.Before(q.Until):
		return false
	}
	if q.Search == "" {
		return true
	}
	return r.ID == q.Search || r.EventID == q.Search || strings.Contains(strings.ToLower(r.Error), strings.ToLower(q.Search))
}

// groupID names a group in URLs: a digest of what defines it.
func groupID(reason, class, handler, key string) string {
	h := sha256.Sum256([]byte(reason + "\x00" + class + "\x00" + handler + "\x00" + key))
	return hex.EncodeToString(h[:8])
}

// payloadDigest is what dlqops compares to tell two copies sharing an
// entry ID apart: the first 8 bytes of the payload's SHA-256.
func payloadDigest(p []byte) int64 {
	s := sha256.Sum256(p)
	return int64(binary.BigEndian.Uint64(s[:8])) //nolint:gosec // a digest, stored as a signed column
}

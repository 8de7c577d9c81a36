package dedup

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"
)

// Token identifies the owner of a claim. The caller chooses it (see
// [NewToken]); every call that changes a claimed record is fenced by it.
type Token string

// NewToken returns a fresh random token of 32 hex characters. It is safe for
// concurrent use.
func NewToken() Token {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never returns an error
	return Token(hex.EncodeToString(b[:]))
}

// Status is what a [Store.Claim] found and did.
type Status int

const (
	// StatusAcquired means the caller now holds the claim: the record was
	// absent, released, due for the DLQ, expired, or dead-lettered and the
	// request carried a new replay ID.
	StatusAcquired Status = iota + 1
	// StatusDone means the event was completed earlier; the record was not changed.
	StatusDone
	// StatusDeadLettered means the event was dead-lettered earlier and the
	// request carried no new replay ID; the record was not changed.
	StatusDeadLettered
	// StatusInProgress means another owner holds a live lease; the record was not changed.
	StatusInProgress
)

// String returns the status in lower case with underscores, e.g. "in_progress".
func (s Status) String() string {
	switch s {
	case StatusAcquired:
		return "acquired"
	case StatusDone:
		return "done"
	case StatusDeadLettered:
		return "dead_lettered"
	case StatusInProgress:
		return "in_progress"
	default:
		return fmt.Sprintf("status(%d)", int(s))
	}
}

// ClaimRequest is what [Store.Claim] is asked to do.
type ClaimRequest struct {
	// Token is the caller's owner token. Required.
	Token Token
	// Lease is how long the claim holds without an [Store.Extend], judged on
	// the store's clock. Required, > 0.
	Lease time.Duration
	// Retention is how long the record (with its delivery counter) is kept
	// after this claim if it is never completed. Required, >= Lease.
	Retention time.Duration
	// Fingerprint is an optional digest of the payload (see [Fingerprint]).
	// Every claim that acquires (reports StatusAcquired), a retried claim by
	// the holder's own token included, stores it if the record has none yet;
	// the store never overwrites a stored one, and claims that do not
	// acquire change nothing. It is returned in [ClaimResult.Fingerprint].
	Fingerprint []byte
	// ReplayID, when not empty, marks a replay from the dead-letter queue.
	// Empty for normal deliveries.
	//
	// The record keeps one replay ID: the one carried by the last claim
	// that acquired it with one. Every claim that acquires and carries a
	// replay ID stores it, whatever it acquired (an absent or expired
	// record, a released one, one due for the DLQ, an expired lease, a
	// dead-lettered record, or its own claim retried); an acquiring claim
	// without one keeps the stored ID. A dead-lettered record is claimed
	// anew (its delivery counter restarting at 1) only by a replay ID that
	// differs from the stored one. So each replay message is admitted once:
	// once it has been dead-lettered, its copies report StatusDeadLettered.
	ReplayID string
}

// Validate reports an error matching [ErrInvalidRequest] that names the
// first invalid field.
func (r ClaimRequest) Validate() error {
	switch {
	case r.Token == "":
		return requestError("Token", "is empty")
	case r.Lease <= 0:
		return requestError("Lease", fmt.Sprintf("must be > 0, got %v", r.Lease))
	case r.Retention < r.Lease:
		return requestError("Retention", fmt.Sprintf("must be >= Lease (%v), got %v", r.Lease, r.Retention))
	case len(r.Fingerprint) > MaxFingerprintLen:
		return requestError("Fingerprint", fmt.Sprintf("is %d bytes, more than %d", len(r.Fingerprint), MaxFingerprintLen))
	case len(r.ReplayID) > MaxReplayIDLen:
		return requestError("ReplayID", fmt.Sprintf("is %d bytes, more than %d", len(r.ReplayID), MaxReplayIDLen))
	}
	return nil
}

// MaxFingerprintLen is the longest fingerprint a store must keep (a SHA-512 digest).
const MaxFingerprintLen = 64

// MaxReplayIDLen is the longest replay ID a store must keep.
const MaxReplayIDLen = 128

// MaxFailureLen is the longest failure note [Store.MarkDueForDLQ] must keep.
const MaxFailureLen = 64 << 10

// ClaimResult is the outcome of a [Store.Claim].
type ClaimResult struct {
	// Status says whether the claim was acquired or why not.
	Status Status
	// Deliveries is the delivery counter after this claim: the number of
	// acquired claims of the key that still count (see [Store.Release]),
	// including this one when Status is StatusAcquired.
	Deliveries int
	// Fingerprint is the fingerprint stored with the record before this claim
	// (nil if the record was new or never had one). The caller compares it
	// with its own to detect an event ID reused for another payload.
	Fingerprint []byte
	// DueForDLQ is the failure note a previous owner left with
	// [Store.MarkDueForDLQ]; non-nil only when Status is StatusAcquired and the
	// record was due for the DLQ. The caller then dead-letters the message
	// without running the handler again.
	DueForDLQ []byte
	// LeaseRemaining is, when Status is StatusInProgress, how long the other
	// owner's lease still runs by the store's clock; 0 if the store cannot tell.
	LeaseRemaining time.Duration
}

// Store keeps dedup records. Implementations must be safe for concurrent use
// by many goroutines and processes: every method is one atomic step on the
// record of its key (a single command, script or short transaction).
//
// Durations are judged on the store's clock, never the caller's. Every method
// returns an error wrapping ctx.Err() when ctx is done before the store
// answered, [ErrInvalidKey] (the text naming the key and why) for a key that fails
// [Key.Validate], and [ErrLeaseLost] when a fenced call's token does not hold
// the record any more. Any other error means the store could not be reached or
// failed; the record may or may not have changed, and the caller must not
// assume either.
type Store interface {
	// Claim tries to acquire the key for req.Token with req.Lease.
	//
	// It acquires (and increments the delivery counter) when the record is
	// absent or expired, released, due for the DLQ, in progress with a lease
	// that has run out (taking it over), or dead-lettered with a new
	// req.ReplayID (restarting the counter at 1). A claim of a record already
	// in progress under req.Token (a retried call whose reply was lost)
	// renews the lease and reports StatusAcquired without counting again;
	// in all else it is an acquiring claim (it stores req.Fingerprint and
	// req.ReplayID as those fields say, and stretches the retention).
	// Otherwise it changes nothing and reports StatusDone, StatusDeadLettered
	// or StatusInProgress.
	Claim(ctx context.Context, key Key, req ClaimRequest) (ClaimResult, error)

	// Extend sets the lease of a claim held by token to lease from now.
	// It returns ErrLeaseLost when the record is not in progress under token
	// (expired and taken over, completed, released or gone). A claim whose
	// lease ran out but which nobody took over is extended.
	Extend(ctx context.Context, key Key, token Token, lease time.Duration) error

	// Complete marks the record done and keeps it for retention from now.
	// It is fenced like Extend, and idempotent: completing a record that token
	// already completed returns nil, so a caller may retry after an error.
	Complete(ctx context.Context, key Key, token Token, retention time.Duration) error

	// Release gives a claim back so the next delivery can acquire it at once.
	// With keepCount false the delivery that acquired the claim is uncounted
	// (a shutdown or rebalance is not the message's fault); with true it still
	// counts towards the delivery cap. The fingerprint stays. Fenced like
	// Extend; releasing a record token already released returns nil.
	Release(ctx context.Context, key Key, token Token, keepCount bool) error

	// MarkDueForDLQ releases the claim with a failure note (at most
	// [MaxFailureLen] bytes) meaning "dead-letter this without running the
	// handler again": the next Claim acquires and returns the note in
	// ClaimResult.DueForDLQ. Fenced like Extend.
	MarkDueForDLQ(ctx context.Context, key Key, token Token, failure []byte) error

	// MarkDeadLettered marks the record dead-lettered (a terminal state: later
	// claims report StatusDeadLettered unless they carry a new replay ID) and
	// keeps it for retention from now. Fenced like Extend and idempotent like
	// Complete.
	MarkDeadLettered(ctx context.Context, key Key, token Token, retention time.Duration) error
}

// TxCompleter is implemented by stores that can record completion inside a
// business transaction (the transactional inbox of the SQL store).
//
// CompleteInTx begins a transaction, calls fn with a context that carries it
// (the store documents how a handler gets it back), marks the record done
// fenced by token inside the same transaction and commits. If fn fails, the
// transaction is rolled back and fn's error is returned unchanged. If the token
// no longer holds the record, everything is rolled back and an error wrapping
// [ErrLeaseLost] is returned. Safe for concurrent use.
type TxCompleter interface {
	Store
	CompleteInTx(ctx context.Context, key Key, token Token, retention time.Duration, fn func(ctx context.Context) error) error
}

package dedup

import (
	"errors"
	"fmt"
)

var (
	// ErrLeaseLost is returned by fenced store calls when the token no longer
	// holds the record: the lease ran out and another owner took it over, or
	// the record was completed, released, dead-lettered or has expired.
	ErrLeaseLost = errors.New("dedup: lease lost (the claim is held by another owner or no longer exists)")

	// ErrInvalidKey is matched (with errors.Is) by every [*KeyError].
	ErrInvalidKey = errors.New("dedup: invalid key")

	// ErrInvalidRequest is matched (with errors.Is) by every [*RequestError].
	ErrInvalidRequest = errors.New("dedup: invalid request")

	// ErrMissingEventID is returned by extractors when a message carries no
	// event ID where the extractor looks for one.
	ErrMissingEventID = errors.New("dedup: message has no event ID")

	// ErrStoreFull is returned by bounded stores (such as memstore) that
	// cannot take a new record without evicting a live one.
	ErrStoreFull = errors.New("dedup: store is full (no expired record to evict)")
)

// KeyError reports a key that cannot be stored and why.
type KeyError struct {
	Key     Key
	Problem string
}

func (e *KeyError) Error() string {
	return fmt.Sprintf("dedup: invalid key %s: %s", e.Key, e.Problem)
}

// Is reports whether target is [ErrInvalidKey].
func (e *KeyError) Is(target error) bool { return target == ErrInvalidKey }

// RequestError reports an invalid [ClaimRequest] or call argument.
type RequestError struct {
	Field   string
	Problem string
}

func (e *RequestError) Error() string {
	return fmt.Sprintf("dedup: invalid request: %s %s", e.Field, e.Problem)
}

// Is reports whether target is [ErrInvalidRequest].
func (e *RequestError) Is(target error) bool { return target == ErrInvalidRequest }

// MissingIDError reports which place an extractor looked in for the event ID.
type MissingIDError struct {
	// Where names the places looked in, e.g. `metadata "ce_id"`.
	Where string
}

func (e *MissingIDError) Error() string {
	return "dedup: message has no event ID in " + e.Where
}

// Is reports whether target is [ErrMissingEventID].
func (e *MissingIDError) Is(target error) bool { return target == ErrMissingEventID }

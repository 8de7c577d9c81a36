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

	// ErrInvalidKey is matched (with errors.Is) by every error reporting a
	// key that cannot be stored; the error's text names the key and why.
	ErrInvalidKey = errors.New("dedup: invalid key")

	// ErrInvalidRequest is matched (with errors.Is) by every error reporting
	// an invalid [ClaimRequest] or call argument; the text names the field.
	// Stores implemented outside this module wrap it the same way:
	// fmt.Errorf("%w: Lease must be > 0", dedup.ErrInvalidRequest).
	ErrInvalidRequest = errors.New("dedup: invalid request")

	// ErrMissingEventID is returned by extractors when a message carries no
	// event ID where the extractor looks for one.
	ErrMissingEventID = errors.New("dedup: message has no event ID")
)

// keyError reports a key that cannot be stored and why.
type keyError struct {
	Key     Key
	Problem string
}

func (e *keyError) Error() string {
	return fmt.Sprintf("dedup: invalid key %s: %s", e.Key, e.Problem)
}

// Is reports whether target is ErrInvalidKey.
func (e *keyError) Is(target error) bool { return target == ErrInvalidKey }

// missingIDError reports which place an extractor looked in for the event ID.
type missingIDError struct {
	// Where names the places looked in, e.g. `metadata "ce_id"`.
	Where string
}

func (e *missingIDError) Error() string {
	return "dedup: message has no event ID in " + e.Where
}

// Is reports whether target is ErrMissingEventID.
func (e *missingIDError) Is(target error) bool { return target == ErrMissingEventID }

// requestError reports an invalid request field; it matches ErrInvalidRequest.
func requestError(field, problem string) error {
	return fmt.Errorf("%w: %s %s", ErrInvalidRequest, field, problem)
}
